"""aiosqlite, used directly: one shared connection with a lock, or one connection per task.

Writes use the sqlite3 module's default (deferred) transactions: the INSERT opens the
transaction, `commit()` ends it. Reads never take the lock: one aiosqlite connection serialises
its calls on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiosqlite

from benchmarks.clients.base import Client, DbSpec, connection_pragmas
from benchmarks.schema import INSERT, SELECT_BY_ID, SELECT_ONE

__all__ = ["connect_locked", "connect_per_task", "open_connection"]


async def open_connection(spec: DbSpec) -> aiosqlite.Connection:
    """An aiosqlite connection with the benchmark PRAGMAs set."""
    conn = await aiosqlite.connect(spec.path)
    try:
        for pragma in connection_pragmas(spec):
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn


class AiosqliteClient:
    def __init__(self, conn: aiosqlite.Connection, lock: asyncio.Lock | None) -> None:
        self._conn = conn
        self._lock = lock

    def _write_guard(self) -> AbstractAsyncContextManager[object]:
        return self._lock if self._lock is not None else contextlib.nullcontext()

    async def insert(self, payload: str) -> None:
        async with self._write_guard():
            try:
                await self._conn.execute(INSERT, (payload,))
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise

    async def insert_many(self, rows: Sequence[tuple[str]]) -> None:
        async with self._write_guard():
            try:
                await self._conn.executemany(INSERT, rows)
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise

    async def get(self, item_id: int) -> str | None:
        for row in await self._conn.execute_fetchall(SELECT_BY_ID, (item_id,)):
            return str(row[0])
        return None

    async def select_one(self) -> object:
        return await self._conn.execute_fetchall(SELECT_ONE)


@asynccontextmanager
async def connect_locked(spec: DbSpec) -> AsyncIterator[Client]:
    """One connection shared by every task; an asyncio.Lock around each write transaction."""
    conn = await open_connection(spec)
    try:
        yield AiosqliteClient(conn, asyncio.Lock())
    finally:
        await conn.close()


@asynccontextmanager
async def connect_per_task(spec: DbSpec) -> AsyncIterator[Client]:
    """A connection of its own, no lock: concurrent tasks contend for SQLite's write lock."""
    conn = await open_connection(spec)
    try:
        yield AiosqliteClient(conn, None)
    finally:
        await conn.close()
