"""Every wait is bounded, on SQLite's one writer (the rest is in ``tests/contract/``): callers
waiting for a writer held by an open ``transaction()`` block give up with ``PoolTimeout`` and
leave nothing queued; the holder is named; a block held past ``transaction_timeout`` is rolled
back; a timeout or a cancellation around ``close()`` is honoured; a read queued behind a long read
gives up.

Each test that would hang on a regression waits under ``asyncio.timeout``, with bounds that fit
a machine several times slower than the one it was written on."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from async_store import (
    NewEvent,
    PoolClosed,
    PoolTimeout,
    SqlConfig,
    SqlService,
    StateManager,
    TransactionTimeout,
)
from async_store.health.probe import metrics_text
from async_store.sqlite import SqliteDatabase
from async_store.state import SettingSet
from tests.conftest import make_config, on_sqlite
from tests.contract.test_liveness import BOUND, SHORT, open_with_table_t
from tests.test_backup import transaction_held


@pytest.fixture
async def short(db_path: Path) -> AsyncIterator[SqliteDatabase]:
    """A database whose callers give up after SHORT seconds."""
    async with open_with_table_t(make_config(db_path, acquire_timeout=SHORT)) as database:
        assert isinstance(database, SqliteDatabase)
        yield database


# -- reproduction 1: a block held open -----------------------------------------------------


async def test_a_block_waiting_on_another_writer_ends_in_pool_timeout(
    short: SqliteDatabase,
) -> None:
    setup, done = asyncio.Event(), asyncio.Event()
    outcome: list[object] = []

    async def task_a() -> None:
        async with short.transaction():
            await short.execute("INSERT INTO t(x) VALUES (1)")
            setup.set()
            await done.wait()

    async def task_b() -> None:
        await setup.wait()
        try:
            async with short.transaction():
                outcome.append(await short.fetch_all("SELECT x FROM t"))
        except PoolTimeout as exc:
            outcome.append(exc)
        finally:
            done.set()

    async with asyncio.timeout(BOUND):
        await asyncio.gather(task_a(), task_b())
    assert len(outcome) == 1
    error = outcome[0]
    assert isinstance(error, PoolTimeout)
    assert isinstance(error, TimeoutError)
    assert "held by a transaction() block of task" in str(error)
    assert "INSERT INTO t(x) VALUES (1)" in str(error)
    stats = short.statistics()
    assert stats.writer_queue_depth == 0
    assert stats.acquire_timeouts == 1
    assert stats.writer_hold is None
    assert await short.fetch_val("SELECT count(*) FROM t") == 1


@pytest.mark.parametrize("kind", ["execute", "execute_many", "run_on_writer", "append"])
async def test_every_writer_call_gives_up_and_leaves_nothing_queued(
    tmp_path: Path, kind: str
) -> None:
    config = SqlConfig.mvp(tmp_path / "s.db", acquire_timeout=SHORT, readers=1)
    async with asyncio.timeout(BOUND), SqlService(config) as sql:
        db = sql.app
        await db.execute("CREATE TABLE t(x INTEGER)")
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "execute": lambda: db.execute("INSERT INTO t VALUES (1)"),
            "execute_many": lambda: db.execute_many("INSERT INTO t VALUES (?)", [(1,), (2,)]),
            "run_on_writer": lambda: on_sqlite(db).run_on_writer(_nothing),
            "append": lambda: sql.event_store.append("s", [NewEvent("E", {})]),
        }
        async with transaction_held(db):
            with pytest.raises(PoolTimeout, match="the work was withdrawn and did not run"):
                await calls[kind]()
            assert db.statistics().writer_queue_depth == 0
        # Nothing of the withdrawn call ran once the writer was free again.
        await db.execute("SELECT 1")
        assert await db.fetch_val("SELECT count(*) FROM t") == 0
        assert await db.fetch_val("SELECT count(*) FROM events") == 0


def _nothing(conn: sqlite3.Connection) -> None:
    pass


async def test_a_queued_caller_that_is_cancelled_is_withdrawn(short: SqliteDatabase) -> None:
    async with transaction_held(short):
        waiting = asyncio.ensure_future(short.execute("INSERT INTO t VALUES (5)"))
        await asyncio.sleep(0)
        assert short.statistics().writer_queue_depth == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert short.statistics().writer_queue_depth == 0
    assert await short.fetch_val("SELECT count(*) FROM t") == 0


# -- the holder, named -----------------------------------------------------------------------


async def test_statistics_and_health_name_the_holder_of_the_writer(tmp_path: Path) -> None:
    config = SqlConfig.mvp(tmp_path / "s.db", writer_hold_warning=0.05)
    async with asyncio.timeout(BOUND), SqlService(config) as sql:
        assert sql.app.statistics().writer_hold is None
        holding, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with sql.app.transaction() as tx:
                await tx.execute("INSERT INTO settings(key, value) VALUES ('k', '1')")
                holding.set()
                await release.wait()

        holder = asyncio.ensure_future(hold())
        holder.set_name("request-42")
        await holding.wait()
        await asyncio.sleep(0.1)
        hold_now = sql.app.statistics().writer_hold
        assert hold_now is not None
        assert (hold_now.kind, hold_now.task) == ("transaction", "request-42")
        assert hold_now.last_sql == "INSERT INTO settings(key, value) VALUES ('k', '1')"
        assert hold_now.held_seconds >= 0.05
        report = await sql.health()
        release.set()
        await holder
    assert report.status == "degraded"
    reason = next(r for r in report.reasons if "writer" in r)
    assert "request-42" in reason
    assert "INSERT INTO settings" in reason
    data = report.to_dict()["databases"]["app_meta"]["pool"]["writer_hold"]
    assert data["task"] == "request-42"
    assert data["kind"] == "transaction"
    assert 'async_store_writer_held_seconds{database="app_meta"}' in metrics_text(report)


# -- transaction_timeout ---------------------------------------------------------------------


async def test_a_block_held_past_transaction_timeout_is_rolled_back(db_path: Path) -> None:
    config = make_config(db_path, transaction_timeout=0.2, acquire_timeout=BOUND)
    async with asyncio.timeout(BOUND), SqliteDatabase(config) as db:
        await db.execute("CREATE TABLE t(x INTEGER)")
        inside, release = asyncio.Event(), asyncio.Event()

        async def slow() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (1)")
                inside.set()
                await release.wait()
                await tx.execute("INSERT INTO t VALUES (2)")

        slow_block = asyncio.ensure_future(slow())
        await inside.wait()
        # Queued behind the block: served once the writer rolls the block back.
        assert await db.execute("INSERT INTO t VALUES (3)") == 1
        assert [row[0] for row in await db.fetch_all("SELECT x FROM t")] == [3]
        release.set()
        with pytest.raises(TransactionTimeout, match="transaction_timeout"):
            await slow_block
        assert db.statistics().transaction_timeouts == 1
        assert [row[0] for row in await db.fetch_all("SELECT x FROM t")] == [3]


async def test_a_timed_out_block_that_raises_keeps_its_own_error(db_path: Path) -> None:
    config = make_config(db_path, transaction_timeout=0.1)
    async with asyncio.timeout(BOUND), SqliteDatabase(config) as db:
        with pytest.raises(ValueError, match="its own"):
            async with db.transaction():
                await asyncio.sleep(0.3)
                raise ValueError("its own")
        assert await db.execute("SELECT 1") == 0


# -- reproduction 2: close() with a block open -----------------------------------------------


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_timeout_or_cancellation_around_close_is_honoured(db_path: Path, how: str) -> None:
    db = SqliteDatabase(make_config(db_path))
    await db.open()
    context = db.transaction()
    await context.__aenter__()
    # From outside the block (this task is inside it now): queued behind it.
    queued = asyncio.get_running_loop().create_task(
        db.execute("SELECT 1"), context=contextvars.Context()
    )
    await asyncio.sleep(0)
    assert db.statistics().writer_queue_depth == 1
    writer = db._writer
    assert writer is not None
    thread = writer.connection._aio._thread
    loop = asyncio.get_running_loop()
    started = loop.time()
    if how == "timeout":
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await db.close()
    else:
        closing = asyncio.ensure_future(db.close())
        await asyncio.sleep(0.2)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
    # Well inside close's 5 s grace: the cancellation cut it short.
    assert loop.time() - started < 4.0
    assert not db.is_open
    with pytest.raises(PoolClosed):
        await queued
    with pytest.raises(PoolClosed):
        await context.__aexit__(None, None, None)
    await asyncio.to_thread(thread.join, BOUND)
    assert not thread.is_alive()
    await db.close()  # idempotent


# -- reads -----------------------------------------------------------------------------------

_LONG_READ = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000) "
    "SELECT count(*) FROM c"
)


async def test_a_read_queued_behind_a_long_read_gives_up(db_path: Path) -> None:
    config = make_config(db_path, readers=1, acquire_timeout=SHORT)
    async with asyncio.timeout(BOUND), SqliteDatabase(config) as db:
        long_read = asyncio.ensure_future(db.fetch_val(_LONG_READ))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolTimeout, match="behind the reads ahead of it"):
            await db.fetch_val("SELECT 1")
        assert db.statistics().acquire_timeouts == 1
        long_read.cancel()  # interrupted on the reader's thread
        with pytest.raises(asyncio.CancelledError):
            await long_read
        assert await db.fetch_val("SELECT 2") == 2


async def test_the_service_closes_with_blocks_open_on_both_databases(tmp_path: Path) -> None:
    sql = SqlService(SqlConfig.in_directory(tmp_path / "data"))
    await sql.start()
    app_block, events_block = sql.app.transaction(), sql.events.transaction()
    await app_block.__aenter__()
    await events_block.__aenter__()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await sql.close()
    assert loop.time() - started < 4.0
    # Both databases closed to their end before close() raised: none is left closing behind
    # the caller's back (it would outlive its event loop, a thread then finding it closed).
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []
    assert not sql.app.is_open
    assert not sql.events.is_open
    for block in (events_block, app_block):
        with pytest.raises(PoolClosed):
            await block.__aexit__(None, None, None)


async def test_a_mutation_gives_up_while_a_block_holds_the_events_writer(tmp_path: Path) -> None:
    config = SqlConfig.in_directory(tmp_path / "data", acquire_timeout=SHORT)
    async with asyncio.timeout(BOUND), SqlService(config) as sql, StateManager(sql) as state:
        async with transaction_held(sql.events):
            with pytest.raises(PoolTimeout, match="withdrawn"):
                await state.mutate(SettingSet("theme", "dark"))
            assert "theme" not in state.read_state().settings
        assert await state.mutate(SettingSet("theme", "light")) == 1
        assert state.read_state().settings["theme"] == "light"
