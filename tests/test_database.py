"""What the SQLite database adds to the contract (``tests/contract/test_database.py``): reads
on readers, writes on the writer, the rowid ``execute`` returns, SQLite's error messages,
PRAGMAs, files, closing, statistics of the pool and pipelined reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from async_store import (
    CheckViolation,
    ConfigError,
    Interrupted,
    NotADatabase,
    PragmaMismatch,
    QueryError,
    ReadOnlyQuery,
    StoreError,
    UniqueViolation,
)
from async_store.sqlite import SqliteDatabase
from tests.conftest import make_config


async def test_execute_returns_the_rowid_of_an_insert_else_the_rows_changed(
    db: SqliteDatabase,
) -> None:
    first = await db.execute("INSERT INTO items(name) VALUES ('a')")
    second = await db.execute("INSERT INTO items(name) VALUES ('b')")
    assert (first, second) == (1, 2)
    assert await db.execute("UPDATE items SET qty = 1") == 2
    assert await db.execute("INSERT OR IGNORE INTO items(name) VALUES ('a')") == 0
    assert await db.execute("DELETE FROM items WHERE name = 'a'") == 1
    assert await db.execute("CREATE TABLE other(x)") == 0
    async with db.transaction() as tx:
        assert await tx.execute("UPDATE items SET qty = 2") == 1
        assert await tx.execute("INSERT INTO items(name) VALUES ('c')") == 3


async def test_wrong_sql_and_parameters_raise_query_error_and_keep_serving(
    db: SqliteDatabase,
) -> None:
    with pytest.raises(QueryError, match=r"syntax error.*\[sql: INSRT"):
        await db.execute("INSRT INTO items VALUES (1)")
    with pytest.raises(QueryError, match="no such table"):
        await db.fetch_all("SELECT * FROM nowhere")
    with pytest.raises(QueryError, match="bindings"):
        await db.execute("INSERT INTO items(name, qty) VALUES (?, ?)", ("only-one",))
    with pytest.raises(QueryError, match="single parameter"):
        await db.fetch_all("SELECT ?", "abc")
    with pytest.raises(QueryError):
        await db.execute_many("INSERT INTO items(name) VALUES (?)", ["ab"])
    await db.execute("INSERT INTO items(name) VALUES ('still-fine')")
    assert await db.fetch_val("SELECT count(*) FROM items") == 1


async def test_constraint_errors_are_specific(db: SqliteDatabase) -> None:
    await db.execute("INSERT INTO items(name) VALUES ('a')")
    with pytest.raises(UniqueViolation, match=r"UNIQUE constraint failed: items\.name"):
        await db.execute("INSERT INTO items(name) VALUES ('a')")
    with pytest.raises(CheckViolation):
        await db.execute("INSERT INTO items(name, qty) VALUES ('b', -1)")


async def test_readers_refuse_writes(db: SqliteDatabase) -> None:
    # fetch_* sends a writing statement to the writer; a reader itself is query_only.
    with pytest.raises(ReadOnlyQuery, match="use execute"):
        await db.run_in_reader(
            lambda conn: conn.execute("INSERT INTO items(name) VALUES ('sneaky')"), "sneaky"
        )
    assert await db.fetch_val("SELECT count(*) FROM items") == 0


async def test_pragmas_are_set_and_read_back(db_path: Path) -> None:
    config = make_config(
        db_path, synchronous="FULL", cache_size_kib=2048, mmap_size=1 << 20, wal_autocheckpoint=500
    )
    async with SqliteDatabase(config) as db:
        expected_reader = {
            "journal_mode": "wal",
            "synchronous": 2,
            "foreign_keys": 1,
            "busy_timeout": 2000,
            "cache_size": -2048,
            "temp_store": 2,
            "mmap_size": 1 << 20,
            "wal_autocheckpoint": 500,
            "trusted_schema": 0 if sqlite3.sqlite_version_info >= (3, 41, 0) else 1,
            "query_only": 1,
        }
        for name, value in expected_reader.items():
            assert await db.fetch_val(f"PRAGMA {name}") == value, name

        def writer_pragmas(conn: sqlite3.Connection) -> tuple[int, int]:
            return (
                conn.execute("PRAGMA query_only").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
            )

        assert await db.run_on_writer(writer_pragmas) == (0, 2)


async def test_a_pragma_that_does_not_stick_is_an_error(db_path: Path) -> None:
    # SQLite caps mmap_size at its compile-time SQLITE_MAX_MMAP_SIZE, so this reads back lower.
    database = SqliteDatabase(make_config(db_path, mmap_size=1 << 50))
    with pytest.raises(PragmaMismatch, match="mmap_size"):
        await database.open()
    assert not database.is_open


async def test_a_foreign_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"shopping list: eggs, milk\n" * 100
    path.write_bytes(content)
    with pytest.raises(NotADatabase, match=r"notes\.db"):
        await SqliteDatabase(make_config(path)).open()
    assert path.read_bytes() == content


async def test_file_and_directories_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "x.db"
    async with SqliteDatabase(make_config(path)) as db:
        await db.execute("CREATE TABLE t(x)")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


async def test_close_drains_queued_writes(db_path: Path, raw: sqlite3.Connection) -> None:
    db = SqliteDatabase(make_config(db_path))
    await db.open()
    await db.execute("CREATE TABLE t(x)")
    pending = [
        asyncio.ensure_future(db.execute("INSERT INTO t VALUES (?)", (i,))) for i in range(50)
    ]
    await asyncio.sleep(0)
    await db.close()
    await asyncio.gather(*pending)
    assert raw.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    assert not Path(f"{db_path}-wal").exists() or Path(f"{db_path}-wal").stat().st_size == 0


async def test_close_while_another_connection_holds_the_write_lock(
    db_path: Path, raw: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpoint at close cannot run while another process writes: the close still
    finishes, says so at INFO (no warning, no "database is locked"), and loses nothing."""
    db = SqliteDatabase(make_config(db_path, busy_timeout=0.2))
    await db.open()
    await db.execute("CREATE TABLE t(x)")
    await db.execute("CREATE INDEX t_x ON t(x)")
    await db.execute_many("INSERT INTO t VALUES (?)", [(i % 50,) for i in range(2000)])
    # A lookup through the index on the writer's connection: PRAGMA optimize at close then
    # wants to ANALYZE, which needs the write lock.
    await db.run_on_writer(lambda conn: conn.execute("SELECT * FROM t WHERE x = 3").fetchall())
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("INSERT INTO t VALUES (-1)")
    with caplog.at_level(logging.INFO, logger="async_store"):
        async with asyncio.timeout(30):
            await db.close()
    raw.execute("COMMIT")
    assert db.last_checkpoint is not None
    assert db.last_checkpoint.busy
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "locked" not in caplog.text
    assert "the checkpoint at close could not finish" in caplog.text
    assert raw.execute("SELECT count(*), min(x) FROM t").fetchone() == (2001, -1)


