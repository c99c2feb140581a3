"""Every wait is bounded, on every backend: ``close()`` returns with a block open; two tasks
sharing one transaction never interleave their savepoints (one waits, or gives up clearly); an
append inside a block wakes subscribers when the block commits.

Each test that would hang on a regression waits under ``asyncio.timeout``, with bounds that fit
a machine several times slower than the one it was written on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from async_store import (
    Database,
    DatabaseConfig,
    NewEvent,
    PoolClosed,
    PoolTimeout,
    SqlConfig,
    SqlService,
    StoreError,
)

SHORT = 0.3
"""acquire_timeout of the ``short`` databases, in seconds."""
BOUND = 20.0
"""What a test waits at most for something that must end on its own."""


@contextlib.asynccontextmanager
async def open_with_table_t(config: DatabaseConfig) -> AsyncIterator[Database]:
    """An open database with a table ``t(x INTEGER)``, closed within BOUND."""
    database = Database(config)
    await database.open()
    await database.execute("CREATE TABLE t(x INTEGER)")
    try:
        yield database
    finally:
        async with asyncio.timeout(BOUND):
            await database.close()


@pytest.fixture
async def short(db_config: Callable[..., DatabaseConfig]) -> AsyncIterator[Database]:
    """A database whose callers give up after SHORT seconds."""
    async with open_with_table_t(db_config(acquire_timeout=SHORT)) as database:
        yield database


@pytest.fixture
async def patient(db_config: Callable[..., DatabaseConfig]) -> AsyncIterator[Database]:
    """A database whose callers wait long enough for a wait that must end well."""
    async with open_with_table_t(db_config(acquire_timeout=BOUND)) as database:
        yield database


# -- close() with a block open ----------------------------------------------------------------


async def test_close_returns_with_a_block_open(db_config: Callable[..., DatabaseConfig]) -> None:
    db = Database(db_config())
    await db.open()
    await db.execute("CREATE TABLE t(x INTEGER)")
    context = db.transaction()
    tx = await context.__aenter__()
    await tx.execute("INSERT INTO t VALUES (1)")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(db.close(), BOUND)
    assert loop.time() - started < BOUND
    assert not db.is_open
    with pytest.raises(PoolClosed, match="rolled back"):
        await tx.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(PoolClosed):
        await context.__aexit__(None, None, None)
    async with Database(db_config()) as raw:
        assert await raw.fetch_val("SELECT count(*) FROM t") == 0


# -- an append inside a block wakes subscribers at its commit ---------------------------------


async def test_an_append_inside_a_block_wakes_subscribers_at_commit(
    sql_config: Callable[..., SqlConfig],
) -> None:
    async with asyncio.timeout(BOUND), SqlService(sql_config(mvp=True)) as sql:
        store = sql.event_store
        received: asyncio.Queue[str] = asyncio.Queue()

        async def subscriber() -> None:
            # A poll interval far beyond the wait below: only the wake-up can deliver in time.
            async for event in store.subscribe(0, poll_interval=3600):
                await received.put(event.type)

        task = asyncio.ensure_future(subscriber())
        await asyncio.sleep(0.05)
        async with sql.events.transaction():
            await store.append("s", [NewEvent("Inside", {})])
            await asyncio.sleep(0.05)
            assert received.empty()  # not committed yet: nothing to see
        async with asyncio.timeout(5):
            assert await received.get() == "Inside"
        rolled_back = False
        try:
            async with sql.events.transaction():
                await store.append("s", [NewEvent("Undone", {})])
                raise RuntimeError("roll back")
        except RuntimeError:
            rolled_back = True
        await store.append("s", [NewEvent("After", {})])
        async with asyncio.timeout(5):
            assert await received.get() == "After"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert rolled_back


# -- a child task sharing its parent's transaction --------------------------------------------


async def test_a_child_nested_block_waits_for_the_parents_nested_block(
    patient: Database,
) -> None:
    child_started = asyncio.Event()
    order: list[str] = []

    async def child() -> None:
        child_started.set()
        async with patient.transaction() as tx:  # nested: it inherited the parent's transaction
            order.append("child in")
            await tx.execute("INSERT INTO t VALUES (2)")
        order.append("child out")

    async with asyncio.timeout(BOUND), patient.transaction() as tx:
        task = asyncio.ensure_future(child())
        try:
            async with tx.transaction():
                await tx.execute("INSERT INTO t VALUES (1)")
                await child_started.wait()
                await asyncio.sleep(0.05)
                order.append("parent rolls back")
                raise LookupError("undo the parent's nested block")
        except LookupError:
            pass
        await task
    assert order == ["parent rolls back", "child in", "child out"]
    assert [row[0] for row in await patient.fetch_all("SELECT x FROM t")] == [2]


async def test_tasks_started_inside_a_nested_block_share_it(patient: Database) -> None:
    async with asyncio.timeout(BOUND), patient.transaction() as tx, tx.transaction():
        await asyncio.gather(*(tx.execute("INSERT INTO t VALUES (?)", (n,)) for n in range(5)))
        await asyncio.gather(*(_nested_insert(patient, n) for n in range(5, 10)))
    assert await patient.fetch_val("SELECT count(*) FROM t") == 10


async def _nested_insert(db: Database, n: int) -> None:
    async with db.transaction() as tx:
        await asyncio.sleep(0)
        await tx.execute("INSERT INTO t VALUES (?)", (n,))


async def test_a_task_outside_a_nested_block_gives_up_clearly(short: Database) -> None:
    release = asyncio.Event()

    async with asyncio.timeout(BOUND), short.transaction() as tx:
        outsider = asyncio.ensure_future(_wait_then_insert(short, release))
        async with tx.transaction():
            release.set()
            with pytest.raises(PoolTimeout, match="nested transaction"):
                await outsider
    assert await short.fetch_val("SELECT count(*) FROM t") == 0


async def _wait_then_insert(db: Database, ready: asyncio.Event) -> None:
    await ready.wait()
    await db.execute("INSERT INTO t VALUES (1)")


async def test_a_child_block_outliving_its_parent_block_fails_clearly(
    short: Database,
) -> None:
    entered, finish_child = asyncio.Event(), asyncio.Event()
    child_task: asyncio.Task[None] | None = None

    async def child() -> None:
        async with short.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (2)")
            entered.set()
            await finish_child.wait()

    async with asyncio.timeout(BOUND):
        with pytest.raises(StoreError, match="still open after acquire_timeout"):
            async with short.transaction() as tx, tx.transaction():
                await tx.execute("INSERT INTO t VALUES (1)")
                child_task = asyncio.ensure_future(child())
                await entered.wait()
        assert child_task is not None
        finish_child.set()
        with pytest.raises(StoreError):
            await child_task
    assert await short.fetch_val("SELECT count(*) FROM t") == 0
