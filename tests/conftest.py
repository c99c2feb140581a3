"""Shared fixtures: real database files in a temporary directory."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from async_store import Database, DatabaseConfig, SqliteDatabase


def on_sqlite(database: Database) -> SqliteDatabase:
    """``database`` as the SQLite database it is, for the SQLite-only calls (``run_*``,
    ``checkpoint()``) of tests about the SQLite backend."""
    assert isinstance(database, SqliteDatabase), database
    return database


def make_config(path: Path, **options: Any) -> DatabaseConfig:
    """A small, fast pool for tests: short timeouts so a bug fails quickly instead of hanging."""
    settings: dict[str, Any] = {"readers": 2, "acquire_timeout": 10.0, "busy_timeout": 2.0}
    settings.update(options)
    return DatabaseConfig(path=path, **settings)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def db_options() -> dict[str, Any]:
    """Extra DatabaseConfig fields for the ``db`` fixture; override with parametrize."""
    return {}


@pytest.fixture
async def db(db_path: Path, db_options: dict[str, Any]) -> AsyncIterator[Database]:
    """An open database with a table ``items(id INTEGER PRIMARY KEY, name TEXT UNIQUE,
    qty INTEGER CHECK (qty >= 0))``."""
    database = Database(make_config(db_path, **db_options))
    await database.open()
    await database.execute(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
        " qty INTEGER NOT NULL DEFAULT 0 CHECK (qty >= 0))"
    )
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def raw(db_path: Path) -> Iterator[sqlite3.Connection]:
    """An independent plain sqlite3 connection to the same file, to observe what is durable."""
    connection = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    try:
        yield connection
    finally:
        connection.close()
