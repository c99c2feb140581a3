"""The SQLite backend gives every piece the backend-neutral code asks ``backend_of`` for, of the
type its user declares. The assignments below are checked by mypy (``make test`` runs it over
the tests), the attributes at run time: a piece renamed or reshaped on one side fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

import async_store.sqlite as sqlite_backend
import async_store.sqlite._bulk_insert as bulk_insert
import async_store.sqlite._log_table as log_table
from async_store import ConfigError, Database, SqlConfig, SqliteDatabase
from async_store.backups._backend import BackupBackend
from async_store.database import backend_of
from async_store.health._report import ReadFacts
from async_store.logsinks._sql import LogTable
from async_store.migrations._backend import MigrationBackend
from async_store.repositories._documents import BulkInsert

# Modules implement the protocols of the pieces asked of the backend's package itself (which
# re-exports them; mypy reads a package's names through its __all__, which keeps them out).
_bulk_insert: BulkInsert = bulk_insert
_log_table: LogTable = log_table
_migrations: MigrationBackend = sqlite_backend.MIGRATIONS
_health_facts: ReadFacts = sqlite_backend.HEALTH_FACTS
_backups: BackupBackend = sqlite_backend.BACKUPS


def test_a_configuration_names_its_backend_and_finds_its_package(tmp_path: Path) -> None:
    config = SqlConfig.mvp(tmp_path / "app.db").app
    assert config.backend == "sqlite"
    assert backend_of(config) is sqlite_backend
    assert sqlite_backend.DATABASE is SqliteDatabase
    database = Database(config)
    assert type(database) is SqliteDatabase
    assert backend_of(database) is sqlite_backend


def test_a_database_from_something_else_than_a_configuration_is_a_config_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"built from a DatabaseConfig.*not PosixPath"):
        Database(tmp_path / "app.db")  # type: ignore[arg-type]


def test_the_package_gives_the_pieces_checked_above() -> None:
    assert sqlite_backend.insert_rows is bulk_insert.insert_rows
    assert sqlite_backend.insert_log_batch is log_table.insert_log_batch
    assert sqlite_backend.insert_log_rows_directly is log_table.insert_log_rows_directly


def test_every_piece_is_there() -> None:
    for name in (
        "DATABASE",
        "MIGRATIONS",
        "HEALTH_FACTS",
        "BACKUPS",
        "event_recorder",
        "insert_rows",
        "insert_log_batch",
        "insert_log_rows_directly",
    ):
        assert hasattr(sqlite_backend, name), name
