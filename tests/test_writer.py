"""Group commit in the writer: FIFO, one COMMIT per batch, failures isolated to their caller,
a failed COMMIT failing its whole batch, and the batch limits."""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import time
from pathlib import Path

import pytest

from async_store import (
    DatabaseError,
    DatabaseFull,
    ForeignKeyViolation,
    StoreError,
    UniqueViolation,
)
from async_store.sqlite import SqliteDatabase
from tests.conftest import make_config
from tests.test_backup import wait_until


async def _hold_writer(db: SqliteDatabase, seconds: float) -> asyncio.Task[None]:
    """Occupy the writer's thread so that the jobs queued meanwhile form one batch."""
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def block(conn: sqlite3.Connection) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(seconds)

    task = asyncio.ensure_future(db.run_on_writer(block))
    await started.wait()
    return task


async def test_writes_commit_in_fifo_order(db: SqliteDatabase, raw: sqlite3.Connection) -> None:
    await db.execute("CREATE TABLE seq(n INTEGER)")
    await asyncio.gather(*(db.execute("INSERT INTO seq VALUES (?)", (n,)) for n in range(300)))
    order = [row[0] for row in raw.execute("SELECT n FROM seq ORDER BY rowid")]
    assert order == list(range(300))


async def test_every_caller_returns_after_its_commit(db: SqliteDatabase, db_path: Path) -> None:
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
    db: SqliteDatabase, raw: sqlite3.Connection
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
    db: SqliteDatabase, raw: sqlite3.Connection
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


_DEFERRED_SCHEMA = (
    "CREATE TABLE parent(id INTEGER PRIMARY KEY)",
    "CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL"
    " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)",
    "CREATE TABLE other(x INTEGER)",
)


async def _deferred_schema(db: SqliteDatabase) -> None:
    for statement in _DEFERRED_SCHEMA:
        await db.execute(statement)


async def test_a_deferred_violation_fails_only_its_own_caller(
    db: SqliteDatabase, raw: sqlite3.Connection
) -> None:
    # A deferred foreign key is checked at COMMIT: the batch's COMMIT is refused, and its jobs
    # are run again one by one, so only the offender fails, as when issued one at a time.
    await _deferred_schema(db)
    holder = await _hold_writer(db, 0.2)
    good = [db.execute("INSERT INTO other(x) VALUES (?)", (n,)) for n in range(5)]
    bad = db.execute("INSERT INTO child(parent_id) VALUES (999)")
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    await holder
    assert results[:5] == [1, 2, 3, 4, 5]
    assert isinstance(results[5], ForeignKeyViolation)
    assert "[sql: INSERT INTO child(parent_id) VALUES (999)]" in str(results[5])
    assert [row[0] for row in raw.execute("SELECT x FROM other ORDER BY rowid")] == list(range(5))
    assert raw.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    assert db.statistics().failed_transactions == 1


async def test_jobs_run_again_alone_see_each_other_in_order(
    db: SqliteDatabase, raw: sqlite3.Connection
) -> None:
    # Run again one by one, a child whose parent came earlier in the batch still finds it.
    await _deferred_schema(db)
    holder = await _hold_writer(db, 0.2)
    parent = db.execute("INSERT INTO parent(id) VALUES (1)")
    child = db.execute("INSERT INTO child(parent_id) VALUES (1)")
    orphan = db.execute("INSERT INTO child(parent_id) VALUES (2)")
    results = await asyncio.gather(parent, child, orphan, return_exceptions=True)
    await holder
    assert list(results[:2]) == [1, 1]
    assert isinstance(results[2], ForeignKeyViolation)
    assert raw.execute("SELECT parent_id FROM child").fetchall() == [(1,)]


