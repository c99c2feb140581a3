"""The SQLite side of ``SqlLogSink`` (``logsinks._sql``), which asks the backend for it through
``async_store.database.backend_of``: a batch of log records inserted into the ``logs`` table
once, on the writer's thread in one step (so it commits even if the event loop stops meanwhile),
or through a connection of its own when the database's pool is closed or its loop stopped.
Exposed by ``async_store.sqlite``.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Protocol

from ..database import Database
from ._connection import run_on_file
from ._errors import translate
from .database import SqliteDatabase

__all__ = ["LogBatch", "insert_log_batch", "insert_log_rows_directly"]

LogRow = tuple[str, str, str, str, str]
"""created_at, level, logger, message, extra (JSON text)."""

_INSERT = "INSERT INTO logs(created_at, level, logger, message, extra) VALUES (?, ?, ?, ?, ?)"


class LogBatch(Protocol):
    """Rows the sink inserts in one transaction, and the ids they got in the ``logs`` table the
    last time they were inserted (``None`` before)."""

    rows: list[LogRow]
    ids: tuple[int, int] | None


async def insert_log_batch(database: Database, batch: LogBatch) -> None:
    """Insert ``batch`` as one write on the database's writer (part of the current task's
    ``transaction()`` block, else a transaction of its own), unless an earlier insert of it
    committed; record the ids its rows got. The whole write is one step on the writer's thread:
    queued, it commits and records its ids even if the loop stops before it runs."""
    if not isinstance(database, SqliteDatabase):
        raise TypeError(f"{database!r} is not a database of the sqlite backend")
    await database.run_in_transaction(functools.partial(_insert_once, batch=batch), _INSERT)


async def insert_log_rows_directly(
    database: Database, in_flight: LogBatch | None, rows: list[LogRow]
) -> None:
    """Insert ``in_flight`` (once, as :func:`insert_log_batch` does) and then ``rows`` in one
    transaction, through a connection of our own to the database's file: for when its pool is
    closed or its event loop stopped. Only into an existing file: a database that is gone is
    not created anew for a few records. Raises :class:`FileNotFoundError` then, or the
    :class:`StoreError` the write failed with."""
    path = database.path
    if not path.exists():
        raise FileNotFoundError(f"{path} no longer exists")
    try:
        await run_on_file(
            path, functools.partial(_insert_rows, in_flight=in_flight, rows=rows), readonly=False
        )
    except sqlite3.Error as exc:
        raise translate(exc, database=f"{database.name} ({path})", sql=_INSERT) from exc


def _insert_once(conn: sqlite3.Connection, *, batch: LogBatch) -> None:
    """Insert ``batch`` unless an earlier insert of it committed; record the ids it got. Runs
    inside a write transaction, so no other insert of the batch can be under way."""
    if batch.ids is not None:
        first, last = batch.ids
        found = conn.execute(
            "SELECT created_at, level, logger, message, extra FROM logs"
            " WHERE id BETWEEN ? AND ? ORDER BY id",
            (first, last),
        ).fetchall()
        if [tuple(row) for row in found] == batch.rows:
            return
    conn.executemany(_INSERT, batch.rows)
    # One connection inserting into a rowid table: the batch's ids are consecutive.
    (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
    batch.ids = (last - len(batch.rows) + 1, last)


def _insert_rows(
    conn: sqlite3.Connection, *, in_flight: LogBatch | None, rows: list[LogRow]
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if in_flight is not None:
            _insert_once(conn, batch=in_flight)
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
