"""aiosqlitepool 1.0: a pool of aiosqlite connections, default size (5).

Each operation acquires a connection (the pool runs a `SELECT 1` health check on every acquire)
and releases it (the pool runs a `rollback()` on every release), as its README shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from benchmarks.clients.aio import open_connection
from benchmarks.clients.base import Client, DbSpec
from benchmarks.schema import INSERT, SELECT_BY_ID, SELECT_ONE

__all__ = ["connect"]


@asynccontextmanager
async def connect(spec: DbSpec) -> AsyncIterator[Client]:
    from aiosqlitepool import SQLiteConnectionPool

    async def factory() -> aiosqlite.Connection:
        return await open_connection(spec)

    pool = SQLiteConnectionPool(factory)
    try:
        yield PoolClient(pool)
    finally:
        await pool.close()


class PoolClient:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def insert(self, payload: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(INSERT, (payload,))
            await conn.commit()

    async def insert_many(self, rows: Sequence[tuple[str]]) -> None:
        async with self._pool.connection() as conn:
            await conn.executemany(INSERT, rows)
            await conn.commit()

    async def get(self, item_id: int) -> str | None:
        async with self._pool.connection() as conn:
            rows = await conn.execute_fetchall(SELECT_BY_ID, (item_id,))
        for row in rows:
            return str(row[0])
        return None

    async def select_one(self) -> object:
        async with self._pool.connection() as conn:
            return await conn.execute_fetchall(SELECT_ONE)
