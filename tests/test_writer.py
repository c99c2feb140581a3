"""Group commit in the writer: FIFO, one COMMIT per batch, failures isolated to their caller,
a failed COMMIT failing its whole batch, and the batch limits."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from async_store import Database, DatabaseFull, ForeignKeyViolation, UniqueViolation
from tests.conftest import make_config


async def _hold_writer(db: Database, seconds: float) -> asyncio.Task[None]:
    """Occupy the writer's thread so that the jobs queued meanwhile form one batch."""
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def block(conn: sqlite3.Connection) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(seconds)

    task = asyncio.ensure_future(db.run_on_writer(block))
    await started.wait()
    return task


async def test_writes_commit_in_fifo_order(db: Database, raw: sqlite3.Connection) -> None:
    await db.execute("CREATE TABLE seq(n INTEGER)")
    await asyncio.gather(*(db.execute("INSERT INTO seq VALUES (?)", (n,)) for n in range(300)))
    order = [row[0] for row in raw.execute("SELECT n FROM seq ORDER BY rowid")]
    assert order == list(range(300))


async def test_every_caller_returns_after_its_commit(db: Database, db_path: Path) -> None:
    observer = sqlite3.connect(db_path, isolation_level=None)

    async def write(n: int) -> None:
        await db.execute("INSERT INTO items(name) VALUES (?)", (f"n{n}",))
        seen = observer.execute("SELECT count(*) FROM items WHERE name = ?", (f"n{n}",))
        assert seen.fetchone()[0] == 1

    try:
        await asyncio.gather(*(write(n) for n in range(200)))
    finally:
        observer.close()
    assert db.statistics().batches < 201


async def test_a_failing_transaction_rolls_back_only_itself(
    db: Database, raw: sqlite3.Connection
) -> None:
    await db.execute("INSERT INTO items(name) VALUES ('taken')")
    holder = await _hold_writer(db, 0.2)
    names = ["taken" if n % 10 == 0 else f"n{n}" for n in range(100)]
    results = await asyncio.gather(
        *(db.execute("INSERT INTO items(name) VALUES (?)", (name,)) for name in names),
        return_exceptions=True,
    )
    await holder
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 10
    assert all(isinstance(f, UniqueViolation) for f in failures)
    assert raw.execute("SELECT count(*) FROM items").fetchone()[0] == 91
    assert db.statistics().largest_batch >= 50


async def test_a_failing_transaction_block_rolls_back_only_itself(
    db: Database, raw: sqlite3.Connection
) -> None:
    async def block(n: int) -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES (?)", (f"a{n}",))
            if n % 3 == 0:
                raise ValueError(f"refused {n}")
            await tx.execute("INSERT INTO items(name) VALUES (?)", (f"b{n}",))

    results = await asyncio.gather(*(block(n) for n in range(30)), return_exceptions=True)
    assert sum(isinstance(r, ValueError) for r in results) == 10
    names = {row[0] for row in raw.execute("SELECT name FROM items")}
    assert names == {f"{p}{n}" for n in range(30) if n % 3 for p in "ab"}


