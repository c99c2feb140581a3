"""``StateManager`` on SQLite, beyond the contract (``tests/contract/test_state_manager.py``):
a blocked consumer. These tests hold the events database's writer with a job that waits on a
``threading.Event`` (released by the test): the queue's bound, a cancelled ``mutate_nowait``,
close draining what was accepted, and waiting deltas sharing one group commit.

``writer_held`` is shared with ``tests/test_events.py`` and ``tests/faults/``; the other helpers
live in the contract suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from async_store import (
    Database,
    SqlConfig,
    SqlService,
    StateManager,
    StateManagerClosed,
    StateManagerFull,
)
from async_store.sqlite import SqliteDatabase
from async_store.state import SettingSet
from tests.contract.test_state_manager import events_of, load_state, running, until


@contextlib.asynccontextmanager
async def writer_held(database: Database) -> AsyncIterator[Callable[[], None]]:
    """Block ``database``'s writer thread until the block ends (or the yielded function is
    called): every write queued meanwhile waits behind it."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(60)

    assert isinstance(database, SqliteDatabase)
    holder = asyncio.ensure_future(database.run_on_writer(hold))
    try:
        await until(started.is_set, holder)
        yield release.set
    finally:
        release.set()
        await holder


@pytest.fixture
def config(tmp_path: Path) -> SqlConfig:
    return SqlConfig.in_directory(tmp_path, readers=2, acquire_timeout=10.0)


@pytest.fixture
async def sql(config: SqlConfig) -> AsyncIterator[SqlService]:
    async with SqlService(config) as service:
        yield service


@pytest.fixture
async def manager(sql: SqlService) -> AsyncIterator[StateManager]:
    async with StateManager(sql) as state_manager:
        yield state_manager


async def test_mutate_nowait_raises_when_the_queue_is_full(sql: SqlService) -> None:
    async with running(sql, queue_size=2) as manager:
        async with writer_held(sql.events):
            first = manager.mutate_nowait(SettingSet("a", 1))
            # The consumer took the first delta and waits for its append behind the writer.
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
            queued = [
                manager.mutate_nowait(SettingSet("b", 2)),
                manager.mutate_nowait(SettingSet("c", 3)),
            ]
            with pytest.raises(StateManagerFull, match="queue is full"):
                manager.mutate_nowait(SettingSet("d", 4))
        assert [await first, *[await f for f in queued]] == [1, 2, 3]
        assert dict(manager.read_state().settings.items()) == {"a": 1, "b": 2, "c": 3}
        # Room again once the consumer caught up.
        assert await manager.mutate_nowait(SettingSet("d", 4)) == 4


async def test_a_mutate_nowait_future_cancelled_before_its_turn_drops_the_delta(
    sql: SqlService,
) -> None:
    async with running(sql) as manager:
        async with writer_held(sql.events):
            first = manager.mutate_nowait(SettingSet("a", 1))
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
            dropped = manager.mutate_nowait(SettingSet("b", 2))
            kept = manager.mutate_nowait(SettingSet("c", 3))
            dropped.cancel()
        assert (await first, await kept) == (1, 2)
        assert await manager.flush() == 2
        assert dict(manager.read_state().settings.items()) == {"a": 1, "c": 3}
        assert [event.data["key"] for event in await events_of(sql)] == ["a", "c"]


async def test_close_drains_accepted_messages_then_refuses_calls(sql: SqlService) -> None:
    manager = StateManager(sql)
    await manager.start()
    async with writer_held(sql.events) as release:
        futures = [manager.mutate_nowait(SettingSet(f"k{i}", i)) for i in range(10)]
        await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
        closing = asyncio.ensure_future(manager.close())
        await asyncio.sleep(0)
        with pytest.raises(StateManagerClosed):
            await manager.mutate(SettingSet("late", 1))
        release()
        await closing
    assert [await f for f in futures] == list(range(1, 11))
    assert manager.read_state().version == 10
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: manager.mutate(SettingSet("x", 1)),
        manager.undo,
        manager.redo,
        manager.flush,
    ]
    for call in calls:
        with pytest.raises(StateManagerClosed):
            await call()
    with pytest.raises(StateManagerClosed):
        manager.mutate_nowait(SettingSet("x", 1))
    await manager.close()  # idempotent
    assert (await load_state(sql)).settings == manager.read_state().settings


async def test_waiting_deltas_share_one_commit(sql: SqlService, manager: StateManager) -> None:
    await manager.mutate(SettingSet("warm-up", 0))
    async with writer_held(sql.events):
        first = manager.mutate_nowait(SettingSet("first", 1))
        await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
        before = sql.events.statistics()
        waiting = [manager.mutate_nowait(SettingSet(f"k{i}", i)) for i in range(20)]
    assert await first == 2
    assert [await f for f in waiting] == list(range(3, 23))
    after = sql.events.statistics()
    # The first append (queued before the writer was released) and one for the 20 that waited
    # together behind it.
    assert after.batches - before.batches == 2
    assert after.transactions - before.transactions == 2
