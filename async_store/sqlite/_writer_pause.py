"""Pausing the writers of several databases together, for work that must see no write to any
of them in between (an online restore replaces app_meta and events as one).

Each writer is held by an exclusive job that parks the writer's thread and runs there the
functions it is handed, one at a time, until it is let go: a writer serves its jobs in order,
so while that job runs no write of its database does. The holds are queued on every writer at
once, and each is taken when its writer reaches it. A writer may never reach its hold while
another is held: a ``transaction()`` on events that writes to app_meta inside waits for the
held app_meta writer, and the events writer waits for that transaction. So when some writers
are held and the rest are not within a grace period, the held ones are let go, the rest are
awaited first, and the ones let go are asked for again, with twice the grace next time: what
would be a deadlock becomes a delay.

The holds run in a context of their own (:func:`~async_store._tasks.start_background`), not in
the caller's: a caller inside a ``transaction()`` block holds the writer the pause waits for,
and must be refused before it gets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from .._futures import fail, resolve
from .._shield import uncancellable
from .._tasks import start_background
from ..errors import PoolClosed
from ._errors import translate
from .database import SqliteDatabase as Database

__all__ = ["Paused", "pause_writers"]

T = TypeVar("T")

GRACE = 0.05
"""Seconds the first writers held wait for the others before they are let go; doubled each
round."""
GRACE_LIMIT = 5.0
"""The longest grace period, in seconds."""


@contextlib.asynccontextmanager
async def pause_writers(databases: Sequence[Database]) -> AsyncIterator[Paused]:
    """Hold the writer of every database in ``databases``; once all are held, yield a
    :class:`Paused` that runs functions on the held writers' threads. On exit every writer is
    let go (a function under way first runs to its end, even if the caller was cancelled);
    writes queued meanwhile then run, in order. Raises the error of a writer that is closed or
    failed (:class:`PoolClosed`, …) before any is held for good."""
    loop = asyncio.get_running_loop()
    holds = [_Hold(database, loop) for database in databases]
    retired: list[_Hold] = []
    grace = GRACE
    try:
        while True:
            await asyncio.wait([h.held for h in holds], return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait([h.held for h in holds], timeout=grace)
            for hold in holds:
                if hold.held.done():
                    hold.held.result()  # the writer is closed or failed: raise its error
            if all(hold.held.done() for hold in holds):
                break
            held = [hold for hold in holds if hold.held.done()]
            for hold in held:
                hold.let_go()
                retired.append(hold)
            waiting = [hold for hold in holds if not hold.held.done()]
            await asyncio.wait([h.held for h in waiting], return_when=asyncio.FIRST_COMPLETED)
            holds = [_Hold(hold.database, loop) if hold in held else hold for hold in holds]
            grace = min(grace * 2, GRACE_LIMIT)
        yield Paused(holds)
    finally:
        await uncancellable(_release(holds + retired))


class Paused:
    """The writers of :func:`pause_writers`, held."""

    def __init__(self, holds: Sequence[_Hold]) -> None:
        self._holds = {hold.database: hold for hold in holds}

    async def run(self, database: Database, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(sqlite3_connection)`` on the held writer of ``database``, after what was
        handed to it before, and return its result; ``fn`` manages its own transactions.
        ``sqlite3`` errors come back translated, as from ``Database.run_on_writer``. Cancelled,
        the caller stops waiting but ``fn`` still runs (the writer is let go after it)."""
        return await self._holds[database].run(fn)


async def _release(holds: list[_Hold]) -> None:
    """Let every writer go on; a hold still queued is withdrawn. Returns once every hold's job
    has ended (a function under way first runs to its end)."""
    for hold in holds:
        hold.let_go()
        if not hold.held.done():
            hold.task.cancel()
    await asyncio.wait([hold.task for hold in holds])
    for hold in holds:
        if not hold.task.cancelled():
            hold.task.exception()  # retrieved: pause_writers raised what mattered


_LET_GO = None


class _Hold:
    """One writer held by an exclusive job that parks its thread and runs what it is handed
    until it is let go."""

    def __init__(self, database: Database, loop: asyncio.AbstractEventLoop) -> None:
        self.database = database
        self._loop = loop
        self.held: asyncio.Future[None] = loop.create_future()
        """Resolved once the writer's thread is parked in the job; failed if the job failed
        before (the database is closed)."""
        self._orders: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._pending: set[asyncio.Future[Any]] = set()
        self._let_go = False
        self.task = start_background(
            database.run_on_writer(self._park), name=f"async_store.{database.name}.pause"
        )
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            self.held.cancel()
        elif error is not None:
            fail(self.held, error)
        else:
            resolve(self.held, None)
        # Only if the job ended abnormally (a BaseException on the thread): never a hang.
        for future in self._pending:
            fail(future, error or PoolClosed(f"{self.database.name}: the writer was let go"))

    def _park(self, conn: sqlite3.Connection) -> None:
        """Runs on the writer's thread."""
        self._loop.call_soon_threadsafe(resolve, self.held, None)
        while (order := self._orders.get()) is not _LET_GO:
            fn, future = order
            try:
                result = fn(conn)
            except Exception as exc:
                error = translate(exc, database=self.database.name)
                self._loop.call_soon_threadsafe(fail, future, error, exc)
            else:
                self._loop.call_soon_threadsafe(resolve, future, result)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._let_go or self.task.done():
            raise PoolClosed(f"{self.database.name}: the writer is no longer held")
        future: asyncio.Future[T] = self._loop.create_future()
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self._orders.put((fn, future))
        return await future

    def let_go(self) -> None:
        """Let the writer go on once what it was handed has run."""
        if not self._let_go:
            self._let_go = True
            self._orders.put(_LET_GO)
