"""SQLite's side of a database opened again after ``close()``: a reopen runs on a new writer
thread and new readers, and an open and a close that race (or a close cancelled while it waits
for an open) leave no thread behind. The behaviour every backend shares is in
``tests/contract/test_lifecycle.py``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from async_store import PoolClosed
from async_store.sqlite import SqliteDatabase
from tests.conftest import make_config
from tests.contract.test_database import BOUND
from tests.test_database import until


async def threads_end(before: set[threading.Thread]) -> None:
    """Wait (bounded) until no thread started since ``before`` is alive: a connection's thread
    ends just after its close returns."""

    def ended() -> bool:
        return not {thread for thread in threading.enumerate() if thread.is_alive()} - before

    async with asyncio.timeout(BOUND):
        await until(ended)


def current_thread(_conn: object) -> threading.Thread:
    return threading.current_thread()


async def test_a_reopen_runs_on_new_threads_and_leaves_none_behind(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    db = SqliteDatabase(make_config(tmp_path / "x.db", readers=2))
    seen: list[threading.Thread] = []
    for _ in range(3):
        async with db:
            writer = await db.run_on_writer(current_thread)
            reader = await db.run_in_reader(current_thread, "which thread")
            assert writer not in seen
            assert reader not in seen
            seen += [writer, reader]
            assert db.statistics().readers_total >= 1
        await threads_end(before)
        assert not writer.is_alive()
        assert not reader.is_alive()


async def test_opens_and_closes_that_race_leave_no_thread_behind(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    db = SqliteDatabase(make_config(tmp_path / "x.db"))
    async with asyncio.timeout(BOUND):
        for _ in range(3):
            await db.open()
            await db.fetch_val("SELECT 1")
            closing = asyncio.ensure_future(db.close())
            await asyncio.sleep(0)
            await db.open()  # after the close
            await closing
            assert db.is_open
            opening = asyncio.ensure_future(db.open())
            await asyncio.sleep(0)
            await asyncio.gather(db.close(), db.close())
            await opening  # already open: nothing to end
            assert not db.is_open
            opening = asyncio.ensure_future(db.open())
            await asyncio.sleep(0)
            await db.close()
            with pytest.raises(PoolClosed):
                await opening
    await threads_end(before)


async def test_a_close_cancelled_while_it_waits_for_an_open_still_closes(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    db = SqliteDatabase(make_config(tmp_path / "x.db"))
    async with asyncio.timeout(BOUND):
        opening = asyncio.ensure_future(db.open())
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(db.close())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        with pytest.raises(PoolClosed, match="closed while it opened"):
            await opening
    assert not db.is_open
    await threads_end(before)


async def test_a_block_cut_short_by_close_stays_closed_after_a_reopen(tmp_path: Path) -> None:
    """The block's task keeps its transaction: after the reopen its calls still get
    PoolClosed instead of running outside the block, while other tasks use the new writer."""
    db = SqliteDatabase(make_config(tmp_path / "x.db"))
    await db.open()
    await db.execute("CREATE TABLE t(x)")
    entered, resume = asyncio.Event(), asyncio.Event()

    async def block() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            entered.set()
            await resume.wait()
            with pytest.raises(PoolClosed):
                await db.execute("INSERT INTO t VALUES (2)")
            with pytest.raises(PoolClosed):
                await tx.execute("INSERT INTO t VALUES (3)")

    async with asyncio.timeout(BOUND):
        task = asyncio.ensure_future(block())
        await entered.wait()
        closing = asyncio.ensure_future(db.close())
        await asyncio.sleep(0.05)
        closing.cancel()  # cut the grace period short: the block is rolled back
        with pytest.raises(asyncio.CancelledError):
            await closing
        await db.open()
        try:
            await db.execute("INSERT INTO t VALUES (4)")
            resume.set()
            with pytest.raises(PoolClosed):
                await task
            assert [tuple(row) for row in await db.fetch_all("SELECT x FROM t")] == [(4,)]
        finally:
            await db.close()


async def test_a_second_close_cancelled_cuts_the_first_short(tmp_path: Path) -> None:
    """A close waiting for another honours its cancellation as the first would: the grace
    period ends at once (the open block is rolled back), and it raises once all is closed."""
    db = SqliteDatabase(make_config(tmp_path / "x.db"))
    await db.open()
    await db.execute("CREATE TABLE t(x)")
    entered, resume = asyncio.Event(), asyncio.Event()

    async def block() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            entered.set()
            await resume.wait()

    async with asyncio.timeout(BOUND):
        task = asyncio.ensure_future(block())
        await entered.wait()
        first = asyncio.ensure_future(db.close())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(db.close())
        await asyncio.sleep(0)
        assert "closing" in repr(db)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert "closed" in repr(db)
        await first
        resume.set()
        with pytest.raises(PoolClosed):
            await task
    async with db:
        assert await db.fetch_val("SELECT count(*) FROM t") == 0
