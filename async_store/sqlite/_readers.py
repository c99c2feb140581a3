"""The reader pool: N ``query_only`` connections, each on its own thread.

A one-statement read (``fetch_*`` outside a snapshot) is *pipelined*: it goes to the reader with
the fewest calls queued, without waiting for that reader to be free. A read that finds its
reader idle goes to the thread at once; reads that arrive while the reader works wait on the
loop and go together, in order, as one hop to the thread (one wake-up of the thread and one of
the loop for all of them, where aiosqlite takes one each per call). ``read()`` and
``iterate()`` *reserve* a reader for a block of calls; the calls already queued on it finish
first (its thread is FIFO).

A cancelled read is skipped or interrupted on the thread (see ``Connection.run``), and a
reservation always ends with a rollback of its read transaction that a second cancellation
cannot cut short, so no slot is ever lost and no snapshot is left pinned.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._futures import fail, resolve
from .._shield import uncancellable
from ..errors import PoolClosed, PoolTimeout, StoreError
from ..metrics import Metrics
from ._connection import Connection, Outcome, Ticket, rollback_if_open
from ._counters import Counters
from ._errors import translate

__all__ = ["ReaderPool"]

log = logging.getLogger("async_store.pool")

T = TypeVar("T")

CLOSE_GRACE = 5.0
"""Seconds ``close()`` lets running reads finish before it interrupts them."""

PIPELINE_DEPTH = 32
"""Calls queued on one reader before new reads wait: deep enough to keep its thread busy,
shallow enough that one slow query delays few others."""

SPILL = 8
"""Reads queued on a reader before the next reader is used. Fewer busy threads contend less
for the GIL: 8 concurrent point reads ran at 1.02x aiosqlite's one shared connection when they
share a reader, 0.84x when spread evenly over 4 (``make bench``, point-read-8). A long query
should go through ``read()`` or ``iterate()``, which reserve a reader of their own."""


class _Reader:
    __slots__ = ("connection", "deferred", "hops", "queued", "reserved", "waiting")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.queued = 0
        """Pipelined reads given to this reader and not yet answered."""
        self.reserved = False
        self.hops = 0
        """Calls or groups of calls handed to the thread and not yet answered."""
        self.waiting: list[_Waiting] = []
        """Reads that arrived while the reader worked, in order, for the next group (at most
        PIPELINE_DEPTH: they count in ``queued``)."""
        self.deferred = False
        """A group is about to go (see ``ReaderPool._answer``)."""


_Waiting = tuple[Callable[[sqlite3.Connection], Any], Ticket, "asyncio.Future[Any]"]


class ReaderPool:
    """Reader connections of one database: opened on demand, up to ``limit``.

    The pool starts empty and opens a reader (in the background, one at a time) when every
    reader it has is reserved or has SPILL calls queued, so start-up opens no reader threads
    and a service that reads little runs one or two, not ``limit``.
    """

    def __init__(
        self,
        connections: list[Connection],
        *,
        name: str,
        acquire_timeout: float,
        counters: Counters,
        limit: int,
        opener: Callable[[], Awaitable[Connection]],
        metrics: Metrics | None = None,
    ) -> None:
        self._readers = [_Reader(connection) for connection in connections]
        self._by_connection = {id(r.connection): r for r in self._readers}
        self._name = name
        self._acquire_timeout = acquire_timeout
        self._counters = counters
        self._limit = limit
        self._opener = opener
        self._metrics = metrics if metrics is not None else Metrics()
        """Latency and errors of the pipelined reads (``run``), shared with the database."""
        self._opening: asyncio.Task[None] | None = None
        self._open_error: Exception | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._resets: set[asyncio.Task[None]] = set()
        self._queued: collections.deque[tuple[float, Ticket, asyncio.Future[Any]]] = (
            collections.deque()
        )
        """Reads queued behind others on their reader: (deadline, ticket, future)."""
        self._expiry: asyncio.TimerHandle | None = None
        self._closed = False
        self._stopped = False

    @property
    def total(self) -> int:
        """Readers open now."""
        return len(self._readers)

    @property
    def limit(self) -> int:
        """Readers the pool may open."""
        return self._limit

    @property
    def idle(self) -> int:
        return sum(1 for r in self._readers if not r.reserved and r.queued == 0)

    # -- choosing a reader -------------------------------------------------------------------

    def _pick(self, *, reserve: bool) -> _Reader | None:
        """For a pipelined read, the first reader with fewer than SPILL calls queued (else the
        least loaded); for a reservation, the least loaded. Reserved readers are skipped."""
        best: _Reader | None = None
        for reader in self._readers:
            if reader.reserved:
                continue
            if not reserve and reader.queued < SPILL:
                return reader
            if best is None or reader.queued < best.queued:
                best = reader
        if best is not None and not reserve and best.queued >= PIPELINE_DEPTH:
            return None
        return best

    async def _choose(self, *, reserve: bool) -> _Reader:
        if self._closed:
            raise PoolClosed(f"{self._name}: the database is closed")
        reader = self._pick(reserve=reserve)
        if reader is None or reader.queued >= (1 if reserve else SPILL):
            self._grow()
        if reader is not None:
            return reader
        self._counters.acquire_waits += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._acquire_timeout):
                while True:
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        with contextlib.suppress(ValueError):
                            self._waiters.remove(waiter)
                    if self._closed:
                        raise PoolClosed(f"{self._name}: the database is closed")
                    reader = self._pick(reserve=reserve)
                    if reader is not None:
                        return reader
                    self._grow()
                    if self._opening is None and self._open_error is not None:
                        raise self._open_error
        except TimeoutError:
            self._counters.acquire_timeouts += 1
            raise PoolTimeout(
                f"{self._name}: no reader became free within {self._acquire_timeout} s "
                f"({self.total} readers, all reserved or full)"
            ) from None

    def _grow(self) -> None:
        """Open one more reader in the background, if the limit allows and none is opening."""
        if self._opening is not None or self._closed or len(self._readers) >= self._limit:
            return
        self._opening = asyncio.get_running_loop().create_task(
            self._open_one(), name=f"async_store.{self._name}.reader-open"
        )

    async def _open_one(self) -> None:
        try:
            connection = await self._opener()
        except Exception as exc:
            self._open_error = exc
            log.error("%s: could not open another reader: %s", self._name, exc)
        else:
            self._open_error = None
            if self._closed:
                await connection.close()
            else:
                reader = _Reader(connection)
                self._readers.append(reader)
                self._by_connection[id(connection)] = reader
        finally:
            self._opening = None
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- pipelined reads -------------------------------------------------------------------------

    async def run(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        """Run ``fn`` on the least-loaded reader: at once if it is idle, else with the next
        group of reads; its latency and any error are recorded as a read's."""
        started = time.perf_counter()
        try:
            reader = None if self._closed else self._pick(reserve=False)
            if reader is None or reader.queued >= SPILL:  # (the common case needs no coroutine)
                reader = await self._choose(reserve=False)
            reader.queued += 1
            try:
                if reader.hops or reader.deferred:
                    return await self._wait_for_group(reader, fn)
                reader.hops += 1
                try:
                    return await reader.connection.run(fn)
                finally:
                    reader.hops -= 1
                    if reader.waiting and not reader.hops:
                        self._send_group(reader)
            except Exception as exc:
                raise translate(exc, database=self._name, sql=sql, on_reader=True) from exc
            finally:
                reader.queued -= 1
                if self._waiters:
                    self._wake()
        except StoreError as exc:
            self._metrics.count_error(exc)
            raise
        finally:
            self._metrics.record("read", time.perf_counter() - started)

    async def _wait_for_group(self, reader: _Reader, fn: Callable[[sqlite3.Connection], T]) -> T:
        ticket = Ticket()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        reader.waiting.append((fn, ticket, future))
        self._bound(loop, ticket, future)
        try:
            return await future
        except asyncio.CancelledError:
            ticket.cancelled = True  # skipped if its group has not reached it yet
            raise

    def _bound(
        self, loop: asyncio.AbstractEventLoop, ticket: Ticket, future: asyncio.Future[Any]
    ) -> None:
        """Give a read queued behind others on its reader until ``acquire_timeout`` to start
        (``_expire`` fails it with :class:`PoolTimeout` then). Every read has the same timeout,
        so ``_queued`` is in deadline order; reads answered already are dropped from its head
        as new ones come."""
        queued = self._queued
        while queued and queued[0][2].done():
            queued.popleft()
        deadline = loop.time() + self._acquire_timeout
        queued.append((deadline, ticket, future))
        if self._expiry is None:
            self._expiry = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001  # (a timer may fire up to the clock's resolution early)
        queued = self._queued
        expired = 0
        while queued and (queued[0][0] <= now or queued[0][2].done()):
            _, ticket, future = queued.popleft()
            if not future.done():
                ticket.cancelled = True  # skipped, or stopped, on the reader's thread
                expired += 1
                fail(
                    future,
                    PoolTimeout(
                        f"{self._name}: a read waited acquire_timeout ({self._acquire_timeout} "
                        "s) behind the reads ahead of it on its reader (a long query?) and "
                        "was withdrawn"
                    ),
                )
        self._counters.acquire_timeouts += expired
        if queued:
            self._expiry = loop.call_at(queued[0][0], self._expire)

    def _send_group(self, reader: _Reader) -> None:
        """Hand the reads waiting on ``reader`` to its thread as one call."""
        reader.deferred = False
        group = [item for item in reader.waiting if not item[2].done()]
        reader.waiting = []
        if not group:
            return
        try:
            answers = reader.connection.submit_each([(fn, ticket) for fn, ticket, _ in group])
        except ValueError:  # the reader's thread has stopped (never while reads are queued)
            for _, _, future in group:
                fail(future, PoolClosed(f"{self._name}: the reader is closed"))
            return
        reader.hops += 1
        answers.add_done_callback(functools.partial(self._answer, reader, group))

    def _answer(
        self, reader: _Reader, group: list[_Waiting], answers: asyncio.Future[list[Outcome]]
    ) -> None:
        reader.hops -= 1
        if answers.cancelled():
            outcomes: list[Outcome] = [(False, asyncio.CancelledError())] * len(group)
        elif (error := answers.exception()) is not None:
            outcomes = [(False, error)] * len(group)
        else:
            outcomes = answers.result()
        for (_, _, future), (ok, value) in zip(group, outcomes, strict=True):
            if ok:
                resolve(future, value)
            else:
                fail(future, value)
        if len(group) > 1:
            # The callers just answered resume in this turn of the loop, and most read again
            # at once: their reads go as the next group, after them, instead of the first
            # going alone.
            reader.deferred = True
            asyncio.get_running_loop().call_soon(self._send_group, reader)
        elif reader.waiting and not reader.hops:
            self._send_group(reader)

    # -- reservations ----------------------------------------------------------------------------

    async def acquire(self) -> Connection:
        """Reserve a reader for a block of calls (waiting up to ``acquire_timeout``)."""
        reader = await self._choose(reserve=True)
        reader.reserved = True
        if reader.waiting:  # they came first: they go before the reservation's calls
            self._send_group(reader)
        return reader.connection

    async def release(self, connection: Connection) -> None:
        """End a reservation: roll back whatever read transaction is open on the reader, then
        hand it back. The rollback runs as its own task and is awaited to its end even if the
        caller is cancelled meanwhile (the cancellation is re-raised afterwards)."""
        reader = self._by_connection[id(connection)]
        task = asyncio.get_running_loop().create_task(
            self._reset(reader), name=f"async_store.{self._name}.reader-reset"
        )
        self._resets.add(task)
        task.add_done_callback(self._resets.discard)
        await uncancellable(task)

    async def _reset(self, reader: _Reader) -> None:
        try:
            await reader.connection.run(rollback_if_open)
        except Exception:  # a failed rollback on a reader leaves no transaction open either
            pass
        finally:
            reader.reserved = False
            self._wake()

    # -- closing ---------------------------------------------------------------------------------

    async def close(self, *, deadline: float | None = None) -> None:
        """Wait for every queued read and reservation to end, then close every reader. At
        ``deadline`` (loop time; default ``CLOSE_GRACE`` seconds from now), or at once after
        :meth:`stop`, the reads still running are interrupted and those still queued are
        skipped (their callers get :class:`Interrupted`): a forgotten long query must not keep
        the service open."""
        self._closed = True
        self._wake()
        if self._opening is not None:
            await asyncio.wait({self._opening})
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + CLOSE_GRACE
        while True:
            # Once every reader has been stopped, what is left ends soon: wait for it without
            # a timeout (a timeout of 0 would spin).
            timeout = None if self._stopped else max(0.0, deadline - loop.time())
            if self._resets:
                await asyncio.wait(set(self._resets), timeout=timeout)
            elif self.idle < self.total:
                waiter = loop.create_future()
                self._waiters.append(waiter)
                await asyncio.wait({waiter}, timeout=timeout)
            else:
                break
            if not self._stopped and loop.time() >= deadline:
                self.stop()
        for reader in self._readers:
            await reader.connection.close()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def stop(self) -> None:
        """Interrupt every read running and skip every read queued (see :meth:`close`)."""
        self._closed = True
        self._stopped = True
        for reader in self._readers:
            reader.connection.stop_all()
        self._wake()
