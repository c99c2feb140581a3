"""The writer: one connection, one task, a FIFO queue of write jobs, and group commit.

Jobs queued behind the writer run back to back inside one outer ``BEGIN IMMEDIATE`` transaction,
each in its own SAVEPOINT, and commit once. A job that fails rolls back to its savepoint and
raises to its own caller; a COMMIT that fails fails every job of its batch. Every caller's await
returns only after the COMMIT that holds its work. With nothing queued a job commits alone.

Three kinds of job:

* a *statement job* (``execute``, ``execute_many``): a plain function of the connection. All the
  statement jobs of a batch run in one hop to the writer's thread, BEGIN and COMMIT included.
* a *transaction job* (``transaction()``): the writer opens a savepoint, lends the connection to
  the caller's ``async with`` block, and waits for the block to end before it goes on.
* an *exclusive job* (migrations, checkpoints): a function that runs alone, outside any
  transaction, between batches.

The jobs are defined in ``_writer_jobs``; what runs on the writer's thread (BEGIN, the jobs,
savepoints, COMMIT) is in ``_writer_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from ._connection import Connection, rollback_if_open
from ._futures import fail, resolve
from ._shield import finish
from ._writer_jobs import ExclusiveJob, StatementJob, TransactionLease
from ._writer_thread import (
    BatchFailed,
    begin_immediate,
    close_savepoint,
    commit,
    run_batch,
    run_jobs,
    without_cursor,
)
from .config import DatabaseConfig
from .errors import PoolClosed, PoolTimeout, StoreError, translate
from .statistics import Counters

__all__ = ["Writer"]

T = TypeVar("T")

_Job = StatementJob | TransactionLease | ExclusiveJob
_J = TypeVar("_J", StatementJob, TransactionLease)


class Writer:
    """Serves one database's write jobs in FIFO order on a single connection."""

    def __init__(self, connection: Connection, config: DatabaseConfig, counters: Counters) -> None:
        self._connection = connection
        self._config = config
        self._name = config.name
        self._describe = f"{config.name} ({config.path})"
        self._counters = counters
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue(config.max_queued)
        self._backlog: deque[_Job | None] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: BaseException | None = None
        self._savepoints = 0
        self._waiting = 0

    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for the writer (not counting those their callers gave up on)."""
        return self._waiting

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._serve(), name=f"async_store.{self._name}.writer"
        )

    # -- submitting work -------------------------------------------------------------------

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], sql: str, *, atomic: bool = False
    ) -> T:
        """Run ``fn`` as one transaction of a group commit; return once it is committed.
        ``atomic``: a failure of ``fn`` leaves nothing to undo (see ``StatementJob.atomic``).

        Cancelling the caller after the job reached the writer's thread does not undo it."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        return await self._submit(StatementJob(fn, sql, future, atomic), future)

    async def run_exclusive(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` alone on the writer's thread, between batches; ``fn`` manages its own
        transactions."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        return await self._submit(ExclusiveJob(fn, future), future)

    async def _submit(self, job: StatementJob | ExclusiveJob, future: asyncio.Future[T]) -> T:
        """Queue ``job`` and wait for its ``future``."""
        await self._enqueue(job)
        try:
            return await future
        except asyncio.CancelledError:
            self._stop_waiting(job)
            raise

    async def lease(self) -> TransactionLease:
        """Wait for the writer to open a savepoint for a ``transaction()`` block."""
        lease = TransactionLease(asyncio.get_running_loop())
        try:
            await self._enqueue(lease)
            await asyncio.shield(lease.granted)
        except BaseException:
            if not lease.granted.done():
                lease.granted.cancel()  # still queued: the writer will skip it
                self._stop_waiting(lease)
            elif lease.granted.exception() is None:
                # Granted just as the caller gave up: hand it back, rolled back.
                lease.finished.set_result(False)
                with contextlib.suppress(StoreError):
                    await finish(lease.committed)
            raise
        return lease

    def _stop_waiting(self, job: _Job) -> None:
        """The writer took ``job``, or its caller gave up on it while it was queued."""
        if job.waiting:
            job.waiting = False
            self._waiting -= 1

    async def _enqueue(self, job: _Job) -> None:
        if self._failure is not None:
            raise PoolClosed(f"{self._name}: the writer stopped") from self._failure
        if self._closing or self._task is None:
            raise PoolClosed(f"{self._name}: the database is closed")
        job.waiting = True
        self._waiting += 1
        try:
            self._queue.put_nowait(job)
            return
        except asyncio.QueueFull:
            pass
        try:
            async with asyncio.timeout(self._config.acquire_timeout):
                await self._queue.put(job)
        except BaseException as exc:
            self._stop_waiting(job)
            if not isinstance(exc, TimeoutError):
                raise
            self._counters.acquire_timeouts += 1
            raise PoolTimeout(
                f"{self._name}: the writer queue stayed full ({self._config.max_queued} jobs) "
                f"for {self._config.acquire_timeout} s"
            ) from None

    # -- serving -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while True:
                job = self._backlog.popleft() if self._backlog else await self._queue.get()
                if job is None:
                    return
                self._stop_waiting(job)
                if isinstance(job, ExclusiveJob):
                    await self._serve_exclusive(job)
                elif isinstance(job, StatementJob):
                    await self._serve_statements(job)
                elif not job.granted.cancelled():
                    await self._serve_transactions(job)
        except BaseException as exc:
            self._failure = exc
            self._fail_queued(exc)
            raise

    def _fail_queued(self, exc: BaseException) -> None:
        error = PoolClosed(f"{self._name}: the writer stopped: {exc!r}")
        while self._backlog or not self._queue.empty():
            job = self._backlog.popleft() if self._backlog else self._queue.get_nowait()
            if isinstance(job, StatementJob | ExclusiveJob):
                fail(job.future, error)
            elif job is not None:
                fail(job.granted, error)

    def _take(self, kind: type[_J]) -> _J | None:
        """Pop the next queued job if it is a ``kind``; otherwise leave it at the head."""
        while not self._backlog and not self._queue.empty():
            job = self._queue.get_nowait()
            if not _abandoned(job):
                self._backlog.append(job)
            elif job is not None:
                self._stop_waiting(job)
        if self._backlog and isinstance(self._backlog[0], kind):
            job = self._backlog.popleft()
            if job is not None:
                self._stop_waiting(job)
            return job  # type: ignore[return-value]
        return None

    def _take_statements(self, first: StatementJob, room: int) -> list[StatementJob]:
        jobs = [first]
        while len(jobs) < room and (job := self._take(StatementJob)) is not None:
            jobs.append(job)
        return [job for job in jobs if not job.future.cancelled()]

    async def _serve_exclusive(self, job: ExclusiveJob) -> None:
        if job.future.cancelled():
            return
        try:
            result = await self._connection.run(functools.partial(without_cursor, job.fn))
        except Exception as exc:
            fail(job.future, translate(exc, database=self._name), cause=exc)
        else:
            resolve(job.future, result)

    async def _serve_statements(self, first: StatementJob) -> None:
        """A batch of statement jobs only: BEGIN, every job, COMMIT in one hop."""
        jobs = self._take_statements(first, self._config.max_batch_size)
        if not jobs:
            return
        retries, backoff, counters = (
            self._config.busy_retries,
            self._config.busy_backoff,
            self._counters,
        )
        try:
            outcomes = await self._connection.run(
                lambda conn: run_batch(conn, jobs, retries, backoff, counters, self._describe)
            )
        except Exception as exc:
            await self._abort([job.future for job in jobs], exc)
            return
        committed = 0
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome.error is None:
                committed += 1
                resolve(job.future, outcome.value)
            else:
                error = translate(outcome.error, database=self._name, sql=job.sql)
                fail(job.future, error, cause=outcome.error)
        self._counters.record_batch(committed, len(jobs) - committed)

    async def _serve_transactions(self, first: TransactionLease) -> None:
        """A batch led by a ``transaction()`` block: it takes the statement jobs and blocks
        queued behind it, until the batch is full or has stayed open too long."""
        retries, backoff, counters = (
            self._config.busy_retries,
            self._config.busy_backoff,
            self._counters,
        )
        try:
            await self._connection.run(
                lambda conn: begin_immediate(conn, retries, backoff, counters, self._describe)
            )
        except Exception as exc:
            fail(first.granted, translate(exc, database=self._name), cause=exc)
            return
        deadline = time.monotonic() + self._config.max_batch_duration
        room = self._config.max_batch_size
        kept: list[tuple[asyncio.Future[Any], Any]] = []
        leases: list[TransactionLease] = []
        failed = 0
        job: _Job | None = first
        try:
            while job is not None:
                if isinstance(job, TransactionLease):
                    leases.append(job)
                    if await self._serve_lease(job):
                        kept.append((job.committed, None))
                    else:
                        failed += 1
                elif isinstance(job, StatementJob):
                    jobs = self._take_statements(job, room - len(kept) - failed)
                    outcomes = await self._connection.run(partial(run_jobs, jobs=jobs))
                    for statement, outcome in zip(jobs, outcomes, strict=True):
                        if outcome.error is None:
                            kept.append((statement.future, outcome.value))
                        else:
                            failed += 1
                            error = translate(outcome.error, database=self._name, sql=statement.sql)
                            fail(statement.future, error, cause=outcome.error)
                if len(kept) + failed >= room or time.monotonic() >= deadline:
                    break
                job = self._take(TransactionLease) or self._take(StatementJob)
            await self._connection.run(commit)
        except BaseException as exc:
            await self._abort([future for future, _ in kept], exc)
            for lease in leases:
                resolve(lease.committed, None)
            if not isinstance(exc, Exception):
                raise
            return
        for future, value in kept:
            resolve(future, value)
        for lease in leases:
            resolve(lease.committed, None)
        self._counters.record_batch(len(kept), failed)

    async def _serve_lease(self, lease: TransactionLease) -> bool:
        """Open a savepoint, lend the connection, and close the savepoint when the block ends.
        Returns whether the block's work was kept."""
        self._savepoints += 1
        name = f"async_store_tx_{self._savepoints}"
        await self._connection.run(lambda conn: conn.execute(f"SAVEPOINT {name}"))
        lease.savepoint = name
        keep = False
        if not lease.granted.cancelled():
            lease.granted.set_result(None)
            keep = await asyncio.shield(lease.finished)
        await self._connection.run(lambda conn: close_savepoint(conn, name, keep=keep))
        return keep

    async def _abort(self, futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
        """The batch is lost: roll back whatever is left of it and fail everyone in it."""
        cause = exc.cause if isinstance(exc, BatchFailed) else exc
        with contextlib.suppress(Exception):
            await finish(self._connection.run(rollback_if_open))
        error = translate(cause, database=self._name, sql=getattr(exc, "sql", None))
        if isinstance(exc, BatchFailed) and exc.rolled_back and futures:
            error = type(error)(
                f"{error} (the group commit of {len(futures)} transaction(s) was rolled back)"
            )
        for future in futures:
            fail(future, error, cause=cause)
        self._counters.record_batch(0, len(futures))

    # -- closing ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Serve everything already queued, then stop the writer task."""
        self._closing = True
        task = self._task
        if task is None:
            return
        if not task.done():
            await self._queue.put(None)
        with contextlib.suppress(Exception):
            await finish(task)


def _abandoned(job: _Job | None) -> bool:
    if isinstance(job, TransactionLease):
        return job.granted.cancelled()
    if job is None:
        return False
    return job.future.cancelled()
