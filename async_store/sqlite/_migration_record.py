"""The ``schema_migrations`` record on SQLite: the table the runner writes each applied version
into, and the one query that reads it back (for the runner, the foreign-file check, backups and
health). The rules that judge a record are the backend-neutral ``migrations._record``.
"""

from __future__ import annotations

import sqlite3

from ..migrations._record import Applied, StoreFacts, newest_versions

__all__ = ["CREATE_TABLE", "applied_rows", "read_facts", "schema_versions"]

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    migration_set TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 1),
    name          TEXT    NOT NULL,
    checksum      TEXT    NOT NULL,
    applied_at    TEXT    NOT NULL,
    duration_ms   REAL    NOT NULL,
    PRIMARY KEY (migration_set, version)
) WITHOUT ROWID
"""


def applied_rows(conn: sqlite3.Connection) -> dict[tuple[str, int], Applied]:
    """What the file's record holds ({} when it has no record)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return {}
    rows = conn.execute(
        "SELECT migration_set, version, checksum, applied_at FROM schema_migrations"
    ).fetchall()
    return {(row[0], row[1]): Applied(row[2], row[3]) for row in rows}


def schema_versions(conn: sqlite3.Connection) -> dict[str, int]:
    """Migration set → newest applied version."""
    return newest_versions(applied_rows(conn))


def read_facts(conn: sqlite3.Connection, *, tables: bool = False) -> StoreFacts:
    """The record and ``user_version`` (and with ``tables`` the tables and views) in one
    snapshot: a read transaction, unless ``conn`` is inside one already. Read statement by
    statement, the record and user_version of a first migration another process commits in
    between would look like another application's file."""
    if conn.in_transaction:
        return _read_facts(conn, tables)
    conn.execute("BEGIN")
    try:
        return _read_facts(conn, tables)
    finally:
        conn.execute("ROLLBACK")


def _read_facts(conn: sqlite3.Connection, tables: bool) -> StoreFacts:
    record = applied_rows(conn)
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    names: tuple[str, ...] = ()
    if tables:
        names = tuple(
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                " AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name"
            )
        )
    return StoreFacts(record, user_version, names)
