"""The ``schema_migrations`` record: the table the runner writes each applied version into, and
how a file's record is read back (by the runner, and to tell another application's file apart).
"""

from __future__ import annotations

import sqlite3

__all__ = ["CREATE_TABLE", "applied_rows"]

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


def applied_rows(conn: sqlite3.Connection) -> dict[tuple[str, int], tuple[str, str]]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return {}
    rows = conn.execute(
        "SELECT migration_set, version, checksum, applied_at FROM schema_migrations"
    ).fetchall()
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}
