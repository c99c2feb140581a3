"""Cancellation safety.

A task cancelled inside ``transaction()`` or ``read()`` -- by asyncio or by an anyio cancel scope,
once or twice -- leaves no open transaction, no write lock and no lost pool slot; a long read is
interrupted; the next caller proceeds at once.

Every test ends with :func:`assert_nothing_left_behind`: another connection takes the write lock
with ``timeout=0`` (a leftover lock fails at once instead of being waited for), no reader is
missing from the pool, nothing is queued behind the writer, and a write followed by a read on
every reader at once succeeds and is seen by each reader (a reader left inside an old read
transaction would not see it).

Tests wait by polling conditions and never assert how long anything took: pytest-timeout catches
a hang (a long read that is not interrupted runs for minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sqlite3
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from async_store import Row, StoreError
from async_store.sqlite import SqliteDatabase
from tests.conftest import make_config

INSERT = "INSERT INTO items(name) VALUES (?)"

LONG_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT count(*) FROM c"
)
"""Minutes of work for SQLite: it ends in a test only if it is interrupted."""

SLOW_FIRST_ROW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT x FROM c WHERE x % 999999999 = 0"
)
"""A query whose first row takes minutes: ``iterate()`` waits in its first hop."""

SLOW_WRITE = (
    "INSERT INTO items(name) SELECT 'bulk-' || x FROM ("
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
    "SELECT x FROM c)"
)
"""A write statement that keeps the writer's thread busy for a moment (writes are never
interrupted: the writer waits for the statement, then rolls it back)."""

_markers = itertools.count()


# -- helpers --------------------------------------------------------------------------------


def names(raw: sqlite3.Connection) -> set[str]:
    """The names committed to ``items``, read by an independent connection."""
    return {row[0] for row in raw.execute("SELECT name FROM items")}


def assert_no_write_lock(db_path: Path) -> None:
    """Another connection takes the write lock at once (``timeout=0``: no waiting)."""
    probe = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    finally:
        probe.close()


async def until(condition: Callable[[], bool], task: asyncio.Task[Any] | None = None) -> None:
    """Poll ``condition``; fail at once if ``task`` ends first (the condition would never hold
    and the test would only hit its timeout)."""
    while not condition():
        if task is not None and task.done():
            task.result()
            raise AssertionError("the task ended before reaching the point of cancellation")
        await asyncio.sleep(0.001)


async def let_the_thread_start() -> None:
    """Let a reader's thread start the statement its caller just submitted, so that the
    cancellation lands on a *running* statement, which must be interrupted. (A statement still
    queued when its caller is cancelled must be skipped instead:
    ``test_read_cancelled_before_its_statement_starts_never_runs``.) A real sleep, unlike
    ``sleep(0)``, makes the event loop wait in ``select()``, which releases the GIL.
    """
    await asyncio.sleep(0.05)


def all_readers_idle(db: SqliteDatabase) -> bool:
    stats = db.statistics()
    return stats.readers_idle == stats.readers_total


async def every_reader_sees(db: SqliteDatabase, name: str) -> None:
    """Lend every reader at once (so each query below runs on a different reader) and check
    each one sees the committed row ``name``."""
    total = max(1, db.statistics().readers_total)  # readers open on demand: maybe none yet
    barrier = asyncio.Barrier(total)

    async def look() -> int:
        async with db.read() as snap:
            await barrier.wait()
            count: int = await snap.fetch_val("SELECT count(*) FROM items WHERE name = ?", (name,))
            return count

    # A task group, not gather(): if one look fails, the others must not wait at the barrier.
    async with asyncio.TaskGroup() as group:
        looks = [group.create_task(look()) for _ in range(total)]
    assert [task.result() for task in looks] == [1] * total


async def assert_nothing_left_behind(db: SqliteDatabase, db_path: Path) -> None:
    """No write lock, no lost reader, nothing queued; the next write and reads go through."""
    # A cancelled caller's work that had reached the writer still commits after the caller
    # has gone; a no-op queued behind it (FIFO) returns once that is done. A transaction left
    # open on the writer would outlive it and hold the lock the probe then asks for.
    await db.run_on_writer(lambda conn: None)
    assert_no_write_lock(db_path)
    stats = db.statistics()
    assert stats.readers_idle == stats.readers_total
    assert stats.writer_queue_depth == 0
    marker = f"after-{next(_markers)}"
    await db.execute(INSERT, (marker,))
    assert_no_write_lock(db_path)
    await every_reader_sees(db, marker)
    assert await db.fetch_val("SELECT 1") == 1


# -- how the cancellation is delivered ------------------------------------------------------


@dataclass(frozen=True)
class Victim:
    """What a test cancels. ``run`` is the work of the cancelled task and sets ``point`` when it
    gets to the line where the cancellation should land; ``reached`` returns once it is there
    (``point`` set, plus whatever the scenario needs: queued behind the writer, a statement
    started on its thread)."""

    run: Callable[[], Coroutine[Any, Any, None]]
    point: asyncio.Event
    reached: Callable[[asyncio.Task[None]], Awaitable[None]]


Canceller = Callable[[Victim], Awaitable[None]]


async def asyncio_cancel(victim: Victim) -> None:
    task = asyncio.create_task(victim.run())
    await victim.reached(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def asyncio_cancel_twice(victim: Victim) -> None:
    task = asyncio.create_task(victim.run())
    await victim.reached(task)
    task.cancel()
    await asyncio.sleep(0)  # the task starts unwinding: rolling back, resetting its reader
    if not task.done():  # a job only queued behind the writer unwinds without awaiting
        assert task.cancel(), "the second cancellation should land while the task unwinds"
    with pytest.raises(asyncio.CancelledError):
        await task


async def anyio_move_on_after(victim: Victim) -> None:
    scopes: list[anyio.CancelScope] = []

    async def guarded() -> None:
        # The deadline is brought forward to now once the victim is at its point: it expires
        # there, as a deadline does, however long the victim took to get there (a fixed 50 ms
        # was too short on a busy machine).
        with anyio.move_on_after(60) as scope:
            scopes.append(scope)
            await victim.run()
        assert scope.cancelled_caught

    task = asyncio.create_task(guarded())
    await victim.reached(task)
    scopes[0].deadline = anyio.current_time()
    await task


async def anyio_scope_cancelled_by_another_task(victim: Victim) -> None:
    scopes: list[anyio.CancelScope] = []

    async def guarded() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await victim.run()
        assert scope.cancelled_caught

    task = asyncio.create_task(guarded())
    await victim.reached(task)
    scopes[0].cancel()
    await task


CANCELLERS = [
    pytest.param(asyncio_cancel, id="asyncio-cancel"),
    pytest.param(asyncio_cancel_twice, id="asyncio-cancel-twice"),
    pytest.param(anyio_move_on_after, id="anyio-move-on-after"),
    pytest.param(anyio_scope_cancelled_by_another_task, id="anyio-scope-cancel"),
]


# -- transactions ---------------------------------------------------------------------------


class Blocker:
    """A transaction another task keeps open until :meth:`commit`: write work queues behind it."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._inside = asyncio.Event()
        self._release = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Blocker:
        self._task = asyncio.create_task(self._hold())
        await until(self._inside.is_set, self._task)
        return self

    async def _hold(self) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(INSERT, ("blocker",))
            self._inside.set()
            await self._release.wait()

    @property
    def is_open(self) -> bool:
        return self._task is not None and not self._task.done()

    async def commit(self) -> None:
        assert self._task is not None
        self._release.set()
        await self._task

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def inside_transaction(db: SqliteDatabase, point: asyncio.Event) -> None:
    async with db.transaction() as tx:
        await tx.execute(INSERT, ("victim",))
        point.set()
        await anyio.sleep_forever()


