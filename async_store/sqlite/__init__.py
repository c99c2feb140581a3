"""The SQLite backend: everything that imports ``sqlite3`` or ``aiosqlite``.

:class:`SqliteDatabase` implements the contract of ``async_store.database`` on one file: one
writer with group commit, a reader pool. ``Database(config)`` builds it for a configuration that
names this backend, importing this package then (:func:`async_store.database.backend_of`).
"""

from .database import SqliteDatabase

__all__ = ["SqliteDatabase"]

DATABASE = SqliteDatabase
"""The class ``Database(config)`` builds for this backend."""
