"""``SqlService``: MVP and production layouts, lifecycle, and exit without close()."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from async_store import NewEvent, PoolClosed, SqlConfig, SqlService, StoreError
from tests.conftest import on_sqlite


async def test_mvp_shares_one_database(tmp_path: Path) -> None:
    async with SqlService(SqlConfig.mvp(tmp_path / "one.db", readers=1)) as sql:
        assert sql.app is sql.events
        assert sql.databases == (sql.app,)
        assert sql.app.path == tmp_path / "one.db"
        assert await sql.app.fetch_val("PRAGMA synchronous") == 1


async def test_production_opens_two_files_with_their_durability(tmp_path: Path) -> None:
    config = SqlConfig.production(tmp_path / "d" / "app_meta.db", tmp_path / "d" / "events.db")
    async with SqlService(config) as sql:
        assert sql.app is not sql.events
        assert await sql.app.fetch_val("PRAGMA synchronous") == 1
        assert await sql.events.fetch_val("PRAGMA synchronous") == 2
        await sql.app.execute("CREATE TABLE a(x)")
        await sql.events.execute("CREATE TABLE e(x)")
    assert (tmp_path / "d" / "app_meta.db").exists()
    assert (tmp_path / "d" / "events.db").exists()


async def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    sql = SqlService(SqlConfig.mvp(tmp_path / "x.db"))
    await sql.start()
    await sql.close()
    await sql.close()
    with pytest.raises(PoolClosed):
        await sql.app.fetch_all("SELECT 1")
    with pytest.raises(PoolClosed):
        await sql.start()


async def test_a_failed_start_closes_what_it_opened(tmp_path: Path) -> None:
    foreign = tmp_path / "events.db"
    foreign.write_bytes(b"not sqlite" * 1000)
    sql = SqlService(SqlConfig.production(tmp_path / "app_meta.db", foreign))
    with pytest.raises(Exception, match="not a database"):
        await sql.start()
    assert not sql.app.is_open
    assert foreign.read_bytes() == b"not sqlite" * 1000


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param("", id="returns-without-close"),
        pytest.param("raise SystemExit(0)", id="system-exit-without-close"),
    ],
)
def test_forgetting_to_close_neither_hangs_nor_complains(tmp_path: Path, ending: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from async_store import SqlConfig, SqlService

        async def main():
            sql = SqlService(SqlConfig.production(sys.argv[1] + "/a.db", sys.argv[1] + "/e.db"))
            await sql.start()
            await sql.app.execute("CREATE TABLE t(x)")
            await sql.app.execute("INSERT INTO t VALUES (1)")
            print(await sql.app.fetch_val("SELECT count(*) FROM t"), flush=True)
            {ending}

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert "Event loop is closed" not in done.stderr
    assert "Traceback" not in done.stderr
    reopened = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
            "print(c.execute('select count(*) from t').fetchone()[0])",
            str(tmp_path / "a.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert reopened.stdout.strip() == "1"


async def test_a_close_cancelled_while_appends_drain_still_closes_every_database(
    tmp_path: Path,
) -> None:
    sql = SqlService(SqlConfig.in_directory(tmp_path))
    await sql.start()
    appends = [
        asyncio.ensure_future(sql.event_store.append(f"s{n % 50}", [NewEvent("E", {"n": n})]))
        for n in range(3000)
    ]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(sql.close())
    await asyncio.sleep(0.005)  # close() is draining the appends
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    await asyncio.gather(*appends, return_exceptions=True)
    for database in sql.databases:
        with pytest.raises(PoolClosed):
            await database.fetch_val("SELECT 1")


@pytest.mark.parametrize("mvp", [False, True], ids=["production", "mvp"])
async def test_work_that_needs_the_writer_alone_is_refused_inside_a_transaction(
    tmp_path: Path, mvp: bool
) -> None:
    """run_on_writer, checkpoint, migrate and health wait for the writer to be free; inside a
    transaction() block of the same database that is the block's own end: refused at once
    instead of waiting forever. The block goes on and commits; a backup taken inside it
    completes (it skips the checkpoint after it)."""
    config = SqlConfig.in_directory(tmp_path, mvp=mvp)
    async with SqlService(config) as sql:
        async with asyncio.timeout(30), sql.app.transaction() as tx:
            await tx.execute("INSERT INTO settings(key, value) VALUES ('a', '1')")
            refused = [
                lambda: on_sqlite(sql.app).run_on_writer(
                    lambda conn: conn.execute("SELECT 1").fetchall()
                ),
                lambda: on_sqlite(sql.app).checkpoint(),
                sql.migrate,
                sql.health,
            ]
            for call in refused:
                with pytest.raises(StoreError, match="inside a transaction"):
                    await call()
            manifest = await sql.backup()
            await tx.execute("INSERT INTO settings(key, value) VALUES ('b', '2')")
        assert await sql.app.fetch_val("SELECT count(*) FROM settings") == 2
        assert (await on_sqlite(sql.app).checkpoint()).mode == "PASSIVE"  # after the block: fine
        assert (await sql.health()).status in ("ok", "degraded")
    assert (manifest.directory / "manifest.json").exists()
