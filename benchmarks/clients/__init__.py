"""The contender libraries, each wrapped as a `Client` the generic workloads can drive.

Libraries other than sqlite3 and aiosqlite are imported only when their client connects, so a
missing or broken one is skipped instead of stopping the run.
"""

from __future__ import annotations

from benchmarks.clients import aio, aiosqlitepool_client, encode_databases, raw, sqlalchemy_async
from benchmarks.clients import store as async_store
from benchmarks.clients.base import Client, DbSpec, Library, Mode

__all__ = [
    "AIOSQLITE",
    "AIOSQLITEPOOL",
    "AIOSQLITE_PER_TASK",
    "ASYNC_STORE",
    "DATABASES",
    "RAW_SQLITE3",
    "READERS",
    "SQLALCHEMY",
    "WRITERS",
    "Client",
    "DbSpec",
    "Library",
    "Mode",
]

RAW_SQLITE3 = Library("raw sqlite3", ("sqlite3",), raw.connect, mode="sequential")
AIOSQLITE = Library("aiosqlite (1 conn + lock)", ("aiosqlite",), aio.connect_locked)
AIOSQLITE_PER_TASK = Library(
    "aiosqlite (conn per task)", ("aiosqlite",), aio.connect_per_task, mode="per-task"
)
DATABASES = Library("databases", ("databases",), encode_databases.connect)
SQLALCHEMY = Library("SQLAlchemy async", ("sqlalchemy", "greenlet"), sqlalchemy_async.connect)
AIOSQLITEPOOL = Library("aiosqlitepool", ("aiosqlitepool",), aiosqlitepool_client.connect)
ASYNC_STORE = Library("async_store", ("async_store",), async_store.connect)

READERS = (RAW_SQLITE3, AIOSQLITE, DATABASES, SQLALCHEMY, AIOSQLITEPOOL, ASYNC_STORE)
"""Every contender that can share one client between tasks."""
WRITERS = (
    RAW_SQLITE3,
    AIOSQLITE,
    AIOSQLITE_PER_TASK,
    DATABASES,
    SQLALCHEMY,
    AIOSQLITEPOOL,
    ASYNC_STORE,
)
"""READERS plus one aiosqlite connection per task, for the concurrent write scenarios."""
