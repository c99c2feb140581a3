"""Pausing the writers of several databases together, for work that must see no write to any
of them in between (an online restore replaces app_meta and events as one).

Each writer is held by an exclusive job that parks the writer's thread until told to go on: a
writer serves its jobs in order, so while that job runs no write of its database does. The
holds are queued on every writer at once, and each is taken when its writer reaches it. A
writer may never reach its hold while another is held: a ``transaction()`` on events that
writes to app_meta inside waits for the held app_meta writer, and the events writer waits for
that transaction. So when some writers are held and the rest are not within a grace period,
the held ones are let go, the rest are awaited first, and the ones let go are asked for again,
with twice the grace next time: what would be a deadlock becomes a delay.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence

from ._futures import fail, resolve
from ._shield import finish
from .database import Database

__all__ = ["run_paused"]

GRACE = 0.05
"""Seconds the first writers held wait for the others before they are let go; doubled each
round."""
GRACE_LIMIT = 5.0
"""The longest grace period, in seconds."""

Work = Callable[[sqlite3.Connection], object]
"""A function of the writer's ``sqlite3.Connection``, run on its thread while every writer is
held; it manages its own transactions."""


async def run_paused(
    works: Sequence[tuple[Database, Work]], *, before: Callable[[], None] | None = None
) -> None:
    """Hold the writer of every database in ``works``; once all are held call ``before()``,
    then run each work on its database's writer thread (side by side), and let every writer go
    on once every work has ended. Writes queued meanwhile wait and run afterwards, in order.
    Raises the first error a work raised (translated, as by ``Database.run_on_writer``); the
    other works still ran to their end. Cancelled while the works run, it lets the writers go
    once the works have ended."""
    loop = asyncio.get_running_loop()
    holds = [_Hold(database, work, loop) for database, work in works]
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
            holds = [
                _Hold(hold.database, hold.work, loop) if hold in held else hold for hold in holds
            ]
            grace = min(grace * 2, GRACE_LIMIT)
        if before is not None:
            before()
        for hold in holds:
            hold.go()
        await asyncio.wait([hold.worked for hold in holds])
        for hold in holds:
            hold.let_go()
        outcomes = await asyncio.gather(*(hold.task for hold in holds), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        await finish(_release(holds + retired))


async def _release(holds: list[_Hold]) -> None:
    """Let every writer go on; a hold still queued is withdrawn. Returns once every hold's job
    has ended (a work under way first runs to its end)."""
    for hold in holds:
        hold.let_go()
        if not hold.held.done():
            hold.task.cancel()
    await asyncio.wait([hold.task for hold in holds])
    for hold in holds:
        if not hold.task.cancelled():
            hold.task.exception()  # retrieved: run_paused raised what mattered


class _Hold:
    """One writer held by an exclusive job that parks its thread until told to run the work or
    to let go."""

    def __init__(self, database: Database, work: Work, loop: asyncio.AbstractEventLoop) -> None:
        self.database = database
        self.work = work
        self._loop = loop
        self.held: asyncio.Future[None] = loop.create_future()
        """Resolved once the writer's thread is parked in the job; failed if the job failed
        before (the database is closed)."""
        self.worked: asyncio.Future[None] = loop.create_future()
        """Resolved once the work has ended, whether it raised or not."""
        self._decided = threading.Event()
        self._run_work = False
        self._released = threading.Event()
        self.task = loop.create_task(
            database.run_on_writer(self._park), name=f"async_store.{database.name}.pause"
        )
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[object]) -> None:
        if task.cancelled():
            self.held.cancel()
            self.worked.cancel()
            return
        error = task.exception()
        if error is not None:
            fail(self.held, error)
            fail(self.worked, error)
        else:
            resolve(self.held, None)
            resolve(self.worked, None)

    def _park(self, conn: sqlite3.Connection) -> None:
        """Runs on the writer's thread."""
        self._loop.call_soon_threadsafe(resolve, self.held, None)
        self._decided.wait()
        if not self._run_work:
            return
        try:
            self.work(conn)
        finally:
            self._loop.call_soon_threadsafe(resolve, self.worked, None)
            self._released.wait()

    def go(self) -> None:
        """Run the work (the writer is held)."""
        self._run_work = True
        self._decided.set()

    def let_go(self) -> None:
        """Let the writer go on: at once if the work was not asked for, else once it ends."""
        self._decided.set()
        self._released.set()