async def test_a_failing_commit_fails_the_whole_batch(
    db: Database, raw: sqlite3.Connection
) -> None:
    # A deferred foreign key is checked at COMMIT, so one bad row fails the batch's COMMIT.
    await db.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    await db.execute(
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL"
        " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    await db.execute("INSERT INTO parent(id) VALUES (1)")
    holder = await _hold_writer(db, 0.2)
    good = [db.execute("INSERT INTO child(parent_id) VALUES (1)") for _ in range(20)]
    bad = db.execute("INSERT INTO child(parent_id) VALUES (999)")
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    await holder
    assert all(isinstance(r, ForeignKeyViolation) for r in results), results
    assert "group commit of 21 transaction(s) was rolled back" in str(results[0])
    assert raw.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    await db.execute("INSERT INTO child(parent_id) VALUES (1)")
    assert raw.execute("SELECT count(*) FROM child").fetchone()[0] == 1


@pytest.mark.parametrize("db_options", [{"max_batch_duration": 30.0}])
async def test_a_failing_commit_fails_transaction_blocks_too(
    db: Database, raw: sqlite3.Connection
) -> None:
    await db.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    await db.execute(
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL"
        " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    release = asyncio.Event()

    async def leader() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO parent(id) VALUES (7)")
            await release.wait()

    first = asyncio.ensure_future(leader())
    await asyncio.sleep(0.05)
    followers = [db.execute("INSERT INTO child(parent_id) VALUES (7)") for _ in range(5)]
    orphan = db.execute("INSERT INTO child(parent_id) VALUES (8)")
    gathered = asyncio.gather(*followers, orphan, return_exceptions=True)
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(ForeignKeyViolation):
        await first
    assert all(isinstance(r, ForeignKeyViolation) for r in await gathered)
    assert raw.execute("SELECT count(*) FROM parent").fetchone()[0] == 0


async def test_batch_size_is_bounded(db_path: Path) -> None:
    async with Database(make_config(db_path, max_batch_size=5)) as db:
        await db.execute("CREATE TABLE t(x)")
        holder = await _hold_writer(db, 0.1)
        await asyncio.gather(*(db.execute("INSERT INTO t VALUES (?)", (i,)) for i in range(50)))
        await holder
        stats = db.statistics()
        assert stats.largest_batch == 5
        assert stats.transactions == 51


async def test_a_batch_led_by_a_block_closes_after_its_duration(db_path: Path) -> None:
    async with Database(make_config(db_path, max_batch_duration=0)) as db:
        await db.execute("CREATE TABLE t(x)")

        async def block(i: int) -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (?)", (i,))

        await asyncio.gather(*(block(i) for i in range(10)))
        assert db.statistics().largest_batch == 1
        assert await db.fetch_val("SELECT count(*) FROM t") == 10


@pytest.mark.parametrize("db_options", [{"max_batch_duration": 30.0}])
async def test_transaction_blocks_and_statements_share_a_batch(db: Database) -> None:
    release = asyncio.Event()

    async def leader() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES ('leader')")
            await release.wait()

    first = asyncio.ensure_future(leader())
    await asyncio.sleep(0.02)
    followers = asyncio.gather(
        *(db.execute("INSERT INTO items(name) VALUES (?)", (f"f{i}",)) for i in range(10))
    )
    await asyncio.sleep(0.02)
    release.set()
    await first
    await followers
    assert db.statistics().largest_batch == 11


async def test_a_caller_cancelled_while_queued_writes_nothing(
    db: Database, raw: sqlite3.Connection
) -> None:
    holder = await _hold_writer(db, 0.2)
    doomed = asyncio.ensure_future(db.execute("INSERT INTO items(name) VALUES ('doomed')"))
    kept = asyncio.ensure_future(db.execute("INSERT INTO items(name) VALUES ('kept')"))
    await asyncio.sleep(0.01)
    doomed.cancel()
    await holder
    await kept
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert [row[0] for row in raw.execute("SELECT name FROM items")] == ["kept"]


async def test_disk_full_fails_only_the_statement_that_overflowed(
    db: Database, raw: sqlite3.Connection
) -> None:
    await db.execute("CREATE TABLE blobs(b BLOB)")
    pages = await db.fetch_val("PRAGMA page_count")
    await db.run_on_writer(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 20}"))
    holder = await _hold_writer(db, 0.1)
    small = db.execute("INSERT INTO items(name) VALUES ('small')")
    huge = db.execute("INSERT INTO blobs VALUES (zeroblob(10000000))")
    results = await asyncio.gather(small, huge, return_exceptions=True)
    await holder
    assert isinstance(results[1], DatabaseFull)
    assert "full" in str(results[1])
    assert raw.execute("SELECT count(*) FROM blobs").fetchone()[0] == 0
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    await db.run_on_writer(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    await db.execute("INSERT INTO blobs VALUES (zeroblob(1000))")
    assert raw.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
