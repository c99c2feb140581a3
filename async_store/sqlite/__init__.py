"""The SQLite backend: everything that imports ``sqlite3`` or ``aiosqlite``.

:class:`SqliteDatabase` implements the contract of ``async_store.database`` on one file: one
writer with group commit, a reader pool. ``Database(config)`` builds it for a configuration that
names this backend, importing this package then (:func:`async_store.database.backend_of`).
Code above the contract asks this package for the pieces written in SQLite's dialect:
:func:`event_recorder` (the event store's appends).
"""

from __future__ import annotations

from ..events._recorder import EventRecorder
from ._event_recorder import SqliteEventRecorder
from .database import SqliteDatabase

__all__ = ["SqliteDatabase"]

DATABASE = SqliteDatabase
"""The class ``Database(config)`` builds for this backend."""


def event_recorder(database: SqliteDatabase) -> EventRecorder:
    """The event store's recorder for ``database``: its appends as jobs of the writer. (A
    backend hook, like :data:`DATABASE`: not re-exported by ``async_store``.)"""
    return SqliteEventRecorder(database)
