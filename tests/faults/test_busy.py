"""Busy handling across processes.

Within one process the writer owns the lock, so no ``SQLITE_BUSY`` can arise. Another process
can hold it: the writer then waits ``busy_timeout`` and retries ``BEGIN IMMEDIATE`` with jittered
exponential backoff (never a half-done transaction), counts each retry in ``statistics()``, and
raises :class:`DatabaseBusy` once the retries are spent. Readers (WAL) never wait for a writer.

The lock holder is a real separate process running plain ``sqlite3``: it takes the write lock,
writes one row (``holder``), prints ``locked``, and commits when it is told to (a line on its
stdin) or when its hold time is over. Tests proceed only once they have read ``locked``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from async_store import Database, DatabaseBusy
from tests.conftest import make_config

INSERT = "INSERT INTO items(name) VALUES (?)"

HOLDER = """
import select, sqlite3, sys

path, hold = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, isolation_level=None, timeout=10)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO items(name) VALUES ('holder')")
print("locked", flush=True)
# Hold the lock until a line (or EOF) arrives on stdin, or for `hold` seconds at most.
select.select([sys.stdin], [], [], hold)
conn.execute("COMMIT")
conn.close()
print("released", flush=True)
"""

HOLD_UNTIL_RELEASED = 60.0
"""The hold time of a holder the test releases itself (an upper bound, never reached)."""


class LockHolder:
    """A separate process holding the database's write lock (see the module docstring)."""

    def __init__(self, db_path: Path, *, hold: float) -> None:
        self._db_path = db_path
        self._hold = hold
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> LockHolder:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLDER,
            str(self._db_path),
            str(self._hold),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        try:
            line = await self._process.stdout.readline()
            assert line == b"locked\n", f"the lock holder did not take the lock: {line!r}"
        except BaseException:
            await self._kill()
            raise
        return self

    async def release(self) -> None:
        """Tell the holder to commit, and wait for it to exit."""
        process = self._process
        assert process is not None
        assert process.stdin is not None
        process.stdin.write(b"release\n")
        await process.stdin.drain()
        await self.wait()

    async def wait(self) -> None:
        """Wait for the holder to commit and exit on its own."""
        process = self._process
        assert process is not None
        output, _ = await process.communicate()
        assert process.returncode == 0
        assert output == b"released\n"

    async def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        await process.communicate()  # closes the pipes, reaps the process

    async def __aexit__(self, *exc_info: object) -> None:
        await self._kill()


@asynccontextmanager
async def database(db_path: Path, **options: Any) -> AsyncIterator[Database]:
    """A database with the ``items`` table of the ``db`` fixture, opened with ``options``."""
    async with Database(make_config(db_path, **options)) as db:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
            " qty INTEGER NOT NULL DEFAULT 0 CHECK (qty >= 0))"
        )
        yield db


def names(raw: sqlite3.Connection) -> set[str]:
    return {row[0] for row in raw.execute("SELECT name FROM items")}


async def until(condition: Callable[[], bool], task: asyncio.Task[Any]) -> None:
    """Poll ``condition``; fail at once if ``task`` ends first."""
    while not condition():
        if task.done():
            task.result()
            raise AssertionError("the write ended before it was seen retrying")
        await asyncio.sleep(0.001)


# -- what is written ------------------------------------------------------------------------


async def one_execute(db: Database) -> set[str]:
    rowid = await db.execute(INSERT, ("ours",))
    assert isinstance(rowid, int)
    return {"ours"}


async def one_transaction(db: Database) -> set[str]:
    async with db.transaction() as tx:
        await tx.execute(INSERT, ("ours-1",))
        await tx.execute(INSERT, ("ours-2",))
        assert await tx.fetch_val("SELECT count(*) FROM items WHERE name LIKE 'ours-%'") == 2
    return {"ours-1", "ours-2"}


async def twenty_executes(db: Database) -> set[str]:
    batches = db.statistics().batches
    wanted = {f"ours-{i}" for i in range(20)}
    rowids = await asyncio.gather(*(db.execute(INSERT, (name,)) for name in sorted(wanted)))
    assert all(isinstance(rowid, int) for rowid in rowids)
    # All 20 queue while the first BEGIN waits: one group commit, or a few.
    assert db.statistics().batches - batches <= 3
    return wanted


Write = Callable[[Database], Coroutine[Any, Any, set[str]]]

WRITES = [
    pytest.param(one_execute, id="execute"),
    pytest.param(one_transaction, id="transaction"),
    pytest.param(twenty_executes, id="20-concurrent-executes"),
]

