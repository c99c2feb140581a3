"""The writer: one connection, one task, a FIFO queue of write jobs, and group commit.

Jobs queued behind the writer run back to back inside one outer ``BEGIN IMMEDIATE`` transaction,
each in its own SAVEPOINT, and commit once. A job that fails rolls back to its savepoint and
raises to its own caller; a COMMIT that fails fails every job of its batch (one refused by a
deferred constraint re-runs the batch's jobs one by one instead: see ``_writer_thread``). Every
caller's await returns only after the COMMIT that holds its work. With nothing queued a job
commits alone.

Three kinds of job:

* a *statement job* (``execute``, ``execute_many``): a plain function of the connection. All the
  statement jobs of a batch run in one hop to the writer's thread, BEGIN and COMMIT included.
* a *transaction job* (``transaction()``): the writer opens a savepoint, lends the connection to
  the caller's ``async with`` block, and waits for the block to end; the statement jobs queued
  meanwhile then join its COMMIT. A block always leads its batch and never shares it with
  another block: a block that joined a batch would make the callers before it wait for its
  code, which may be waiting for one of them (a deadlock).
* an *exclusive job* (migrations, checkpoints): a function that runs alone, outside any
  transaction, between batches.

Every wait is bounded. A caller whose job is still queued ``acquire_timeout`` seconds after it
asked gives up with ``PoolTimeout``: its job is withdrawn, nothing of it runs. A block held
past ``transaction_timeout`` is rolled back and the writer goes on. ``close()`` serves what is
queued until its deadline, then rolls back an open block and fails what is still queued.

The jobs are defined in ``_writer_jobs``; what runs on the writer's thread (BEGIN, the jobs,
savepoints, COMMIT) is in ``_writer_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, TypeVar

from .._futures import fail, resolve
from .._shield import uncancellable
from ..config import DatabaseConfig
from ..errors import PoolClosed, PoolTimeout, StoreError, TransactionTimeout
from ..statistics import WriterHold
from ._connection import Connection, rollback_if_open
from ._counters import Counters
from ._errors import translate
from ._writer_jobs import ExclusiveJob, StatementJob, TransactionLease
from ._writer_queue import Job as _Job
from ._writer_queue import JobQueue
from ._writer_thread import BatchFailed, Locking, begin_block, end_block, run_batch, without_cursor

__all__ = ["Writer"]

T = TypeVar("T")


class Writer:
    """Serves one database's write jobs in FIFO order on a single connection."""

    def __init__(self, connection: Connection, config: DatabaseConfig, counters: Counters) -> None:
        self._connection = connection
        self._config = config
        self._name = config.name
        self._locking = Locking(
            config.busy_retries, config.busy_backoff, counters, f"{config.name} ({config.path})"
        )
        self._counters = counters
        self._loop = asyncio.get_running_loop()
        self._queue = JobQueue(self._loop, limit=config.max_queued, on_expired=self._expired)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped: StoreError | None = None
        """Set past close's deadline: queued jobs failed, an open block rolled back."""
        self._stop: asyncio.Future[None] = self._loop.create_future()
        """Resolved when ``_stopped`` is set: wakes the writer waiting on a block."""
        self._failure: BaseException | None = None
        self._savepoints = 0
        # What holds the writer now (see ``hold``): kind, task, the block, first SQL, since.
        self._held: Literal["transaction", "batch", "exclusive"] | None = None
        self._held_task = ""
        self._held_lease: TransactionLease | None = None
        self._held_sql: str | None = None
        self._held_since = 0.0
        self._held_wall = 0.0

    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for the writer (not counting those their callers gave up on)."""
        return len(self._queue)

    def start(self) -> None:
        self._task = self._loop.create_task(self._serve(), name=f"async_store.{self._name}.writer")

    def hold(self) -> WriterHold | None:
        """What holds the writer now, or ``None`` when it waits for work."""
        if self._held is None:
            return None
        lease = self._held_lease
        return WriterHold(
            kind=self._held,
            task=self._held_task,
            since=datetime.fromtimestamp(self._held_wall, UTC).isoformat(timespec="microseconds"),
            held_seconds=round(time.monotonic() - self._held_since, 6),
            last_sql=lease.last_sql if lease is not None else self._held_sql,
        )

    # -- submitting work -------------------------------------------------------------------

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], sql: str, *, atomic: bool = False
    ) -> T:
        """Run ``fn`` as one transaction of a group commit; return once it is committed.
        ``atomic``: a failure of ``fn`` leaves nothing to undo (see ``StatementJob.atomic``).

        Raises :class:`PoolTimeout` (nothing ran) when the writer did not take the job within
        ``acquire_timeout``. Cancelling the caller while the job is queued withdraws it; once
        the job reached the writer's thread, cancelling does not undo it."""
        future: asyncio.Future[T] = self._loop.create_future()
        job = StatementJob(fn, sql, future, atomic)
        return await self._submit(job, future, self._config.acquire_timeout)

    async def run_exclusive(
        self, fn: Callable[[sqlite3.Connection], T], *, acquire_timeout: float | None = None
    ) -> T:
        """Run ``fn`` alone on the writer's thread, between batches; ``fn`` manages its own
        transactions. :class:`PoolTimeout` when the writer did not take it within
        ``acquire_timeout`` seconds (default: the database's)."""
        future: asyncio.Future[T] = self._loop.create_future()
        if acquire_timeout is None:
            acquire_timeout = self._config.acquire_timeout
        return await self._submit(ExclusiveJob(fn, future), future, acquire_timeout)

    async def _submit(
        self, job: StatementJob | ExclusiveJob, future: asyncio.Future[T], patience: float
    ) -> T:
        """Queue ``job`` (the writer must take it within ``patience`` seconds) and wait for its
        ``future``; cancelled while it is still queued, it is withdrawn."""
        await self._put(job, patience)
        try:
            return await future
        except asyncio.CancelledError:
            self._queue.withdraw(job)
            raise

    async def lease(self) -> TransactionLease:
        """Wait for the writer to open a savepoint for a ``transaction()`` block (at most
        ``acquire_timeout``, then :class:`PoolTimeout`)."""
        task = asyncio.current_task()
        lease = TransactionLease(self._loop, task.get_name() if task is not None else "?")
        try:
            await self._put(lease, self._config.acquire_timeout)
            await asyncio.shield(lease.granted)
        except BaseException:
            if not lease.granted.done():
                lease.granted.cancel()  # still queued: the writer will skip it
                self._queue.withdraw(lease)
            elif not lease.granted.cancelled() and lease.granted.exception() is None:
                # Granted just as the caller gave up: hand it back, rolled back.
                lease.finished.set_result(False)
                with contextlib.suppress(StoreError):
                    await uncancellable(lease.committed)
            raise
        return lease

    async def _put(self, job: _Job, patience: float) -> None:
        """Queue ``job``; the writer must take it within ``patience`` seconds."""
        if self._failure is not None:
            raise PoolClosed(f"{self._name}: the writer stopped") from self._failure
        if self._closing or self._task is None:
            raise PoolClosed(f"{self._name}: the database is closed")
        if await self._queue.put(job, patience):
            return
        if self._closing:
            raise PoolClosed(f"{self._name}: the database is closed")
        self._counters.acquire_timeouts += 1
        raise PoolTimeout(
            f"{self._name}: the writer queue stayed full ({self._config.max_queued} jobs) for "
            f"{patience} s; nothing was queued"
        )

    def _expired(self, jobs: list[_Job]) -> None:
        """The writer did not take ``jobs`` in time: their callers get :class:`PoolTimeout`."""
        self._counters.acquire_timeouts += len(jobs)
        hold = self.hold()
        holder = f"{len(self._queue)} job(s) still queued" if hold is None else hold.describe()
        message = (
            f"{self._name}: the writer did not become free within acquire_timeout "
            f"({self._config.acquire_timeout} s): {holder}; the work was withdrawn and did not "
            "run"
        )
        for job in jobs:
            _fail_job(job, PoolTimeout(message))

    # -- serving -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while (job := await self._queue.get()) is not None:
                try:
                    if isinstance(job, StatementJob):
                        await self._serve_statements(job)
                    elif isinstance(job, TransactionLease):
                        await self._serve_transaction(job)
                    else:
                        await self._serve_exclusive(job)
                finally:
                    self._held = None
                    self._held_lease = None
        except BaseException as exc:
            self._failure = exc
            self._stop_serving(PoolClosed(f"{self._name}: the writer stopped: {exc!r}"))
            raise

    def _take_statements(self, first: StatementJob | None, room: int) -> list[StatementJob]:
        jobs = [] if first is None else [first]
        while len(jobs) < room and (job := self._queue.pop(StatementJob)) is not None:
            jobs.append(job)
        return [job for job in jobs if not job.future.cancelled()]

    def _holds(
        self, kind: Literal["transaction", "batch", "exclusive"], task: str, sql: str | None
    ) -> None:
        self._held, self._held_task, self._held_sql = kind, task, sql
        self._held_since, self._held_wall = time.monotonic(), time.time()

    async def _serve_exclusive(self, job: ExclusiveJob) -> None:
        if job.future.cancelled():
            return
        self._holds("exclusive", self._task_name(), None)
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
        self._holds("batch", self._task_name(), jobs[0].sql)
        try:
            outcomes = await self._connection.run(
                partial(run_batch, jobs=jobs, locking=self._locking)
            )
        except Exception as exc:
            await self._abort([job.future for job in jobs], exc)
            return
        self._counters.record_batch(*self._answer(jobs, outcomes))

    async def _serve_transaction(self, lease: TransactionLease) -> None:
        """A batch led by a ``transaction()`` block: the block, then the statement jobs queued
        behind it, one COMMIT."""
        if lease.granted.done():
            return
        self._savepoints += 1
        name = f"async_store_tx_{self._savepoints}"
        self._holds("transaction", lease.task, None)
        self._held_lease = lease
        try:
            await self._connection.run(partial(begin_block, savepoint=name, locking=self._locking))
        except Exception as exc:
            fail(lease.granted, translate(exc, database=self._name), cause=exc)
            return
        if lease.granted.done():  # its caller gave up while BEGIN ran
            with contextlib.suppress(Exception):
                await self._connection.run(rollback_if_open)
            return
        lease.savepoint = name
        lease.granted.set_result(None)
        keep = await self._await_block(lease)
        jobs = self._take_statements(None, self._config.max_batch_size - 1)
        try:
            block_error, outcomes = await self._connection.run(
                partial(end_block, savepoint=name, keep=keep, jobs=jobs, locking=self._locking)
            )
        except BaseException as exc:
            await self._abort([lease.committed, *(job.future for job in jobs)], exc)
            if not isinstance(exc, Exception):
                raise
            return
        committed, failed = self._answer(jobs, outcomes)
        if block_error is not None:
            error = translate(block_error, database=self._name, sql="COMMIT")
            fail(lease.committed, error, cause=block_error)
            failed += 1
        else:
            resolve(lease.committed, None)
            committed += keep
            failed += not keep
        self._counters.record_batch(committed, failed)

    async def _await_block(self, lease: TransactionLease) -> bool:
        """Wait for the block to end; whether to keep its work. Past ``transaction_timeout``,
        or once close's deadline has passed, the block is expired: rolled back, and its later
        calls raise."""
        finished = lease.finished
        if not finished.done():
            await asyncio.wait(
                (finished, self._stop),
                timeout=self._config.transaction_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        if finished.done():
            return finished.result()
        if self._stopped is not None:
            lease.expired = PoolClosed(
                f"{self._name}: the database closed while this transaction() block was open; "
                "its work was rolled back"
            )
        else:
            self._counters.transaction_timeouts += 1
            lease.expired = TransactionTimeout(
                f"{self._name}: this transaction() block of task {lease.task!r} held the writer "
                f"longer than transaction_timeout ({self._config.transaction_timeout} s); its "
                "work was rolled back"
            )
        return False

    def _answer(self, jobs: Sequence[StatementJob], outcomes: Sequence[Any]) -> tuple[int, int]:
        """Answer each job's caller with its outcome; (committed, failed)."""
        committed = 0
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome.error is None:
                committed += 1
                resolve(job.future, outcome.value)
            else:
                error = translate(outcome.error, database=self._name, sql=job.sql)
                fail(job.future, error, cause=outcome.error)
        return committed, len(jobs) - committed

    async def _abort(self, futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
        """The batch is lost: roll back whatever is left of it and fail everyone in it."""
        cause = exc.cause if isinstance(exc, BatchFailed) else exc
        with contextlib.suppress(Exception):
            await uncancellable(self._connection.run(rollback_if_open))
        error = translate(cause, database=self._name, sql=getattr(exc, "sql", None))
        if isinstance(exc, BatchFailed) and exc.rolled_back and futures:
            error = type(error)(
                f"{error} (the group commit of {len(futures)} transaction(s) was rolled back)"
            )
        for future in futures:
            fail(future, error, cause=cause)
        self._counters.record_batch(0, len(futures))

    def _task_name(self) -> str:
        return self._task.get_name() if self._task is not None else "?"

    # -- closing ---------------------------------------------------------------------------

    async def close(self, deadline: float) -> None:
        """Serve what is queued until ``deadline`` (loop time); then roll back a block still
        open and fail what is still queued (:class:`PoolClosed`), and stop the writer task."""
        self._closing = True
        self._queue.close()
        task = self._task
        if task is None:
            return
        if not task.done():
            await asyncio.wait({task}, timeout=max(0.0, deadline - self._loop.time()))
        if not task.done():
            self.stop()
        with contextlib.suppress(Exception):
            await uncancellable(task)

    def stop(self, *, interrupt: bool = False) -> None:
        """Close's deadline has passed: roll back the open block (its later calls raise
        :class:`PoolClosed`), fail every queued job, and with ``interrupt`` stop the statement
        running on the writer's thread (its batch fails)."""
        self._stop_serving(PoolClosed(f"{self._name}: the database closed before this ran"))
        if interrupt and self._held is not None:
            self._connection.interrupt()

    def _stop_serving(self, error: StoreError) -> None:
        if self._stopped is None:
            self._stopped = error
            resolve(self._stop, None)
        self._closing = True
        self._queue.close()
        for job in self._queue.take_all():
            _fail_job(job, type(error)(str(error)))


def _fail_job(job: _Job, error: StoreError) -> None:
    fail(job.granted if isinstance(job, TransactionLease) else job.future, error)
