"""raw sqlite3: synchronous calls on the event-loop thread, the speed-of-light baseline.

It blocks the loop, which a real application must never do; here nothing else runs, so it
shows what SQLite itself costs without any thread hop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from benchmarks.clients.base import Client, DbSpec, connection_pragmas
from benchmarks.schema import INSERT, SELECT_BY_ID, SELECT_ONE

__all__ = ["connect"]


class RawClient:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def insert(self, payload: str) -> None:
        with self._conn:  # commits, or rolls back on error
            self._conn.execute(INSERT, (payload,))

    async def insert_many(self, rows: Sequence[tuple[str]]) -> None:
        with self._conn:
            self._conn.executemany(INSERT, rows)

    async def get(self, item_id: int) -> str | None:
        row = self._conn.execute(SELECT_BY_ID, (item_id,)).fetchone()
        return None if row is None else str(row[0])

    async def select_one(self) -> object:
        return self._conn.execute(SELECT_ONE).fetchone()


@asynccontextmanager
async def connect(spec: DbSpec) -> AsyncIterator[Client]:
    conn = sqlite3.connect(spec.path)
    try:
        for pragma in connection_pragmas(spec):
            conn.execute(pragma)
        yield RawClient(conn)
    finally:
        conn.close()
