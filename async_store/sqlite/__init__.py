"""The SQLite backend: everything that imports ``sqlite3`` or ``aiosqlite``.

:class:`SqliteDatabase` implements the contract of ``async_store.database`` on one file: one
writer with group commit, a reader pool. ``Database(config)`` builds it for a configuration that
names this backend, importing this package then (:func:`async_store.database.backend_of`).

The pieces code above the contract asks this backend for (``backend_of(db).<piece>``), each
typed with the protocol its user declares:

- ``DATABASE``: the class ``Database(config)`` builds;
- :func:`event_recorder`: the event store's appends (``_event_recorder``);
- ``MIGRATIONS``: the migration runner's statements (``_migrations``);
- ``HEALTH_FACTS``: what a health report reads of a database (``_health``);
- ``BACKUPS``: making, verifying and restoring backups (``backup``);
- :func:`insert_rows`: many rows of one INSERT, for document ingest (``_bulk_insert``);
- :func:`insert_log_batch`, :func:`insert_log_rows_directly`: ``SqlLogSink``'s inserts
  (``_log_table``).

They are backend hooks, not re-exported by ``async_store``.
"""

from __future__ import annotations

from ..backups._backend import BackupBackend
from ..events._recorder import EventRecorder
from ..health._report import ReadFacts
from ..migrations._backend import MigrationBackend
from ._bulk_insert import insert_rows as insert_rows
from ._event_recorder import SqliteEventRecorder
from ._health import health_facts
from ._log_table import insert_log_batch as insert_log_batch
from ._log_table import insert_log_rows_directly as insert_log_rows_directly
from ._migrations import MIGRATIONS as _MIGRATIONS
from .backup import BACKUPS as _BACKUPS
from .database import SqliteDatabase

__all__ = ["SqliteDatabase"]

DATABASE = SqliteDatabase
"""The class ``Database(config)`` builds for this backend."""

MIGRATIONS: MigrationBackend = _MIGRATIONS
"""The migration runner's statements on SQLite."""

HEALTH_FACTS: ReadFacts = health_facts
"""What a health report reads of a SQLite database."""

BACKUPS: BackupBackend = _BACKUPS
"""Making, verifying and restoring backups of SQLite databases."""


def event_recorder(database: SqliteDatabase) -> EventRecorder:
    """The event store's recorder for ``database``: its appends as jobs of the writer."""
    return SqliteEventRecorder(database)