async def test_statistics_count_reads_and_batches(db: SqliteDatabase) -> None:
    stats = db.statistics()
    assert (stats.database, stats.readers_limit, stats.readers_total) == ("app_meta", 2, 0)
    assert stats.readers_idle == 0
    assert stats.writer_queue_depth == 0
    await asyncio.gather(
        *(db.execute("INSERT INTO items(name) VALUES (?)", (f"n{i}",)) for i in range(40))
    )
    stats = db.statistics()
    assert stats.transactions == 41  # the fixture's CREATE TABLE, then 40 inserts
    assert stats.batches < 41
    assert stats.mean_batch_size > 1
    assert stats.largest_batch >= 2


async def test_readers_open_on_demand_up_to_the_limit(db_path: Path) -> None:
    async with SqliteDatabase(make_config(db_path, readers=3)) as db:
        assert (db.statistics().readers_total, db.statistics().readers_limit) == (0, 3)
        inside = asyncio.Barrier(3)

        async def hold() -> None:
            async with db.read() as snapshot:
                await snapshot.fetch_val("SELECT 1")
                await inside.wait()  # only passes once three readers are lent at once

        await asyncio.gather(*(hold() for _ in range(3)))
        assert db.statistics().readers_total == 3

        async def brief() -> None:
            async with db.read() as snapshot:
                await snapshot.fetch_val("SELECT 1")

        await asyncio.gather(*(brief() for _ in range(20)))
        stats = db.statistics()
        assert (stats.readers_total, stats.readers_idle) == (3, 3)