async def inside_savepoint(db: SqliteDatabase, point: asyncio.Event) -> None:
    async with db.transaction() as tx:
        await tx.execute(INSERT, ("outer",))
        async with tx.transaction() as nested:
            await nested.execute(INSERT, ("inner",))
            point.set()
            await anyio.sleep_forever()


async def during_statement(db: SqliteDatabase, point: asyncio.Event) -> None:
    async with db.transaction() as tx:
        await tx.execute(INSERT, ("victim",))
        point.set()
        await tx.execute(SLOW_WRITE)  # submitted before the test gets to cancel
        await anyio.sleep_forever()


async def iterating_in_transaction(db: SqliteDatabase, point: asyncio.Event) -> None:
    async with db.transaction() as tx:
        await tx.execute(INSERT, ("victim",))
        async for _row in tx.iterate("SELECT name FROM items"):
            point.set()  # cancelled while holding a cursor open on the writer
            await anyio.sleep_forever()


async def waiting_for_writer(db: SqliteDatabase, point: asyncio.Event) -> None:
    point.set()
    async with db.transaction() as tx:  # queued behind the Blocker's open transaction
        await tx.execute(INSERT, ("victim",))
        await anyio.sleep_forever()


async def execute_waiting_for_writer(db: SqliteDatabase, point: asyncio.Event) -> None:
    point.set()
    await db.execute(INSERT, ("victim",))  # queued behind the Blocker's open transaction
    await anyio.sleep_forever()