async def _led_by_a_block(
    db: SqliteDatabase, block_sql: str, statements: list[str]
) -> tuple[BaseException | None, list[object]]:
    """A block runs ``block_sql`` and stays open until ``statements`` are queued behind it (so
    they join its batch); returns the block's error (``None`` if it committed) and the
    statements' outcomes."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def leader() -> None:
        async with db.transaction() as tx:
            await tx.execute(block_sql)
            entered.set()
            await release.wait()

    first = asyncio.ensure_future(leader())
    await entered.wait()
    followers = asyncio.gather(*(db.execute(sql) for sql in statements), return_exceptions=True)
    await wait_until(lambda: db.statistics().writer_queue_depth == len(statements))
    release.set()
    try:
        await first
    except StoreError as exc:
        return exc, list(await followers)
    return None, list(await followers)


async def test_a_block_breaking_a_deferred_constraint_fails_alone(
    db: SqliteDatabase, raw: sqlite3.Connection
) -> None:
    await _deferred_schema(db)
    block_error, results = await _led_by_a_block(
        db,
        "INSERT INTO child(parent_id) VALUES (8)",
        [f"INSERT INTO other(x) VALUES ({n})" for n in range(5)],
    )
    assert isinstance(block_error, ForeignKeyViolation)
    assert results == [1, 2, 3, 4, 5]
    assert raw.execute("SELECT count(*) FROM child").fetchone()[0] == 0


async def test_a_block_keeps_its_work_when_a_statement_behind_it_breaks_a_deferred_constraint(
    db: SqliteDatabase, raw: sqlite3.Connection
) -> None:
    await _deferred_schema(db)
    block_error, results = await _led_by_a_block(
        db,
        "INSERT INTO parent(id) VALUES (7)",
        [f"INSERT INTO child(parent_id) VALUES ({7 if n < 5 else 8})" for n in range(6)],
    )
    assert block_error is None
    assert results[:5] == [1, 2, 3, 4, 5]
    assert isinstance(results[5], ForeignKeyViolation)
    assert raw.execute("SELECT count(*) FROM parent").fetchone()[0] == 1
    assert raw.execute("SELECT count(*) FROM child").fetchone()[0] == 5


async def test_batch_size_is_bounded(db_path: Path) -> None:
    async with SqliteDatabase(make_config(db_path, max_batch_size=5)) as db:
        await db.execute("CREATE TABLE t(x)")
        holder = await _hold_writer(db, 0.1)
        await asyncio.gather(*(db.execute("INSERT INTO t VALUES (?)", (i,)) for i in range(50)))
        await holder
        stats = db.statistics()
        assert stats.largest_batch == 5
        assert stats.transactions == 51


async def test_two_blocks_never_share_a_batch(db_path: Path) -> None:
    # A block that joined a batch would make the blocks before it wait for its code to end.
    async with SqliteDatabase(make_config(db_path)) as db:
        await db.execute("CREATE TABLE t(x)")

        async def block(i: int) -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (?)", (i,))

        await asyncio.gather(*(block(i) for i in range(10)))
        assert db.statistics().largest_batch == 1
        assert await db.fetch_val("SELECT count(*) FROM t") == 10


async def test_transaction_blocks_and_statements_share_a_batch(db: SqliteDatabase) -> None:
    block_error, results = await _led_by_a_block(
        db,
        "INSERT INTO items(name) VALUES ('leader')",
        [f"INSERT INTO items(name) VALUES ('f{i}')" for i in range(10)],
    )
    assert block_error is None
    assert results == list(range(2, 12))
    assert db.statistics().largest_batch == 11


async def test_a_caller_cancelled_while_queued_writes_nothing(
    db: SqliteDatabase, raw: sqlite3.Connection
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
    db: SqliteDatabase, raw: sqlite3.Connection
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


async def test_a_block_whose_transaction_sqlite_rolled_back_runs_nothing_more(
    db: SqliteDatabase, raw: sqlite3.Connection
) -> None:
    # SQLite rolls a transaction back by itself after some errors (disk full, I/O error); a
    # ROLLBACK run behind the library's back stands in for one here.
    def lose_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")

    queued: list[asyncio.Future[int | None]] = []
    with pytest.raises(StoreError, match="rolled back by SQLite"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(name) VALUES ('before')")
            with pytest.raises(StoreError):
                await db.run_in_transaction(lose_the_transaction, "simulated loss")
            with pytest.raises(DatabaseError, match="SQLite rolled this transaction back"):
                await tx.execute("INSERT INTO items(name) VALUES ('after')")
            queued.append(
                asyncio.get_running_loop().create_task(
                    db.execute("INSERT INTO items(name) VALUES ('behind')"),
                    context=contextvars.Context(),
                )
            )
            await wait_until(lambda: db.statistics().writer_queue_depth == 1)
    assert await queued[0] == 1
    assert [row[0] for row in raw.execute("SELECT name FROM items")] == ["behind"]
