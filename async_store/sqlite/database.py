"""``Database``: one SQLite file behind one FIFO writer (with group commit) and a reader pool.

Reads go to a reader; writes go to the writer. Inside ``transaction()`` every call of the same
task, on the database or on the transaction, runs on the transaction (reads see its writes), and
a nested ``transaction()`` becomes a SAVEPOINT. Those scopes, and the ``Transaction`` and
``ReadSnapshot`` they yield, are in ``_transaction`` and ``_snapshot``; this module re-exports
the two handles.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from .._shield import uncancellable
from ..config import DatabaseConfig
from ..database import Database, Parameters, Row, config_of, refuse_inside_transaction
from ..errors import ConfigError, DatabaseBusy, PoolClosed, StoreError
from ..health._report import CheckpointResult
from ..metrics import Metrics
from ..statistics import PoolStatistics
from ._connection import open_connection
from ._counters import Counters
from ._errors import translate
from ._queries import SqliteQueries, stream_rows
from ._readers import CLOSE_GRACE, ReaderPool
from ._snapshot import ReadContext
from ._transaction import TaskTransactions, TransactionContext
from ._writer import Writer

__all__ = ["CheckpointMode", "SqliteDatabase"]

T = TypeVar("T")

log = logging.getLogger("async_store.database")

CheckpointMode = Literal["PASSIVE", "FULL", "RESTART", "TRUNCATE"]


class SqliteDatabase(SqliteQueries, Database):
    """One SQLite database: ``async with Database(config) as db`` or ``await db.open()``.

    Besides the contract of :class:`~async_store.Database`, it has SQLite-only calls that no
    other backend offers: :meth:`run_in_transaction`, :meth:`run_in_reader` and
    :meth:`run_on_writer` hand a ``sqlite3.Connection`` to a function on the connection's
    thread, and :meth:`checkpoint` folds the WAL back into the database."""

    backend = "sqlite"

    def __init__(self, config: DatabaseConfig | str, /, **options: Any) -> None:
        config = config_of(config, options)
        self._config = config
        self._counters = Counters()
        self.metrics = Metrics()
        """Latencies of reads, writes and transactions on this database; errors by kind."""
        self._writer: Writer | None = None
        self._readers: ReaderPool | None = None
        self._state = "new"
        # Set when the open or close in progress ends; what waits for one waits on it.
        self._settled = asyncio.Event()
        self._close_requested = False
        self._last_checkpoint: CheckpointResult | None = None
        self._hurried = False
        self._tasks = TaskTransactions(config.name)

    @property
    def config(self) -> DatabaseConfig:
        """The database's configuration."""
        return self._config

    @property
    def is_open(self) -> bool:
        """Whether the database serves calls (opened and not closing)."""
        return self._state == "open"

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the writer and the readers (creating the file and its directory if missing),
        with every PRAGMA set and read back. Opening an open database does nothing; a closed
        one opens again with a new writer and new readers (statistics and metrics go on
        counting). An open called while a ``close()`` is in progress waits for it to end
        first; a ``close()`` called while this opens ends it with :class:`PoolClosed`."""
        while self._state in ("opening", "closing"):
            await self._settled.wait()
        if self._state == "open":
            return
        self._state = "opening"
        self._settled = settled = asyncio.Event()
        self._close_requested = False
        try:
            # The writer opens now: it creates the file, switches it to WAL and proves every
            # PRAGMA (a bad file or setting shows here). Readers open as the first reads ask
            # for them: each is a thread, and a service that reads little needs one or two.
            connection = await open_connection(self._config, reader=False)
        except BaseException:
            self._settle("closed", settled)
            raise
        if self._close_requested:
            await uncancellable(connection.close())
            self._settle("closed", settled)
            raise PoolClosed(f"{self.name}: the database was closed while it opened")
        self._writer = Writer(connection, self._config, self._counters)
        self._readers = ReaderPool(
            [],
            name=self.name,
            acquire_timeout=self._config.acquire_timeout,
            counters=self._counters,
            limit=self._config.readers,
            opener=functools.partial(open_connection, self._config, reader=True),
            metrics=self.metrics,
        )
        self._hurried = False
        self._writer.start()
        self._settle("open", settled)

    def _settle(self, state: str, settled: asyncio.Event) -> None:
        """End an open or a close in ``state``, and wake the calls that wait for it."""
        self._state = state
        settled.set()

    async def close(self) -> None:
        """Serve the writes already queued, give reads in progress and an open ``transaction()``
        block a grace period (5 s) to end, checkpoint the WAL, and close every connection and
        thread. Past the grace period an open block is rolled back (its later calls raise
        :class:`PoolClosed`), writes still queued fail with :class:`PoolClosed` and reads
        still running are interrupted. Cancelled (or timed out), it skips what is left of the
        grace period and the checkpoint, closes everything, then raises the cancellation.
        Idempotent: a close called while another is in progress waits for it to end, one
        called while the database opens ends that open. The database may be opened again."""
        if self._state == "opening":
            # The open closes what it opened as soon as it has it, even if this call is
            # cancelled meanwhile: a connection opening on its thread cannot be taken over.
            self._close_requested = True
        if self._state in ("opening", "closing"):
            settled = self._settled
            try:
                await settled.wait()
            except asyncio.CancelledError:
                # Honoured as by the close in progress: everything closes at once, then the
                # cancellation is raised.
                if self._state == "closing":
                    self._hurry()
                await uncancellable(settled.wait())
                raise
            return
        if self._state != "open":
            return
        assert self._writer is not None
        assert self._readers is not None
        self._state = "closing"
        self._settled = settled = asyncio.Event()
        closing = asyncio.ensure_future(self._close(self._writer, self._readers, settled))
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            self._hurry()
            await uncancellable(closing)
            raise

    def _hurry(self) -> None:
        """Cut the close in progress short: no more grace period, no checkpoint."""
        assert self._writer is not None
        assert self._readers is not None
        self._hurried = True
        self._writer.stop(interrupt=True)
        self._readers.stop()

    async def _close(self, writer: Writer, readers: ReaderPool, settled: asyncio.Event) -> None:
        try:
            deadline = asyncio.get_running_loop().time() + CLOSE_GRACE
            # return_exceptions: both end before the writer's connection closes, whatever
            # raises.
            ended = await asyncio.gather(
                writer.close(deadline), readers.close(deadline=deadline), return_exceptions=True
            )
            failed = [result for result in ended if isinstance(result, BaseException)]
            if not self._hurried and not failed:
                await self._checkpoint_on_close(writer)
            await writer.connection.close()
            if failed:
                raise failed[0]
        finally:
            # Only once every thread has ended may an open waiting for this close begin.
            self._settle("closed", settled)

    async def _checkpoint_on_close(self, writer: Writer) -> None:
        # Leave a small file behind: fold the WAL back in. Best effort: another process using
        # the database may keep it from finishing, which is harmless (SQLite finishes it later).
        busy = False
        try:
            self._last_checkpoint = await writer.connection.run(_checkpoint_on_close)
            busy = self._last_checkpoint.busy
        except Exception as exc:
            error = translate(exc, database=self.name) if isinstance(exc, sqlite3.Error) else exc
            busy = isinstance(error, DatabaseBusy)
            if not busy:
                log.warning("%s: the checkpoint at close failed: %s", self.name, error)
        if busy:
            log.info(
                "%s: the checkpoint at close could not finish while another process uses the "
                "database; SQLite finishes it later",
                self.name,
            )

    def __del__(self) -> None:
        if self._state in ("open", "opening"):
            warnings.warn(
                f"Database {self.name!r} ({self.path}) was never closed; use 'async with' or "
                "'await close()'",
                ResourceWarning,
                stacklevel=1,
            )

    # -- routing ---------------------------------------------------------------------------

    def _open_parts(self) -> tuple[Writer, ReaderPool]:
        if self._state != "open" or self._writer is None or self._readers is None:
            raise PoolClosed(f"{self.name}: the database is {self._state}")
        return self._writer, self._readers

    def _read(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> Awaitable[T]:
        # The pool's coroutine itself, not one wrapped around it: a point read is a few
        # microseconds of Python on the loop, and each layer of coroutine adds to it.
        tx = self._tasks.current()
        if tx is not None:
            return tx._read(fn, sql)
        return self._open_parts()[1].run(fn, sql)

    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], sql: str, *, atomic: bool = False
    ) -> T:
        tx = self._tasks.current()
        if tx is not None:
            return await tx._write(fn, sql)
        started = time.perf_counter()
        try:
            return await self._open_parts()[0].run(fn, sql, atomic=atomic)
        except StoreError as exc:
            self.metrics.count_error(exc)
            raise
        finally:
            self.metrics.record("write", time.perf_counter() - started)

    def _iterate(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        tx = self._tasks.current()
        if tx is not None:
            return tx._iterate(sql, parameters, chunk_size)
        return self._iterate_reader(sql, parameters, chunk_size)

    async def _iterate_reader(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        readers = self._open_parts()[1]
        connection = await readers.acquire()
        try:
            async for row in stream_rows(connection, sql, parameters, chunk_size, on_reader=True):
                yield row
        finally:
            await readers.release(connection)

    # -- transactions and snapshots ----------------------------------------------------------

    def transaction(self, *, force_rollback: bool = False) -> TransactionContext:
        """``async with db.transaction() as tx``: a transaction on the writer, begun with
        ``BEGIN IMMEDIATE`` (group-committed with the writes queued behind it). Its work commits
        when the block ends normally and is rolled back if the block raises or is cancelled.
        Inside a transaction, a nested ``transaction()`` is a SAVEPOINT.

        While the block is open every other write waits for it: entering raises
        :class:`PoolTimeout` if the writer did not become free within ``acquire_timeout``;
        with ``transaction_timeout`` set, a block held longer is rolled back and its next call
        (or its end) raises :class:`TransactionTimeout`."""
        return TransactionContext(
            self, self._tasks, lambda: self._open_parts()[0], force_rollback=force_rollback
        )

    def read(self) -> ReadContext:
        """``async with db.read() as snap``: one reader and one consistent snapshot for every
        query in the block (inside a transaction: the transaction itself)."""
        return ReadContext(self, self._tasks, lambda: self._open_parts()[1])

    async def run_in_transaction(
        self, fn: Callable[[sqlite3.Connection], T], label: str, *, atomic: bool = False
    ) -> T:
        """Run ``fn(sqlite3_connection)`` on the writer's thread as one transaction of a group
        commit (inside ``transaction()``: as part of it) and return its result once committed.
        An exception from ``fn`` rolls back its work alone and is raised, translated; ``label``
        names the work in error messages. For storage code built on the pool (the event store,
        repositories); ``fn`` must not manage transactions itself.

        ``atomic=True`` promises that an exception from ``fn`` leaves nothing to undo: it
        changes the database with one statement at most (reads before it are fine), or guards
        its statements with a savepoint of its own. The group commit then spares it the
        savepoint it would otherwise open around ``fn``."""
        return await self._write(fn, label, atomic=atomic)

    async def run_in_reader(self, fn: Callable[[sqlite3.Connection], T], label: str) -> T:
        """Run ``fn(sqlite3_connection)`` on a reader (inside ``transaction()``: on the
        transaction) and return its result; ``label`` names the work in error messages."""
        return await self._read(fn, label)

    async def run_on_writer(
        self, fn: Callable[[sqlite3.Connection], T], *, acquire_timeout: float | None = None
    ) -> T:
        """Run ``fn(sqlite3_connection)`` on the writer's thread, alone and outside any
        transaction the writer opened (for migrations and maintenance): ``fn`` manages its own
        transactions and must leave none open. ``sqlite3`` errors come back translated. A
        cursor returned by ``fn`` comes back as the list of its rows (it is closed on the
        writer's thread). Refused inside a ``transaction()`` block of this database, whose
        end it would wait for (so would the block, for it). :class:`PoolTimeout` when the
        writer did not take it within ``acquire_timeout`` seconds (default: the database's)."""
        writer = self._open_parts()[0]
        refuse_inside_transaction(
            [self], "work that needs the writer alone (run_on_writer, checkpoint, migrate, health)"
        )
        return await writer.run_exclusive(fn, acquire_timeout=acquire_timeout)

    async def checkpoint(
        self, mode: CheckpointMode = "PASSIVE", *, wait: bool = True, source: str = "manual"
    ) -> CheckpointResult:
        """Run ``PRAGMA wal_checkpoint(mode)`` on the writer, between transactions, and return
        (and remember as :attr:`last_checkpoint`) what it did. ``wait=False`` gives up at once
        (``busy`` in the result) instead of waiting up to busy_timeout for readers or other
        processes. ``source`` names the caller in health reports. Raises :class:`ConfigError`
        for a mode other than PASSIVE, FULL, RESTART or TRUNCATE, else :class:`StoreError`."""
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ConfigError(
                f"{self.name}: unknown checkpoint mode {mode!r}; "
                "the modes are PASSIVE, FULL, RESTART and TRUNCATE"
            )
        result = await self.run_on_writer(
            functools.partial(run_checkpoint, mode=mode, wait=wait, source=source)
        )
        self._last_checkpoint = result
        return result

    @property
    def last_checkpoint(self) -> CheckpointResult | None:
        """The newest checkpoint this database ran on purpose: after a backup, at close, or
        through :meth:`checkpoint` (SQLite's automatic checkpoints are not seen); ``None``
        before the first."""
        return self._last_checkpoint

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once the current task's work is committed: at the end of its
        ``transaction()`` block if the block commits (never if it rolls back), or at once
        outside a block. An exception from it is logged, not raised."""
        tx = self._tasks.current()
        if tx is not None:
            tx.after_commit(callback)
            return
        try:
            callback()
        except Exception:
            log.exception("%s: a callback after commit failed", self.name)

    # -- statistics --------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        """Whether the current task is inside a ``transaction()`` block of this database (its
        queries then run in that transaction)."""
        return self._tasks.current() is not None

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool and the writer; no I/O."""
        counters = self._counters
        readers, writer = self._readers, self._writer
        total = readers.total if readers is not None else 0
        limit = readers.limit if readers is not None else self._config.readers
        idle = readers.idle if readers is not None else 0
        batches = counters.batches
        return PoolStatistics(
            database=self.name,
            readers_total=total,
            readers_limit=limit,
            readers_busy=total - idle,
            readers_idle=idle,
            writer_queue_depth=writer.queue_depth if writer is not None else 0,
            batches=batches,
            transactions=counters.transactions,
            failed_transactions=counters.failed_transactions,
            mean_batch_size=(
                (counters.transactions + counters.failed_transactions) / batches if batches else 0.0
            ),
            largest_batch=counters.largest_batch,
            busy_retries=counters.busy_retries,
            acquire_waits=counters.acquire_waits,
            acquire_timeouts=counters.acquire_timeouts,
            transaction_timeouts=counters.transaction_timeouts,
            writer_hold=writer.hold() if writer is not None else None,
        )

    def __repr__(self) -> str:
        return f"<Database {self.name} {str(self.path)!r} {self._state}>"


def run_checkpoint(
    conn: sqlite3.Connection, *, mode: CheckpointMode, wait: bool, source: str
) -> CheckpointResult:
    """Runs on the writer's thread (also for health's probe). With ``wait=False``,
    busy_timeout 0: a checkpoint blocked by a reader gives up at once instead of stalling the
    writer."""
    timeout = None
    if not wait:
        timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute("PRAGMA busy_timeout = 0")
    try:
        busy, log_frames, checkpointed = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    finally:
        if timeout is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
    return CheckpointResult(
        busy=bool(busy),
        # -1 when the database is not in WAL mode: nothing to copy back.
        log_frames=max(log_frames, 0),
        checkpointed_frames=max(checkpointed, 0),
        mode=mode,
        source=source,
        at=datetime.now(UTC).isoformat(timespec="microseconds"),
    )


def _checkpoint_on_close(conn: sqlite3.Connection) -> CheckpointResult:
    try:
        conn.execute("PRAGMA optimize")
    except sqlite3.OperationalError:
        # Best effort too: the ANALYZE it may run needs the write lock, which another process
        # may hold past busy_timeout; a later close runs it.
        pass
    return run_checkpoint(conn, mode="TRUNCATE", wait=True, source="close")