@dataclass(frozen=True)
class TxScenario:
    body: Callable[[SqliteDatabase, asyncio.Event], Coroutine[Any, Any, None]]
    written: frozenset[str]
    """Rows the cancelled work wrote or meant to write: none may survive."""
    blocked: bool = False
    """The victim waits in the writer's queue behind a :class:`Blocker`."""


TX_SCENARIOS = [
    pytest.param(TxScenario(inside_transaction, frozenset({"victim"})), id="inside-transaction"),
    # Documented behaviour: the cancellation leaves the nested block as CancelledError, so it
    # propagates out of the outer block too, and the outer transaction's work before the
    # savepoint is rolled back with it.
    pytest.param(
        TxScenario(inside_savepoint, frozenset({"outer", "inner"})), id="cancel-inside-savepoint"
    ),
    pytest.param(
        TxScenario(during_statement, frozenset({"victim", "bulk-1", "bulk-100000"})),
        id="during-write-statement",
    ),
    pytest.param(
        TxScenario(iterating_in_transaction, frozenset({"victim"})),
        id="iterating-inside-transaction",
    ),
    pytest.param(
        TxScenario(waiting_for_writer, frozenset({"victim"}), blocked=True),
        id="waiting-in-writer-queue",
    ),
    pytest.param(
        TxScenario(execute_waiting_for_writer, frozenset({"victim"}), blocked=True),
        id="execute-waiting-in-writer-queue",
    ),
]


@pytest.mark.parametrize("cancel", CANCELLERS)
@pytest.mark.parametrize("scenario", TX_SCENARIOS)
async def test_cancelled_transaction_leaves_nothing_behind(
    db: SqliteDatabase,
    db_path: Path,
    raw: sqlite3.Connection,
    scenario: TxScenario,
    cancel: Canceller,
) -> None:
    point = asyncio.Event()

    async def reached(task: asyncio.Task[None]) -> None:
        await until(point.is_set, task)
        if scenario.blocked:
            await until(lambda: db.statistics().writer_queue_depth >= 1, task)

    victim = Victim(lambda: scenario.body(db, point), point, reached)
    async with contextlib.AsyncExitStack() as stack:
        blocker = await stack.enter_async_context(Blocker(db)) if scenario.blocked else None
        await cancel(victim)
        if blocker is not None:
            # The cancelled waiter did not disturb the transaction ahead of it...
            assert blocker.is_open
            await blocker.commit()
            # ...which commits, while the abandoned job is skipped.
            assert "blocker" in names(raw)

    assert names(raw) & scenario.written == set()
    await assert_nothing_left_behind(db, db_path)


@pytest.mark.parametrize("cancel", CANCELLERS)
async def test_cancelled_transaction_does_not_disturb_work_queued_behind_it(
    db: SqliteDatabase, db_path: Path, raw: sqlite3.Connection, cancel: Canceller
) -> None:
    """Work queued behind a transaction joins its group commit; the cancelled block's savepoint
    is rolled back alone and the queued work commits."""
    point = asyncio.Event()
    queued: list[asyncio.Task[None]] = []

    async def queued_transaction() -> None:
        async with db.transaction() as tx:
            await tx.execute(INSERT, ("queued-transaction",))

    async def queued_execute() -> None:
        await db.execute(INSERT, ("queued-execute",))

    async def reached(task: asyncio.Task[None]) -> None:
        await until(point.is_set, task)
        # Created here, not inside the victim's block: a task inherits the context it is
        # created in, and with it the victim's transaction.
        queued.extend(asyncio.create_task(work()) for work in (queued_transaction, queued_execute))
        await until(lambda: db.statistics().writer_queue_depth == 2, task)

    await cancel(Victim(lambda: inside_transaction(db, point), point, reached))
    assert len(queued) == 2
    await asyncio.gather(*queued)
    assert names(raw) == {"queued-transaction", "queued-execute"}
    await assert_nothing_left_behind(db, db_path)


