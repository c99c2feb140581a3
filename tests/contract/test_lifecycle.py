"""A database's lifecycle on every backend, under encode/databases' names too: ``connect()`` and
``disconnect()`` are ``open()`` and ``close()``, ``is_connected`` is ``is_open``, and ``async
with database:`` opens and closes it. A closed database opens again on the same data, an open
on an open database does nothing, and an open and a close that race end in a known state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from async_store import DatabaseConfig, PoolClosed, UniqueViolation
from async_store.database import Database
from tests.contract.conftest import ITEMS
from tests.contract.test_database import BOUND


async def test_connect_and_disconnect_are_open_and_close(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    assert not db.is_connected
    await db.connect()
    try:
        assert db.is_connected
        assert db.is_open
        await db.execute(ITEMS)
        await db.execute("INSERT INTO items(name) VALUES ('apple')")
        assert await db.fetch_val("SELECT name FROM items") == "apple"
    finally:
        await db.disconnect()
    assert not db.is_connected
    assert not db.is_open
    await db.disconnect()
    with pytest.raises(PoolClosed):
        await db.fetch_all("SELECT 1")


async def test_async_with_connects_and_disconnects(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    database = Database(db_config())
    async with database:
        assert database.is_connected
        await database.execute(ITEMS)
    assert not database.is_connected


async def test_a_closed_database_opens_again_on_the_same_data(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    async with db:
        await db.execute(ITEMS)
        await db.execute("INSERT INTO items(name) VALUES ('apple')")
    committed = db.statistics().transactions
    writes = db.metrics.latency["write"].count
    for round_, total_qty in enumerate((2, 5)):
        await db.open()
        try:
            assert db.is_open
            assert await db.fetch_val("SELECT count(*) FROM items") == round_ + 1
            await db.execute("INSERT INTO items(name) VALUES (?)", (f"pear-{round_}",))
            with pytest.raises(UniqueViolation):
                await db.execute("INSERT INTO items(name) VALUES ('apple')")
            async with db.transaction() as tx:
                await tx.execute("UPDATE items SET qty = qty + 1")
            async with db.read() as snapshot:
                assert await snapshot.fetch_val("SELECT sum(qty) FROM items") == total_qty
        finally:
            await db.close()
        assert not db.is_open
        # Statistics and metrics go on counting across a reopen.
        assert db.statistics().transactions == committed + 2
        assert db.metrics.latency["write"].count >= writes + 2
        assert db.metrics.errors.get("UniqueViolation", 0) >= round_ + 1
        committed = db.statistics().transactions
        writes = db.metrics.latency["write"].count
    with pytest.raises(PoolClosed):
        await db.execute("SELECT 1")
    async with Database(db_config()) as other:
        assert await other.fetch_val("SELECT count(*) FROM items") == 3


async def test_open_on_an_open_database_does_nothing(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    await db.connect()
    try:
        await db.execute(ITEMS)
        before = db.statistics()
        await db.open()
        await db.connect()
        assert db.is_open
        assert db.statistics() == before
        await db.execute("INSERT INTO items(name) VALUES ('apple')")
    finally:
        await db.disconnect()
    # One close closes it, however many opens it had.
    assert not db.is_open
    with pytest.raises(PoolClosed):
        await db.fetch_all("SELECT 1")


async def test_an_open_during_a_close_opens_after_it(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    await db.open()
    await db.execute(ITEMS)
    pending = [asyncio.ensure_future(db.execute("INSERT INTO items(name) VALUES ('apple')"))]
    async with asyncio.timeout(BOUND):
        closing = asyncio.ensure_future(db.close())
        await asyncio.sleep(0)
        assert not db.is_open  # closing
        await db.open()
        try:
            await closing
            await asyncio.gather(*pending)  # served by the close, before the open
            assert db.is_open
            assert await db.fetch_val("SELECT name FROM items") == "apple"
        finally:
            await db.close()


async def test_a_close_during_an_open_ends_it_and_leaves_nothing_open(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    async with asyncio.timeout(BOUND):
        opening = asyncio.ensure_future(db.open())
        await asyncio.sleep(0)  # the open is under way
        await db.close()
        with pytest.raises(PoolClosed, match="closed while it opened"):
            await opening
        assert not db.is_open
        with pytest.raises(PoolClosed):
            await db.fetch_all("SELECT 1")
        async with db:
            await db.execute(ITEMS)


async def test_two_closes_at_once_both_return_once_it_is_closed(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    await db.open()
    await db.execute(ITEMS)
    async with asyncio.timeout(BOUND):
        first = asyncio.ensure_future(db.close())
        await asyncio.sleep(0)
        await db.close()
        assert not db.is_open
        await first
    assert not db.is_open


async def test_two_opens_at_once_open_it_once(
    db_config: Callable[..., DatabaseConfig],
) -> None:
    db = Database(db_config())
    async with asyncio.timeout(BOUND):
        await asyncio.gather(db.open(), db.connect())
    try:
        assert db.is_open
        await db.execute(ITEMS)
    finally:
        await db.close()