# -- pipelined reads that arrive while their reader works ------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (pytest-timeout bounds the wait)."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def reader_held(db: SqliteDatabase) -> AsyncIterator[list[str]]:
    """The only reader busy in a call that waits until the block ends; yields the list that
    calls made with ``noting`` append to, on the reader's thread, in the order they run."""
    started, gate = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        gate.wait(30)

    holder = asyncio.create_task(db.run_in_reader(hold, "hold"))
    await until(started.is_set)
    try:
        yield ran
    finally:
        gate.set()
        await holder


def noting(ran: list[str], name: str, value: object) -> Callable[[sqlite3.Connection], object]:
    def call(conn: sqlite3.Connection) -> object:
        # (marked when it runs inside a read transaction it does not own: a reservation's)
        ran.append(f"{name} in a transaction" if conn.in_transaction else name)
        return conn.execute("SELECT ?", (value,)).fetchone()[0]

    return call


async def test_reads_queued_behind_a_busy_reader_each_get_their_own_answer(
    db_path: Path,
) -> None:
    async with SqliteDatabase(make_config(db_path, readers=1)) as db:
        async with reader_held(db) as ran:
            answers = [
                asyncio.create_task(db.run_in_reader(noting(ran, f"r{i}", i), f"read {i}"))
                for i in range(6)
            ]
            missing = asyncio.create_task(db.fetch_val("SELECT * FROM no_such_table"))
            dropped = asyncio.create_task(db.run_in_reader(noting(ran, "dropped", 0), "x"))
            last = asyncio.create_task(db.fetch_one("SELECT 'last' AS word"))
            await until(lambda: db.statistics().readers_busy == 1 and len(ran) == 0)
            await asyncio.sleep(0)  # every task has queued its read
            dropped.cancel()
        assert [await task for task in answers] == list(range(6))
        with pytest.raises(QueryError, match="no_such_table"):
            await missing
        with pytest.raises(asyncio.CancelledError):
            await dropped
        row = await last
        assert row is not None
        assert row["word"] == "last"
        # In the order they came; the one cancelled before its turn never ran.
        assert ran == [f"r{i}" for i in range(6)]
        stats = db.statistics()
        assert (stats.readers_total, stats.readers_idle) == (1, 1)
        assert await db.fetch_val("SELECT 1") == 1


async def test_a_reservation_runs_after_the_reads_queued_before_it(db_path: Path) -> None:
    async with SqliteDatabase(make_config(db_path, readers=1)) as db:
        async with reader_held(db) as ran:
            queued = [
                asyncio.create_task(db.run_in_reader(noting(ran, f"r{i}", i), f"read {i}"))
                for i in range(3)
            ]
            await asyncio.sleep(0)

            async def reserve() -> object:
                async with db.read() as snapshot:
                    return await snapshot.fetch_val("SELECT 's'")

            reservation = asyncio.create_task(reserve())
            # One turn: the reservation takes the reader (one is free to reserve: no wait) and
            # queues its BEGIN before it first yields.
            await asyncio.sleep(0)
            assert ran == []
        assert await reservation == "s"
        assert [await task for task in queued] == [0, 1, 2]
        # They ran before the reservation's BEGIN, not inside its snapshot.
        assert ran == ["r0", "r1", "r2"]


LONG_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT count(*) FROM c"
)


async def test_close_stops_long_reads_running_and_queued_after_its_grace(db_path: Path) -> None:
    # Three forgotten long reads on the one reader: one runs, two wait behind it. close()
    # gives them its grace period, then stops all three (each would run for minutes).
    db = SqliteDatabase(make_config(db_path, readers=1))
    await db.open()
    reads = [asyncio.create_task(db.fetch_val(LONG_QUERY)) for _ in range(3)]
    await until(lambda: db.statistics().readers_busy == 1)
    await db.close()
    outcomes = await asyncio.gather(*reads, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [Interrupted] * 3
    assert not db.is_open


async def test_an_unknown_checkpoint_mode_is_a_config_error(db: SqliteDatabase) -> None:
    """The error is part of the library's tree (and still a ValueError), names the mode and
    runs nothing."""
    with pytest.raises(ConfigError, match="unknown checkpoint mode 'HALF'") as caught:
        await db.checkpoint("HALF")  # type: ignore[arg-type]
    assert isinstance(caught.value, StoreError)
    assert isinstance(caught.value, ValueError)
    assert db.last_checkpoint is None
