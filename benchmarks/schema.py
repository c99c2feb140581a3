"""The benchmark table, its statements, and the template databases scenarios start from.

The table is named so that it cannot clash with the tables async_store's migrations create in
the same file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

__all__ = [
    "CREATE_TABLE",
    "INSERT",
    "INSERT_NAMED",
    "SELECT_BY_ID",
    "SELECT_BY_ID_NAMED",
    "SELECT_ONE",
    "create_database",
    "payload",
]

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_items(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"
)
INSERT = "INSERT INTO bench_items(payload) VALUES (?)"
SELECT_BY_ID = "SELECT payload FROM bench_items WHERE id = ?"
SELECT_ONE = "SELECT 1"

# encode/databases and SQLAlchemy take named parameters.
INSERT_NAMED = "INSERT INTO bench_items(payload) VALUES (:payload)"
SELECT_BY_ID_NAMED = "SELECT payload FROM bench_items WHERE id = :id"


def payload(n: int) -> str:
    """A deterministic 64-character payload for row `n`."""
    return f"item-{n:010d}-".ljust(64, "x")


def create_database(path: Path, rows: int = 0) -> None:
    """Create `path` in WAL mode with the benchmark table holding `rows` rows (ids 1..rows).

    The file is created and migrated by async_store in MVP mode first (the service refuses a
    file holding tables it has no migration record of), then the table is added; every contender
    uses the same file, and the empty tables of the migrations cost none of them anything. WAL
    mode is stored in the file, so every copy of it opens in WAL mode; the per-connection
    PRAGMAs (`synchronous`, `busy_timeout`) are each contender's job.
    """
    from async_store import SqlConfig, SqlService

    async def migrate() -> None:
        async with SqlService(SqlConfig.mvp(path)):
            pass

    asyncio.run(migrate())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{path}: journal_mode is {mode!r}, expected 'wal'")
        conn.execute(CREATE_TABLE)
        if rows:
            conn.execute("BEGIN")
            conn.executemany(INSERT, ((payload(n),) for n in range(1, rows + 1)))
            conn.execute("COMMIT")
    finally:
        conn.close()
