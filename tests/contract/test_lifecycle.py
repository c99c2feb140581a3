"""A database's lifecycle on every backend, under encode/databases' names too: ``connect()`` and
``disconnect()`` are ``open()`` and ``close()``, ``is_connected`` is ``is_open``, and ``async
with database:`` opens and closes it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from async_store import DatabaseConfig, PoolClosed
from async_store.database import Database
from tests.contract.conftest import ITEMS


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
