"""The health facts of one SQLite database (``backend_of(database).HEALTH_FACTS``): its PRAGMAs,
file sizes, migration versions and a ``PASSIVE`` checkpoint probe, for the report
``async_store.health.probe`` assembles and judges.

The probe is a checkpoint run as a job on the writer: it never waits for a lock and never
blocks a reader, but this process's writes to the database wait while it copies the WAL's
frames back. It is the one way SQLite tells how far the WAL is behind now.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from pathlib import Path
from typing import Any

from ..database import Database
from ..errors import PoolTimeout
from ..health._report import DatabaseHealth
from ..statistics import PoolStatistics
from ._migration_record import schema_versions
from .database import SqliteDatabase, run_checkpoint

__all__ = ["WRITER_WAIT", "health_facts"]

WRITER_WAIT = 1.0
"""Seconds a health check waits for a busy writer before it reads its facts on a reader."""

_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


async def health_facts(database: Database, pool: PoolStatistics) -> DatabaseHealth:
    """``database`` read back, on the writer if it becomes free within ``WRITER_WAIT`` (a
    block holding it may not end soon); else on a reader, without the checkpoint probe.
    ``pool``: its statistics when the check began."""
    assert isinstance(database, SqliteDatabase)
    hold = pool.writer_hold
    facts: dict[str, Any] | None = None
    if hold is None or hold.kind != "transaction":
        wait = min(WRITER_WAIT, database.config.acquire_timeout)
        try:
            facts = await database.run_on_writer(_read_database, acquire_timeout=wait)
        except PoolTimeout:
            pass
    if facts is None:
        facts = await database.run_in_reader(
            functools.partial(_read_database, probe=False), "health facts"
        )
    return DatabaseHealth(
        name=database.name,
        path=str(database.path),
        size_bytes=_file_size(database.path),
        wal_bytes=_file_size(Path(f"{database.path}-wal")),
        last_checkpoint=database.last_checkpoint,
        pool=pool,
        errors=dict(database.metrics.errors),
        **facts,
    )


def _read_database(conn: sqlite3.Connection, *, probe: bool = True) -> dict[str, Any]:
    """Runs on the writer's thread, between batches (or, without the checkpoint ``probe``, on
    a reader while the writer is held)."""

    def pragma(name: str) -> Any:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    checkpoint = run_checkpoint(conn, mode="PASSIVE", wait=True, source="health") if probe else None
    return {
        "page_size": pragma("page_size"),
        "page_count": pragma("page_count"),
        "freelist_count": pragma("freelist_count"),
        "max_page_count": pragma("max_page_count"),
        "journal_mode": pragma("journal_mode"),
        "synchronous": _SYNCHRONOUS.get(pragma("synchronous"), "?"),
        "schema_version": pragma("user_version"),
        "schema_versions": schema_versions(conn),
        "checkpoint_probe": checkpoint,
    }


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