async def test_statement_cancelled_inside_a_transaction_is_not_committed(
    db: SqliteDatabase, raw: sqlite3.Connection
) -> None:
    with contextlib.suppress(StoreError):  # a fix may refuse to commit the block instead
        async with db.transaction() as tx:
            with anyio.CancelScope() as scope:
                # Cancelled one loop iteration after the statement went to the writer's thread,
                # far sooner than its 100,000 rows take.
                asyncio.get_running_loop().call_soon(scope.cancel)
                await tx.execute(SLOW_WRITE)
            assert scope.cancelled_caught
            await tx.execute(INSERT, ("after",))
    assert "bulk-1" not in names(raw)


@contextlib.asynccontextmanager
async def asyncio_timeout_scope() -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(0.05):
            yield
    except TimeoutError:
        return
    raise AssertionError("the timeout did not expire")


@contextlib.asynccontextmanager
async def anyio_move_on_after_scope() -> AsyncIterator[None]:
    with anyio.move_on_after(0.05) as scope:
        yield
    assert scope.cancelled_caught


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(asyncio_timeout_scope, id="asyncio-timeout"),
        pytest.param(anyio_move_on_after_scope, id="anyio-move-on-after"),
    ],
)
async def test_cancel_scope_inside_a_transaction_undoes_only_its_savepoint(
    db: SqliteDatabase,
    db_path: Path,
    raw: sqlite3.Connection,
    scope: Callable[[], contextlib.AbstractAsyncContextManager[None]],
) -> None:
    """A cancellation caught inside the transaction (a timeout around a nested block) rolls back
    the savepoint alone; the outer transaction goes on and commits."""
    async with db.transaction() as tx:
        await tx.execute(INSERT, ("before",))
        async with scope(), tx.transaction() as nested:
            await nested.execute(INSERT, ("inner",))
            await anyio.sleep_forever()
        await tx.execute(INSERT, ("after",))
        assert await tx.fetch_val("SELECT count(*) FROM items WHERE name = 'inner'") == 0
    assert {"before", "after"} <= names(raw)
    assert "inner" not in names(raw)
    await assert_nothing_left_behind(db, db_path)


# -- reads ----------------------------------------------------------------------------------


async def long_query_in_read_block(db: SqliteDatabase, point: asyncio.Event) -> None:
    async with db.read() as snap:
        assert await snap.fetch_val("SELECT 1") == 1
        point.set()
        await snap.fetch_val(LONG_QUERY)
    raise AssertionError("the long query was not interrupted")


async def long_query_on_pool(db: SqliteDatabase, point: asyncio.Event) -> None:
    point.set()
    await db.fetch_val(LONG_QUERY)
    raise AssertionError("the long query was not interrupted")


async def long_first_row_of_iterate(db: SqliteDatabase, point: asyncio.Event) -> None:
    point.set()
    async for _row in db.iterate(SLOW_FIRST_ROW):
        break
    raise AssertionError("the long query was not interrupted")


async def long_iterate_in_read_block(db: SqliteDatabase, point: asyncio.Event) -> None:
    async with db.read() as snap:
        point.set()
        async for _row in snap.iterate(SLOW_FIRST_ROW):
            break
    raise AssertionError("the long query was not interrupted")


async def read_block_holding_a_cursor(db: SqliteDatabase, point: asyncio.Event) -> None:
    async with db.read() as snap:
        async for _row in snap.iterate("SELECT name FROM items"):
            point.set()  # between two rows: the cursor is open, no statement runs
            await anyio.sleep_forever()


READ_BODIES = [
    pytest.param(long_query_in_read_block, id="read-block"),
    pytest.param(long_query_on_pool, id="fetch-val-no-read-block"),
    pytest.param(long_first_row_of_iterate, id="iterate-first-row"),
    pytest.param(long_iterate_in_read_block, id="iterate-in-read-block"),
    pytest.param(read_block_holding_a_cursor, id="read-block-holding-iterate-cursor"),
]