RETRYING = {"busy_timeout": 0.1, "busy_retries": 8, "busy_backoff": 0.05}
"""Up to 9 waits of 0.1 s plus about 12.75 s of backoff: far longer than any hold below."""


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("write", WRITES)
async def test_write_retries_until_the_other_process_releases_its_lock(
    db_path: Path, raw: sqlite3.Connection, write: Write
) -> None:
    """The holder commits only once the writer has been seen retrying: deterministic."""
    async with database(db_path, **RETRYING) as db:
        async with LockHolder(db_path, hold=HOLD_UNTIL_RELEASED) as holder:
            task = asyncio.create_task(write(db))
            await until(lambda: db.statistics().busy_retries >= 1, task)
            assert not task.done()  # still waiting for the lock: nothing half-done is retried
            assert names(raw) == set()
            await holder.release()
            written = await task
        assert db.statistics().busy_retries >= 1
        assert names(raw) == written | {"holder"}
        assert db.statistics().writer_queue_depth == 0


@pytest.mark.parametrize("write", WRITES)
async def test_write_succeeds_after_a_lock_held_for_a_while(
    db_path: Path, raw: sqlite3.Connection, write: Write
) -> None:
    """The holder keeps the lock for 0.6 s and lets go by itself; busy_timeout is 0.1 s."""
    async with database(db_path, **RETRYING) as db:
        async with LockHolder(db_path, hold=0.6) as holder:
            written = await write(db)
            await holder.wait()
        assert db.statistics().busy_retries >= 1
        assert names(raw) == written | {"holder"}


async def busy_execute(db: Database) -> None:
    await db.execute(INSERT, ("ours",))


async def busy_transaction(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute(INSERT, ("ours",))
    raise AssertionError("the transaction block ran without the lock")


async def busy_execute_many(db: Database) -> None:
    await db.execute_many(INSERT, [("ours",), ("ours-2",)])


BUSY_WRITES = [
    pytest.param(busy_execute, id="execute"),
    pytest.param(busy_transaction, id="transaction"),
    pytest.param(busy_execute_many, id="execute-many"),
]


@pytest.mark.parametrize("write", BUSY_WRITES)
async def test_lock_held_past_every_retry_raises_database_busy(
    db_path: Path,
    raw: sqlite3.Connection,
    write: Callable[[Database], Coroutine[Any, Any, None]],
) -> None:
    async with database(db_path, busy_timeout=0.05, busy_retries=1) as db:
        async with LockHolder(db_path, hold=HOLD_UNTIL_RELEASED) as holder:
            with pytest.raises(DatabaseBusy) as caught:
                await write(db)
            assert "locked" in str(caught.value)
            assert db.statistics().busy_retries == 1  # exactly the retries configured
            assert db.statistics().writer_queue_depth == 0
            await holder.release()
        assert names(raw) == {"holder"}  # nothing of ours was written

        # The same Database serves writes again once the other process is gone.
        assert isinstance(await db.execute(INSERT, ("again",)), int)
        async with db.transaction() as tx:
            await tx.execute(INSERT, ("again-tx",))
        assert names(raw) == {"holder", "again", "again-tx"}
        assert db.statistics().busy_retries == 1


async def test_database_busy_names_the_database(db_path: Path) -> None:
    async with (
        database(db_path, name="busy_probe", busy_timeout=0.05, busy_retries=1) as db,
        LockHolder(db_path, hold=HOLD_UNTIL_RELEASED),
    ):
        with pytest.raises(DatabaseBusy) as caught:
            await db.execute(INSERT, ("ours",))
    assert "busy_probe" in str(caught.value)


async def test_reads_are_not_blocked_by_another_process_holding_the_write_lock(
    db_path: Path, raw: sqlite3.Connection
) -> None:
    """WAL: readers never wait for a writer. busy_timeout is 2 s and the lock is held until the
    test releases it, so a blocked read would fail with DatabaseBusy, not merely be slow."""
    async with database(db_path) as db:
        await db.execute(INSERT, ("before",))
        async with LockHolder(db_path, hold=HOLD_UNTIL_RELEASED) as holder:
            assert await db.fetch_val("SELECT count(*) FROM items") == 1
            async with db.read() as snap:
                assert await snap.fetch_val("SELECT name FROM items") == "before"
                assert [row["name"] async for row in snap.iterate("SELECT name FROM items")] == [
                    "before"
                ]
            assert [row[0] for row in await db.fetch_all("SELECT name FROM items")] == ["before"]
            assert db.statistics().busy_retries == 0
            await holder.release()
        # The holder's row is visible to the next read once it committed.
        assert await db.fetch_val("SELECT count(*) FROM items WHERE name = 'holder'") == 1
        assert names(raw) == {"before", "holder"}
