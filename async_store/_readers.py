"""The reader pool: N ``query_only`` connections lent one caller at a time.

A connection goes back to the pool only once it is clean: after a cancelled or failed read it is
interrupted, its work on the thread is awaited and any read transaction rolled back, so no slot is
ever lost and no snapshot is left pinned.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from ._connection import Connection, rollback_if_open
from ._shield import finish
from .errors import PoolClosed, PoolTimeout, translate
from .statistics import Counters

__all__ = ["ReaderPool"]

T = TypeVar("T")


class ReaderPool:
    """Reader connections of one database."""

    def __init__(
        self,
        connections: list[Connection],
        *,
        name: str,
        acquire_timeout: float,
        counters: Counters,
    ) -> None:
        self._connections = connections
        self._free: asyncio.Queue[Connection] = asyncio.Queue()
        for connection in connections:
            self._free.put_nowait(connection)
        self._name = name
        self._acquire_timeout = acquire_timeout
        self._counters = counters
        self._resets: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def total(self) -> int:
        return len(self._connections)

    @property
    def idle(self) -> int:
        return self._free.qsize()

    async def acquire(self) -> Connection:
        """Borrow a reader, waiting up to ``acquire_timeout``; raises :class:`PoolTimeout`."""
        if self._closed:
            raise PoolClosed(f"{self._name}: the database is closed")
        try:
            return self._free.get_nowait()
        except asyncio.QueueEmpty:
            pass
        self._counters.acquire_waits += 1
        try:
            async with asyncio.timeout(self._acquire_timeout):
                connection = await self._free.get()
        except TimeoutError:
            self._counters.acquire_timeouts += 1
            raise PoolTimeout(
                f"{self._name}: no reader became free within {self._acquire_timeout} s "
                f"({self.total} readers, all busy)"
            ) from None
        if self._closed:
            self._free.put_nowait(connection)
            raise PoolClosed(f"{self._name}: the database is closed")
        return connection

    def release(self, connection: Connection) -> None:
        """Return a reader whose last call finished normally and left no transaction open."""
        self._free.put_nowait(connection)

    async def discard(self, connection: Connection, *, interrupt: bool) -> None:
        """Return a reader after a failed or cancelled use: interrupt what still runs on it,
        wait for its thread, roll back any read transaction, then put it back. Never cancelled
        half-way: the reset runs as its own task."""
        if interrupt:
            connection.interrupt()
        task = asyncio.get_running_loop().create_task(
            self._reset(connection), name=f"async_store.{self._name}.reader-reset"
        )
        self._resets.add(task)
        task.add_done_callback(self._resets.discard)
        await finish(task)

    async def _reset(self, connection: Connection) -> None:
        try:
            await connection.run(rollback_if_open)
        finally:
            self._free.put_nowait(connection)

    async def run(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        """Run ``fn`` on a borrowed reader (one hop) and return the reader."""
        connection = await self.acquire()
        try:
            result = await connection.run(fn)
        except asyncio.CancelledError:
            await self.discard(connection, interrupt=True)
            raise
        except Exception as exc:
            await self.discard(connection, interrupt=False)
            raise translate(exc, database=self._name, sql=sql, on_reader=True) from exc
        self.release(connection)
        return result

    async def close(self) -> None:
        """Wait for readers in use to come back, then close every reader."""
        self._closed = True
        for _ in range(self.total):
            await self._free.get()
        for connection in self._connections:
            await connection.close()