@pytest.mark.parametrize("cancel", CANCELLERS)
@pytest.mark.parametrize("body", READ_BODIES)
async def test_cancelled_read_leaves_nothing_behind(
    db: SqliteDatabase,
    db_path: Path,
    body: Callable[[SqliteDatabase, asyncio.Event], Coroutine[Any, Any, None]],
    cancel: Canceller,
) -> None:
    # More rows than iterate() fetches per hop, so a cursor stays open between two rows.
    await db.execute_many(INSERT, [(f"row-{i:04}",) for i in range(1000)])
    point = asyncio.Event()

    async def reached(task: asyncio.Task[None]) -> None:
        await until(point.is_set, task)
        await let_the_thread_start()

    await cancel(Victim(lambda: body(db, point), point, reached))
    # Proof of the interruption: the reads below use every reader, and would queue for minutes
    # behind a long query left running on one of them.
    await assert_nothing_left_behind(db, db_path)


async def test_error_in_read_block_holding_an_iterate_cursor(
    db: SqliteDatabase, db_path: Path
) -> None:
    """Not a cancellation, the same clean-up path: the block's own error must come out, and the
    reader must come back clean."""
    await db.execute_many(INSERT, [(f"row-{i:04}",) for i in range(1000)])
    with pytest.raises(ValueError, match="boom"):
        async with db.read() as snap:
            async for _row in snap.iterate("SELECT name FROM items"):
                raise ValueError("boom")
    await assert_nothing_left_behind(db, db_path)


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param(asyncio_timeout_scope, id="asyncio-timeout"),
        pytest.param(anyio_move_on_after_scope, id="anyio-move-on-after"),
    ],
)
async def test_timeout_inside_read_block_keeps_its_snapshot(
    db: SqliteDatabase,
    db_path: Path,
    raw: sqlite3.Connection,
    scope: Callable[[], contextlib.AbstractAsyncContextManager[None]],
) -> None:
    """A long query interrupted by a timeout caught inside ``read()``: the block goes on, in
    the same snapshot."""
    await db.execute(INSERT, ("before",))
    async with db.read() as snap:
        assert await snap.fetch_val("SELECT count(*) FROM items") == 1
        raw.execute(INSERT, ("committed-meanwhile",))
        async with scope():
            await snap.fetch_val(LONG_QUERY)
        assert await snap.fetch_val("SELECT count(*) FROM items") == 1
    assert await db.fetch_val("SELECT count(*) FROM items") == 2
    await assert_nothing_left_behind(db, db_path)


async def test_fetch_all_under_asyncio_timeout(db: SqliteDatabase, db_path: Path) -> None:
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.05):
            await db.fetch_all(LONG_QUERY)
    assert type(caught.value) is TimeoutError  # the caller's own timeout, not a PoolTimeout
    await assert_nothing_left_behind(db, db_path)


async def test_read_cancelled_before_its_statement_starts_never_runs(db_path: Path) -> None:
    """Two long one-statement reads on a single reader: the second queues on the reader's thread
    behind the first (reads are pipelined) and is cancelled before it starts. It must be skipped
    or stopped at once: ``sqlite3_interrupt()`` alone does nothing to a statement not yet running,
    and the next read would then wait minutes behind it."""
    async with SqliteDatabase(make_config(db_path, readers=1)) as db:
        await db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        first = asyncio.create_task(db.fetch_val(LONG_QUERY))
        second = asyncio.create_task(db.fetch_val(LONG_QUERY))
        await until(lambda: db.statistics().readers_busy == 1, first)
        await let_the_thread_start()  # the first runs; the second cannot start before it ends
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await db.fetch_val("SELECT 1") == 1
        await assert_nothing_left_behind(db, db_path)


async def test_a_read_cancelled_while_its_group_runs_is_stopped_and_the_group_goes_on(
    db_path: Path,
) -> None:
    """Reads that queue behind a busy reader go to its thread together, as one call. The long
    one at the head of such a group, cancelled while it runs, is interrupted, and the reads
    behind it in the group still get their answers."""
    async with SqliteDatabase(make_config(db_path, readers=1)) as db:
        await db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
        started, gate = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            started.set()
            gate.wait(30)

        running = threading.Event()

        def long_read(conn: sqlite3.Connection) -> object:
            running.set()
            return conn.execute(LONG_QUERY).fetchone()

        holder = asyncio.create_task(db.run_in_reader(hold, "hold"))
        await until(started.is_set, holder)
        long = asyncio.create_task(db.run_in_reader(long_read, "long read"))
        behind = [asyncio.create_task(db.fetch_val("SELECT ?", (i,))) for i in range(5)]
        await asyncio.sleep(0)  # all six wait for the reader
        gate.set()
        await holder
        await until(running.is_set, long)  # the group has gone; the long read runs
        assert not any(task.done() for task in behind)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        assert [await task for task in behind] == list(range(5))
        await assert_nothing_left_behind(db, db_path)


