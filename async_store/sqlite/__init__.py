"""The SQLite backend: everything that imports ``sqlite3`` or ``aiosqlite``.

:class:`SqliteDatabase` implements the contract of ``async_store.database`` on one file: one
writer with group commit, a reader pool. ``Database(config)`` builds it for a configuration that
names this backend, importing this package then (:func:`async_store.database.backend_of`).

Besides ``DATABASE``, the package holds the pieces code above the contract asks a backend for
through ``backend_of``: ``insert_rows`` (``_bulk_insert``, for document ingest) and
``insert_log_batch`` / ``insert_log_rows_directly`` (``_log_table``, for ``SqlLogSink``).
"""

from ._bulk_insert import insert_rows as insert_rows
from ._log_table import insert_log_batch as insert_log_batch
from ._log_table import insert_log_rows_directly as insert_log_rows_directly
from .database import SqliteDatabase

__all__ = ["SqliteDatabase"]

DATABASE = SqliteDatabase
"""The class ``Database(config)`` builds for this backend."""
