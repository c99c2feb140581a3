"""Another application's SQLite file, told apart from an async_store database and refused
before anything is written to it.

A file is ours when it holds an async_store migration record, or when it is empty: no
``user_version`` and no tables or views but ``schema_migrations``. :func:`refuse_foreign_file`
looks before the pool opens a file, reading it only; the runner asks :func:`foreign_reason`
again on the writer's connection before its first migration.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import MigrationError
from ._connection import run_on_file
from ._migration_record import applied_rows

__all__ = ["foreign_reason", "refuse_foreign_file"]

_HEADER = b"SQLite format 3\x00"


async def refuse_foreign_file(path: Path, database: str) -> None:
    """Raise :class:`MigrationError` if ``path`` is another application's SQLite database
    (tables or a ``user_version``, but no migration record), reading it only. Run before the
    pool opens the file: switching a rollback-journal file to WAL rewrites its header, and a
    file that is not ours must be refused exactly as it was found. A file in WAL mode already
    is left to the migration check, which refuses it before writing anything."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError:
        return  # missing (created on open) or unreadable (the open reports it)
    if len(header) < 100 or not header.startswith(_HEADER) or header[18:20] != b"\x01\x01":
        return
    try:
        reason = await run_on_file(path, foreign_reason, readonly=True)
    except sqlite3.Error:
        return  # damaged: the pool's open reports it
    if reason is not None:
        raise MigrationError(f"{database}: {reason}; it belongs to another application")


def foreign_reason(conn: sqlite3.Connection) -> str | None:
    """Why the file is not an async_store database (None: it is one, or is empty)."""
    if conn.in_transaction:
        return _foreign_reason_in(conn)
    # One read transaction: read statement by statement, the record and user_version of a
    # first migration another process commits in between would look like another
    # application's file.
    conn.execute("BEGIN")
    try:
        return _foreign_reason_in(conn)
    finally:
        conn.execute("ROLLBACK")


def _foreign_reason_in(conn: sqlite3.Connection) -> str | None:
    if applied_rows(conn):
        return None
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    if user_version:
        return f"the file has user_version {user_version} but no async_store migration record"
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            " AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name"
        )
    ]
    if tables and tables != ["schema_migrations"]:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        return f"the file holds tables ({shown}) but no async_store migration record"
    return None