async def test_read_cancelled_right_after_submission(db: SqliteDatabase, db_path: Path) -> None:
    """Cancelled in the loop iteration after it submitted its query, before the reader's thread
    could get the GIL to start it (with the first pool, which relied on ``sqlite3_interrupt()``,
    this left the query running for minutes in 4 tries out of 4)."""
    for _ in range(20):
        task = asyncio.create_task(db.fetch_val(LONG_QUERY))
        await asyncio.sleep(0)  # the task submits its query
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.fetch_val("SELECT 1") == 1
    await assert_nothing_left_behind(db, db_path)


# -- iterate() abandoned --------------------------------------------------------------------


@pytest.fixture
async def ten_thousand_rows(db: SqliteDatabase) -> SqliteDatabase:
    await db.execute_many(INSERT, [(f"row-{i:05}",) for i in range(10_000)])
    return db


def as_generator(rows: AsyncIterator[Row]) -> AsyncGenerator[Row, None]:
    """``iterate()`` is typed as an ``AsyncIterator``; ``aclosing`` needs its ``aclose()``."""
    assert isinstance(rows, AsyncGenerator)
    return rows


async def test_iterate_left_by_break_returns_its_reader(
    ten_thousand_rows: SqliteDatabase, db_path: Path
) -> None:
    """A plain ``break`` out of ``async for`` (no ``aclosing``): the abandoned generator is
    closed by asyncio's async-generator finaliser a few loop iterations later, which returns
    the reader."""
    db = ten_thousand_rows
    seen = 0
    async for _row in db.iterate("SELECT name FROM items ORDER BY id"):
        seen += 1
        if seen == 5:
            break
    # Not at once: asyncio's async-generator finaliser schedules the generator's aclose() when
    # the abandoned iterator is dropped, and the reader's reset takes a hop to its thread.
    await until(lambda: all_readers_idle(db))
    await assert_nothing_left_behind(db, db_path)


async def test_iterate_closed_by_aclosing_returns_its_reader_at_once(
    ten_thousand_rows: SqliteDatabase, db_path: Path
) -> None:
    db = ten_thousand_rows
    seen = 0
    async with contextlib.aclosing(
        as_generator(db.iterate("SELECT name FROM items ORDER BY id"))
    ) as rows:
        async for _row in rows:
            seen += 1
            if seen == 5:
                break
    assert all_readers_idle(db)  # at once: aclose() ran the generator's clean-up
    await assert_nothing_left_behind(db, db_path)


@pytest.mark.parametrize(
    "closing", [pytest.param(False, id="plain"), pytest.param(True, id="aclosing")]
)
@pytest.mark.parametrize("cancel", CANCELLERS)
async def test_iterate_cancelled_midway_returns_its_reader(
    ten_thousand_rows: SqliteDatabase, db_path: Path, cancel: Canceller, closing: bool
) -> None:
    """The consumer is cancelled while it holds the iterator between two rows."""
    db = ten_thousand_rows
    point = asyncio.Event()

    async def consume() -> None:
        rows = db.iterate("SELECT name FROM items ORDER BY id")
        async with contextlib.AsyncExitStack() as stack:
            if closing:
                rows = await stack.enter_async_context(contextlib.aclosing(as_generator(rows)))
            seen = 0
            async for _row in rows:
                seen += 1
                if seen == 300:  # past the first chunk of rows
                    point.set()
                    await anyio.sleep_forever()

    async def reached(task: asyncio.Task[None]) -> None:
        await until(point.is_set, task)

    await cancel(Victim(consume, point, reached))
    if closing:
        assert all_readers_idle(db)
    else:
        await until(lambda: all_readers_idle(db))  # once the finaliser closed the generator
    await assert_nothing_left_behind(db, db_path)


# -- many tasks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how", [pytest.param("asyncio", id="asyncio-cancel"), pytest.param("anyio", id="anyio-scope")]
)
@pytest.mark.parametrize("seed", [pytest.param(seed, id=f"seed-{seed}") for seed in (1, 2, 3)])
async def test_random_cancellations_among_busy_writers(
    db: SqliteDatabase, db_path: Path, raw: sqlite3.Connection, seed: int, how: str
) -> None:
    """50 tasks write while 20 others (execute, transaction(), read() or fetch_val, chosen at
    random) are cancelled at random points: every write whose call returned is durable, the
    file is sound and no slot is lost."""
    rng = random.Random(seed)
    returned: set[str] = set()

    async def writer(i: int) -> None:
        for j in range(10):
            name = f"w{i}-{j}"
            await db.execute(INSERT, (name,))
            returned.add(name)

    async def victim_work(k: int) -> None:
        for j in itertools.count():
            name = f"v{k}-{j}"
            kind = rng.choice(("execute", "transaction", "read", "fetch"))
            if kind == "execute":
                await db.execute(INSERT, (name,))
                returned.add(name)
            elif kind == "transaction":
                async with db.transaction() as tx:
                    await tx.execute(INSERT, (name,))
                    await tx.fetch_val("SELECT count(*) FROM items")
                returned.add(name)
            elif kind == "read":
                async with db.read() as snap:
                    await snap.fetch_val("SELECT count(*) FROM items")
            else:
                await db.fetch_val("SELECT count(*) FROM items")

    scopes: dict[int, anyio.CancelScope] = {}

    async def victim(k: int) -> None:
        if how == "asyncio":
            await victim_work(k)
            return
        with anyio.CancelScope() as scope:
            scopes[k] = scope
            await victim_work(k)

    writers = [asyncio.create_task(writer(i)) for i in range(50)]
    victims = [asyncio.create_task(victim(k)) for k in range(20)]
    for k, task in enumerate(victims):
        for _ in range(rng.randint(0, 60)):
            await asyncio.sleep(0)
        if how == "asyncio":
            task.cancel()  # possibly before it even started
        else:
            await until(lambda: k in scopes)  # noqa: B023 (awaited before k changes)
            scopes[k].cancel()
    await asyncio.gather(*writers)
    outcomes = await asyncio.gather(*victims, return_exceptions=True)
    for outcome in outcomes:
        if how == "asyncio":
            assert isinstance(outcome, asyncio.CancelledError)
        else:
            assert outcome is None

    assert returned <= names(raw)
    assert {f"w{i}-{j}" for i in range(50) for j in range(10)} <= returned
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    await assert_nothing_left_behind(db, db_path)


async def read_on_pool(db: SqliteDatabase) -> None:
    await db.fetch_val(LONG_QUERY)


async def read_in_block(db: SqliteDatabase) -> None:
    async with db.read() as snap:
        await snap.fetch_val(LONG_QUERY)


@pytest.mark.parametrize(
    "read",
    [pytest.param(read_on_pool, id="fetch-val"), pytest.param(read_in_block, id="read-block")],
)
async def test_cancelled_readers_lose_no_pool_slot(
    db: SqliteDatabase, db_path: Path, read: Callable[[SqliteDatabase], Coroutine[Any, Any, None]]
) -> None:
    """20 concurrent long reads on a pool of 2, all cancelled mid-query. One-statement reads
    are pipelined onto the readers' threads (each runs one, the others queue behind it);
    ``read()`` blocks reserve a reader, so two run and 18 wait for one."""
    assert db.statistics().readers_limit == 2
    tasks = [asyncio.create_task(read(db)) for _ in range(20)]
    await until(lambda: db.statistics().readers_idle == 0)
    await let_the_thread_start()  # every task has submitted its query or is waiting for a reader
    assert not any(task.done() for task in tasks)
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)

    stats = db.statistics()
    # Readers open on demand: one or both may be open by now, and every one is idle.
    assert stats.readers_total in (1, 2)
    assert (stats.readers_idle, stats.readers_busy) == (stats.readers_total, 0)
    both_inside = asyncio.Barrier(2)

    async def hold_a_reader() -> int:
        async with db.read() as snap:
            await both_inside.wait()  # two read() blocks at once: both slots are there
            value: int = await snap.fetch_val("SELECT 1")
            return value

    async with asyncio.TaskGroup() as group:  # a lost slot fails one, which cancels the other
        holds = [group.create_task(hold_a_reader()) for _ in range(2)]
    assert [task.result() for task in holds] == [1, 1]
    await assert_nothing_left_behind(db, db_path)
