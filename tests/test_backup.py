"""Backups: verified copies with a manifest, verification, restore (offline and online) and
retention, on real files in a temporary directory, in production and MVP mode."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from async_store import (
    BackupConfig,
    BackupError,
    BackupManifest,
    ConfigError,
    Database,
    NewEvent,
    SqlConfig,
    SqlService,
    StoreError,
)
from async_store.backups._retention import (
    BackupScheduler,
    list_backups,
    prune,
    select_expired,
)
from async_store.migrations.runner import MigrationSet
from async_store.sqlite.backup._copy import verify_backup
from async_store.sqlite.backup._restore import restore_offline

Mode = Literal["production", "mvp"]

MODES = [pytest.param("production", id="production"), pytest.param("mvp", id="mvp")]
STAMP = "%Y%m%dT%H%M%S.%fZ"


# -- helpers ---------------------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, limit: float = 30, interval: float = 0.005
) -> None:
    """Poll ``condition`` (a function, sync or async) until it holds; TimeoutError after
    ``limit`` seconds. A bound on waiting, never an assertion on speed."""
    async with asyncio.timeout(limit):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


@asynccontextmanager
async def transaction_held(database: Database) -> AsyncIterator[Callable[[], None]]:
    """A ``transaction()`` open on ``database`` in a task of its own until the block ends (or
    the yielded function is called): the writer is leased to it, so writes queue behind it."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with database.transaction():
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await entered.wait()
        yield release.set
    finally:
        release.set()
        await holder


def config(tmp_path: Path, mode: Mode) -> SqlConfig:
    return SqlConfig.in_directory(tmp_path / "data", mvp=mode == "mvp")


def expected_files(mode: Mode) -> set[str]:
    return {"app_meta.db"} if mode == "mvp" else {"app_meta.db", "events.db"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(path: Path, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a database file (a backup copy, a restored file) with a plain read-only
    connection."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [tuple(row) for row in conn.execute(sql, parameters).fetchall()]
    finally:
        conn.close()


def mode_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def rewrite_manifest_entry(backup: Path, name: str) -> None:
    """Make the manifest's size and sha256 of ``name`` match the file as it is now."""
    manifest_path = backup / "manifest.json"
    data = json.loads(manifest_path.read_text())
    for item in data["files"]:
        if item["name"] == name:
            item["size_bytes"] = (backup / name).stat().st_size
            item["sha256"] = sha256(backup / name)
    manifest_path.write_text(json.dumps(data))


def flip_middle_bytes(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for offset in range(middle, middle + count):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@contextmanager
def held_open(path: Path) -> Iterator[None]:
    """Another process with ``path`` open through sqlite3 (it has read from it, so it holds
    the file the way a running service does)."""
    script = (
        "import sqlite3, sys, time\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('SELECT count(*) FROM sqlite_master').fetchall()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


async def add_rows(sql: SqlService, prefix: str, count: int = 3) -> None:
    await sql.app.execute_many(
        "INSERT INTO settings(key, value) VALUES (?, ?)",
        [(f"{prefix}-{i}", json.dumps(i)) for i in range(count)],
    )
    await sql.event_store.append(
        f"stream-{prefix}", [NewEvent("Added", {"i": i}) for i in range(count)]
    )


async def events_at_least(sql: SqlService, count: int) -> bool:
    return bool(await sql.events.fetch_val("SELECT count(*) FROM events") >= count)


async def setting_keys(sql: SqlService) -> list[str]:
    return [row[0] for row in await sql.app.fetch_all("SELECT key FROM settings ORDER BY key")]


def write_migration(root: Path, version: int, name: str, up: str, down: str) -> None:
    folder = root / f"{version:04d}_{name}"
    folder.mkdir(parents=True)
    (folder / "up.sql").write_text(up)
    (folder / "down.sql").write_text(down)


def notes_sets(tmp_path: Path) -> tuple[MigrationSet, MigrationSet]:
    """An application's own migration set at version 1, and the same set at version 2."""
    v1, v2 = tmp_path / "notes-v1", tmp_path / "notes-v2"
    for root in (v1, v2):
        write_migration(
            root,
            1,
            "notes",
            "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);",
            "DROP TABLE notes;",
        )
    write_migration(
        v2,
        2,
        "tags",
        "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'none';",
        "ALTER TABLE notes DROP COLUMN tag;",
    )
    return MigrationSet.from_directory("notes", v1), MigrationSet.from_directory("notes", v2)


# -- taking a backup -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_backup_writes_a_verified_private_copy_of_each_database(
    tmp_path: Path, mode: Mode
) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await add_rows(sql, "kept")
        newest = await sql.events.fetch_val("SELECT max(position) FROM events")
        manifest = await sql.backup()
        root = sql.backup_root

    assert isinstance(manifest, BackupManifest)
    assert manifest.directory.parent == root
    assert manifest.mode == mode
    assert {item.name for item in manifest.files} == expected_files(mode)
    assert {item.database for item in manifest.files} == (
        {"app_meta"} if mode == "mvp" else {"app_meta", "events"}
    )
    # Owner-only: the backups root, the backup folder, every file in it.
    assert mode_bits(root) == 0o700
    assert mode_bits(manifest.directory) == 0o700
    assert sorted(p.name for p in manifest.directory.iterdir()) == sorted(
        [*expected_files(mode), "manifest.json"]
    )
    for path in manifest.directory.iterdir():
        assert mode_bits(path) == 0o600, path
    # No unfinished folder is left behind.
    assert [p.name for p in root.iterdir()] == [manifest.directory.name]

    # manifest.json on disk says what the returned manifest says, and matches the files.
    on_disk = json.loads((manifest.directory / "manifest.json").read_text())
    assert on_disk["event_position"] == newest == manifest.event_position == 3
    assert isinstance(on_disk["duration_ms"], float | int)
    assert on_disk["duration_ms"] >= 0
    datetime.fromisoformat(on_disk["created_at"])
    assert BackupManifest.read(manifest.directory) == manifest
    wanted_versions = (
        {"app_meta.db": {"app_meta": 1, "events": 2}}
        if mode == "mvp"
        else {"app_meta.db": {"app_meta": 1}, "events.db": {"events": 2}}
    )
    for item in on_disk["files"]:
        path = manifest.directory / item["name"]
        assert item["size_bytes"] == path.stat().st_size
        assert item["sha256"] == sha256(path)
        assert item["schema_versions"] == wanted_versions[item["name"]]
        # (user_version follows app_meta in the one file of MVP mode.)
        assert item["user_version"] == (2 if item["name"] == "events.db" else 1)
        assert query(path, "PRAGMA integrity_check") == [("ok",)]

    # The copies hold the data.
    app_copy = manifest.directory / "app_meta.db"
    events_copy = manifest.directory / ("app_meta.db" if mode == "mvp" else "events.db")
    assert query(app_copy, "SELECT count(*) FROM settings WHERE key LIKE 'kept-%'") == [(3,)]
    assert query(events_copy, "SELECT count(*) FROM events") == [(3,)]
    assert await verify_backup(manifest.directory) == manifest


@pytest.mark.parametrize("mode", MODES)
async def test_backup_under_50_writers_is_a_consistent_snapshot_and_stops_nobody(
    tmp_path: Path, mode: Mode
) -> None:
    """Each writer commits pairs of rows (and, in production, one event per pair) one after
    the other; the backup must hold, for every writer, a prefix of its pairs: never half a
    transaction, never a later pair without an earlier one."""
    writers = 50
    started = [0] * writers
    acked = [0] * writers
    backup_done = asyncio.Event()

    async def writer(sql: SqlService, w: int) -> None:
        extra = 0
        while not backup_done.is_set() or extra < 3:
            n = started[w]
            started[w] += 1
            async with sql.app.transaction() as tx:
                for half in ("a", "b"):
                    await tx.execute(
                        "INSERT INTO logs(level, logger, message) VALUES ('INFO', ?, ?)",
                        (f"w{w}", f"{n}-{half}"),
                    )
            await sql.event_store.append(f"w{w}", [NewEvent("Wrote", {"n": n})], expected_version=n)
            acked[w] += 1
            if backup_done.is_set():
                extra += 1

    async with SqlService(config(tmp_path, mode)) as sql:
        # ~10 MB already stored: copying and checking it takes several group commits' time.
        await sql.app.execute_many(
            "INSERT INTO logs(level, logger, message) VALUES ('INFO', 'filler', ?)",
            [("x" * 100_000,) for _ in range(100)],
        )
        tasks = [asyncio.create_task(writer(sql, w)) for w in range(writers)]
        await wait_until(lambda: sum(acked) >= 2 * writers)  # every writer is going
        acked_before = list(acked)
        manifest = await sql.backup()
        acked_after, started_after = list(acked), list(started)
        backup_done.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)  # every writer completes

    # Writers kept committing while the backup ran.
    assert sum(acked_after) > sum(acked_before)
    copy = manifest.directory / "app_meta.db"
    events_copy = manifest.directory / ("app_meta.db" if mode == "mvp" else "events.db")
    assert query(copy, "PRAGMA integrity_check") == [("ok",)]
    assert query(events_copy, "PRAGMA integrity_check") == [("ok",)]
    rows = query(copy, "SELECT logger, message FROM logs WHERE logger != 'filler'")
    by_writer: dict[str, set[str]] = {}
    for logger, message in rows:
        by_writer.setdefault(logger, set()).add(message)
    for w in range(writers):
        messages = by_writer.get(f"w{w}", set())
        pairs = len(messages) // 2
        assert messages == {f"{n}-{half}" for n in range(pairs) for half in "ab"}, w
        assert acked_before[w] <= pairs <= started_after[w], (w, acked_before[w], pairs)
        versions = [
            v
            for (v,) in query(
                events_copy,
                "SELECT version FROM events WHERE stream_id = ? ORDER BY version",
                (f"w{w}",),
            )
        ]
        assert versions == list(range(1, len(versions) + 1)), w
        assert acked_before[w] <= len(versions) <= started_after[w]


@pytest.mark.parametrize("mode", MODES)
async def test_manifest_event_position_is_the_newest_event_in_the_copy(
    tmp_path: Path, mode: Mode
) -> None:
    stop = asyncio.Event()

    async def appender(sql: SqlService, w: int) -> None:
        while not stop.is_set():
            await sql.event_store.append(f"a{w}", [NewEvent("Ticked", {})])

    async with SqlService(config(tmp_path, mode)) as sql:
        tasks = [asyncio.create_task(appender(sql, w)) for w in range(50)]
        try:
            await wait_until(lambda: events_at_least(sql, 100))
            manifests = [await sql.backup() for _ in range(3)]
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    for manifest in manifests:
        copy = manifest.directory / ("app_meta.db" if mode == "mvp" else "events.db")
        assert query(copy, "SELECT max(position) FROM events") == [(manifest.event_position,)]


@pytest.mark.parametrize("mode", MODES)
async def test_not_enough_free_space_fails_and_leaves_nothing(
    tmp_path: Path, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await add_rows(sql, "x")
        real = shutil.disk_usage(tmp_path)
        # The disk cannot be filled safely; pretend it is nearly full.
        monkeypatch.setattr(
            "async_store.sqlite.backup._copy.shutil.disk_usage",
            lambda path: real._replace(free=4096),
        )
        with pytest.raises(BackupError, match="not enough free space"):
            await sql.backup()
        monkeypatch.undo()
        root = sql.backup_root
        assert not root.exists() or list(root.iterdir()) == []
        assert list_backups(root) == []
        # The service carries on, and a backup works once there is room.
        await add_rows(sql, "y")
        assert len((await sql.backup()).files) == len(expected_files(mode))


async def test_a_backup_folder_that_cannot_be_created_raises_backup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    async with SqlService(config(tmp_path, "production")) as sql:
        with pytest.raises(BackupError):
            await sql.backup(blocker / "backups")


def files_open_under(root: Path) -> list[str]:
    """The files under ``root`` this process holds open (Linux /proc)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith(str(root)):
            held.append(target)
    return held


async def backup_cancelled(sql: SqlService, how: str, wait: Callable[[], Awaitable[None]]) -> str:
    """Start ``sql.backup()``, ``wait``, cancel it (``task.cancel()`` or an anyio cancel
    scope, which cancels every later await of the backup as well); "cancelled" or "finished"."""
    if how == "anyio":
        scope = anyio.CancelScope()

        async def in_scope() -> str:
            with scope:
                await sql.backup()
                return "finished"
            return "cancelled"

        scoped = asyncio.create_task(in_scope())
        await wait()
        scope.cancel()
        return await scoped
    task = asyncio.create_task(sql.backup())
    await wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "finished"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
@pytest.mark.parametrize("how", ["asyncio", "anyio"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_backup_leaves_no_partial_folder_and_no_open_file(
    tmp_path: Path, mode: Mode, how: str
) -> None:
    # Cancelled after 0, 1, 2, ... loop turns and then after growing delays: the cancellation
    # lands in every step of a backup (free space, the copy, the checks, hash and fsync side by
    # side, the manifest). When backup() returns, every thread that worked on the copy is done
    # with it: no file under the backups folder is open, and no .partial folder is left.
    async with SqlService(config(tmp_path, mode)) as sql:
        await sql.app.execute("CREATE TABLE filler(data BLOB NOT NULL)")
        await sql.app.execute_many(
            "INSERT INTO filler(data) VALUES (randomblob(?))", [(4000,)] * 500
        )
        await add_rows(sql, "c")
        root = sql.backup_root

        def turns(count: int) -> Callable[[], Awaitable[None]]:
            async def wait() -> None:
                for _ in range(count):
                    await asyncio.sleep(0)

            return wait

        def seconds(delay: float) -> Callable[[], Awaitable[None]]:
            return lambda: asyncio.sleep(delay)

        waits = [turns(n) for n in range(12)] + [seconds(0.001 * 2**n) for n in range(9)]
        outcomes = []
        for wait in waits:
            outcomes.append(await backup_cancelled(sql, how, wait))
            assert files_open_under(root) == [], outcomes
            if root.exists():
                assert [p.name for p in root.iterdir() if p.name.endswith(".partial")] == []
        assert "cancelled" in outcomes
        # Whatever finished is a complete backup, and the service goes on serving.
        for directory, _ in list_backups(root):
            await verify_backup(directory)
        await add_rows(sql, "after")
        assert await verify_backup((await sql.backup()).directory)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "reader_holds",
    [pytest.param(False, id="no-reader"), pytest.param(True, id="reader-holds-a-snapshot")],
)
async def test_backup_truncates_the_wal_unless_a_reader_holds_it(
    tmp_path: Path, mode: Mode, reader_holds: bool
) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await add_rows(sql, "wal", count=50)
        wal_files = [Path(f"{db.path}-wal") for db in sql.databases]
        assert all(wal.stat().st_size > 0 for wal in wal_files)
        if reader_holds:
            async with sql.app.read() as snapshot:
                await snapshot.fetch_val("SELECT count(*) FROM settings")
                await sql.backup()
                app_wal = Path(f"{sql.app.path}-wal")
                assert app_wal.stat().st_size > 0  # left alone: a reader is on it
        else:
            await sql.backup()
            assert [wal.stat().st_size for wal in wal_files] == [0] * len(wal_files)
        assert await setting_keys(sql) == sorted(f"wal-{i}" for i in range(50))


# -- verifying -------------------------------------------------------------------------------


@pytest.fixture
async def good_backup(tmp_path: Path) -> BackupManifest:
    async with SqlService(config(tmp_path, "production")) as sql:
        await sql.app.execute_many(
            "INSERT INTO logs(level, logger, message) VALUES ('INFO', 'fill', ?)",
            [(f"row {i}",) for i in range(2000)],
        )
        await add_rows(sql, "v")
        return await sql.backup()


async def test_verify_accepts_a_fresh_backup(good_backup: BackupManifest) -> None:
    assert await verify_backup(good_backup.directory) == good_backup


@pytest.mark.parametrize("name", ["app_meta.db", "events.db"])
async def test_verify_names_a_corrupted_copy(good_backup: BackupManifest, name: str) -> None:
    flip_middle_bytes(good_backup.directory / name)
    with pytest.raises(BackupError, match="sha256") as info:
        await verify_backup(good_backup.directory)
    assert name in str(info.value)


def _random_bytes(path: Path, like: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(like.stat().st_size))


def _other_database(path: Path, like: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE unrelated(x)")
    conn.execute("INSERT INTO unrelated VALUES (1)")
    conn.commit()
    conn.close()


def _broken_page(path: Path, like: Path) -> None:
    # Overwrite the header of a b-tree page in the middle: a readable header, a broken tree.
    page_size = query(path, "PRAGMA page_size")[0][0]
    pages = path.stat().st_size // page_size
    data = bytearray(path.read_bytes())
    offset = page_size * (pages // 2)
    data[offset : offset + 8] = b"\x00" * 8
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("swap", "message"),
    [
        pytest.param(_random_bytes, "not a readable SQLite database", id="random-bytes"),
        pytest.param(
            _other_database, "not a database of async_store", id="another-sqlite-database"
        ),
        pytest.param(_broken_page, "integrity_check|malformed", id="broken-b-tree-page"),
    ],
)
async def test_verify_refuses_a_foreign_file_even_with_a_matching_manifest(
    good_backup: BackupManifest, swap: Any, message: str
) -> None:
    target = good_backup.directory / "app_meta.db"
    swap(target, target)
    rewrite_manifest_entry(good_backup.directory, "app_meta.db")
    with pytest.raises(BackupError, match=message) as info:
        await verify_backup(good_backup.directory)
    assert "app_meta.db" in str(info.value)


async def test_verify_refuses_a_backup_without_its_manifest(good_backup: BackupManifest) -> None:
    (good_backup.directory / "manifest.json").unlink()
    with pytest.raises(BackupError, match="manifest"):
        await verify_backup(good_backup.directory)


async def test_verify_refuses_a_backup_missing_a_file(good_backup: BackupManifest) -> None:
    (good_backup.directory / "events.db").unlink()
    with pytest.raises(BackupError, match=r"events\.db is missing"):
        await verify_backup(good_backup.directory)


async def test_verify_refuses_a_partial_folder(good_backup: BackupManifest) -> None:
    partial = good_backup.directory.with_name(good_backup.directory.name + ".partial")
    good_backup.directory.rename(partial)
    with pytest.raises(BackupError, match="unfinished"):
        await verify_backup(partial)
    assert list_backups(partial.parent) == []


# -- restoring -------------------------------------------------------------------------------


def targets(cfg: SqlConfig) -> dict[str, Path]:
    return {database.name: database.path for database in cfg.databases}


def file_bytes(cfg: SqlConfig) -> dict[str, bytes]:
    return {database.name: database.path.read_bytes() for database in cfg.databases}


@pytest.mark.parametrize("mode", MODES)
async def test_offline_restore_round_trip_keeps_the_replaced_files(
    tmp_path: Path, mode: Mode
) -> None:
    cfg = config(tmp_path, mode)
    async with SqlService(cfg) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup()
        await add_rows(sql, "after")
        await sql.app.execute("DELETE FROM settings WHERE key = 'before-0'")
    replaced_before = file_bytes(cfg)

    aside = await restore_offline(manifest.directory, targets(cfg))

    assert aside.parent == cfg.app.path.parent
    assert aside.name.startswith("replaced-")
    kept = {p.name for p in aside.iterdir()}
    assert {db.path.name for db in cfg.databases} <= kept
    for database in cfg.databases:
        assert (aside / database.path.name).read_bytes() == replaced_before[database.name]
        assert not database.path.with_name(database.path.name + ".restoring").exists()
    async with SqlService(cfg) as sql:
        assert await setting_keys(sql) == ["before-0", "before-1", "before-2"]
        assert await sql.event_store.stream_version("stream-before") == 3
        assert await sql.event_store.stream_version("stream-after") == 0
        await add_rows(sql, "later")  # and it serves writes again


@pytest.mark.parametrize("held", ["app_meta", "events"])
async def test_offline_restore_is_refused_while_another_process_has_a_database_open(
    tmp_path: Path, held: str
) -> None:
    cfg = config(tmp_path, "production")
    async with SqlService(cfg) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup()
        await add_rows(sql, "after")
    before = file_bytes(cfg)
    with held_open(targets(cfg)[held]):
        with pytest.raises(BackupError, match="open in another process") as info:
            await restore_offline(manifest.directory, targets(cfg))
        assert held in str(info.value)
        assert "nothing was replaced" in str(info.value)
    assert file_bytes(cfg) == before
    assert list(cfg.app.path.parent.glob("replaced-*")) == []
    assert list(cfg.app.path.parent.glob("*.restoring")) == []


async def test_offline_restore_is_refused_while_a_service_of_this_process_is_open(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, "production")
    async with SqlService(cfg) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup()
        await add_rows(sql, "after")
        with pytest.raises(BackupError, match="nothing was replaced"):
            await restore_offline(manifest.directory, targets(cfg))
        assert len(await setting_keys(sql)) == 6
        await add_rows(sql, "still-serving")


async def test_offline_restore_refuses_a_corrupted_backup_and_replaces_nothing(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, "production")
    async with SqlService(cfg) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup()
        await add_rows(sql, "after")
    flip_middle_bytes(manifest.directory / "events.db")
    before = file_bytes(cfg)
    with pytest.raises(BackupError, match="sha256"):
        await restore_offline(manifest.directory, targets(cfg))
    assert file_bytes(cfg) == before
    assert list(cfg.app.path.parent.glob("replaced-*")) == []


async def test_offline_restore_refuses_a_backup_lacking_a_database(tmp_path: Path) -> None:
    mvp = config(tmp_path / "mvp", "mvp")
    async with SqlService(mvp) as sql:
        manifest = await sql.backup()
    production = config(tmp_path / "prod", "production")
    async with SqlService(production) as sql:
        await add_rows(sql, "live")
    before = file_bytes(production)
    with pytest.raises(BackupError, match="no copy of events"):
        await restore_offline(manifest.directory, targets(production))
    assert file_bytes(production) == before


@pytest.mark.parametrize("how", ["offline", "online"])
async def test_restoring_an_older_schema_migrates_it_forward(tmp_path: Path, how: str) -> None:
    v1, v2 = notes_sets(tmp_path)
    cfg = config(tmp_path, "production")
    async with SqlService(cfg, migration_sets=[v1]) as sql:
        await sql.app.execute("INSERT INTO notes(body) VALUES ('from version 1')")
        manifest = await sql.backup()
    assert {f.name: f.schema_versions for f in manifest.files}["app_meta.db"] == {
        "app_meta": 1,
        "notes": 1,
    }
    async with SqlService(cfg, migration_sets=[v2]) as sql:  # the code moved on to version 2
        await sql.app.execute("INSERT INTO notes(body, tag) VALUES ('after the backup', 'new')")
        if how == "online":
            await sql.restore(manifest.directory)
            rows = await sql.app.fetch_all("SELECT body, tag FROM notes")
            version = await sql.app.fetch_val(
                "SELECT max(version) FROM schema_migrations WHERE migration_set = 'notes'"
            )
    if how == "offline":
        await restore_offline(manifest.directory, targets(cfg))
        async with SqlService(cfg, migration_sets=[v2]) as sql:
            rows = await sql.app.fetch_all("SELECT body, tag FROM notes")
            version = await sql.app.fetch_val(
                "SELECT max(version) FROM schema_migrations WHERE migration_set = 'notes'"
            )
    assert version == 2
    assert [tuple(row) for row in rows] == [("from version 1", "none")]


@pytest.mark.parametrize("mode", MODES)
async def test_online_restore_brings_the_live_databases_back(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup()
        await add_rows(sql, "after")
        await sql.app.execute("DELETE FROM settings WHERE key = 'before-1'")

        restored = await sql.restore(manifest.directory)

        assert restored == manifest
        assert await setting_keys(sql) == ["before-0", "before-1", "before-2"]
        assert await sql.event_store.stream_version("stream-after") == 0
        position = await sql.events.fetch_val("SELECT max(position) FROM events")
        assert position == manifest.event_position
        # Still open and serving, reads and writes.
        await add_rows(sql, "later")
        assert await setting_keys(sql) == [
            "before-0",
            "before-1",
            "before-2",
            "later-0",
            "later-1",
            "later-2",
        ]
        assert (await sql.health()).status == "ok"


async def test_online_restore_leaves_an_open_read_snapshot_as_it_was(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path, "production")) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup()
        await add_rows(sql, "after")
        async with sql.app.read() as snapshot:
            assert await snapshot.fetch_val("SELECT count(*) FROM settings") == 6
            await sql.restore(manifest.directory)
            assert await snapshot.fetch_val("SELECT count(*) FROM settings") == 6
        assert await setting_keys(sql) == ["before-0", "before-1", "before-2"]


async def test_online_restore_refuses_a_backup_lacking_a_database(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path / "mvp", "mvp")) as sql:
        manifest = await sql.backup()
    async with SqlService(config(tmp_path / "prod", "production")) as sql:
        await add_rows(sql, "live")
        with pytest.raises(BackupError, match="no copy of events"):
            await sql.restore(manifest.directory)
        assert len(await setting_keys(sql)) == 3


async def test_online_restore_refuses_a_corrupted_backup(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path, "production")) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup()
        await add_rows(sql, "after")
        flip_middle_bytes(manifest.directory / "app_meta.db")
        with pytest.raises(BackupError, match="sha256"):
            await sql.restore(manifest.directory)
        assert len(await setting_keys(sql)) == 6


# -- retention -------------------------------------------------------------------------------

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 6, day, hour, minute, tzinfo=UTC)


def named(times: list[datetime]) -> list[tuple[Path, datetime]]:
    return [(Path(f"backup-{t.strftime(STAMP)}"), t) for t in times]


@pytest.mark.parametrize(
    ("times", "keep_last", "keep_daily", "expired"),
    [
        pytest.param([], 2, 7, [], id="nothing-to-prune"),
        pytest.param(
            [at(10, h) for h in (1, 2, 3, 4, 5)],
            2,
            0,
            [at(10, h) for h in (1, 2, 3)],
            id="keep-last-only",
        ),
        pytest.param(
            [at(10, h) for h in (5, 1, 4, 2, 3)],
            2,
            0,
            [at(10, h) for h in (1, 2, 3)],
            id="input-order-does-not-matter",
        ),
        pytest.param([at(9, 1), at(10, 1)], 5, 0, [], id="keep-last-covers-all"),
        pytest.param(
            [at(8, 10), at(8, 14), at(9, 9), at(9, 20), at(10, 1), at(10, 11)],
            1,
            3,
            [at(8, 10), at(9, 9), at(10, 1)],
            id="newest-of-each-day",
        ),
        pytest.param(
            [at(d, 6) for d in (5, 6, 7, 8, 9, 10)],
            1,
            2,
            [at(d, 6) for d in (5, 6, 7, 8)],
            id="daily-window-ends",
        ),
        pytest.param(
            [at(7, 6), at(10, 6)],
            1,
            3,
            [at(7, 6)],
            id="days-without-backups-count-toward-the-window",
        ),
        pytest.param(
            [at(d, 6) for d in (6, 7, 8)],
            2,
            7,
            [],
            id="keep-daily-reaches-back-a-week",
        ),
        pytest.param(
            [at(3, 6), at(4, 6), at(9, 6), at(10, 6)],
            3,
            1,
            [at(3, 6)],
            id="keep-last-keeps-old-days-too",
        ),
    ],
)
def test_select_expired(
    times: list[datetime], keep_last: int, keep_daily: int, expired: list[datetime]
) -> None:
    backups = named(times)
    chosen = select_expired(backups, keep_last=keep_last, keep_daily=keep_daily, now=NOW)
    assert sorted(chosen) == sorted(path for path, t in backups if t in expired)


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(
        st.datetimes(
            min_value=datetime(2024, 5, 20), max_value=datetime(2024, 6, 11), timezones=st.just(UTC)
        ),
        unique=True,
        max_size=30,
    ),
    keep_last=st.integers(1, 6),
    keep_daily=st.integers(0, 10),
)
def test_select_expired_keeps_exactly_what_the_rules_name(
    times: list[datetime], keep_last: int, keep_daily: int
) -> None:
    backups = named(times)
    expired = set(select_expired(backups, keep_last=keep_last, keep_daily=keep_daily, now=NOW))
    newest_first = sorted(backups, key=lambda b: b[1], reverse=True)
    last = {path for path, _ in newest_first[:keep_last]}
    window = {(NOW - timedelta(days=n)).date() for n in range(keep_daily)}
    newest_of_day: dict[date, Path] = {}
    for path, t in newest_first:
        newest_of_day.setdefault(t.date(), path)
    daily = {path for day, path in newest_of_day.items() if day in window}
    assert expired == {path for path, _ in backups} - last - daily


def make_backup_folder(root: Path, created: datetime) -> Path:
    folder = root / f"backup-{created.strftime(STAMP)}"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    return folder


def test_prune_deletes_what_select_expired_picks_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    folders = [make_backup_folder(root, at(d, 6)) for d in (6, 7, 8, 9, 10)]
    stray_file = root / "notes.txt"
    stray_file.write_text("mine")
    odd_name = root / "backup-not-a-time"
    odd_name.mkdir()
    removed = prune(root, keep_last=1, keep_daily=2, now=NOW)
    assert sorted(removed) == folders[:3]
    assert sorted(p for p, _ in list_backups(root)) == folders[3:]
    assert stray_file.exists()
    assert odd_name.exists()
    assert prune(root, keep_last=1, keep_daily=2, now=NOW) == []


def test_prune_on_a_missing_folder_is_a_no_op(tmp_path: Path) -> None:
    assert prune(tmp_path / "nowhere", keep_last=1, keep_daily=0, now=NOW) == []


def test_prune_deletes_stale_partial_folders_but_not_one_in_progress(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    kept = make_backup_folder(root, at(10, 6))
    stale = root / f"backup-{at(8, 6).strftime(STAMP)}.partial"  # a killed backup's leftovers
    stale.mkdir()
    two_days_ago = (NOW - timedelta(days=2)).timestamp()
    os.utime(stale, (two_days_ago, two_days_ago))
    running = root / f"backup-{(NOW - timedelta(seconds=5)).strftime(STAMP)}.partial"
    running.mkdir()  # a backup being written right now
    prune(root, keep_last=1, keep_daily=0, now=NOW)
    assert not stale.exists()
    assert running.exists()
    assert kept.exists()


class FakeBackups:
    """A ``take`` for the scheduler: each call fails or creates a backup folder at the fake
    clock's time."""

    def __init__(self, root: Path, outcomes: list[BaseException | None]) -> None:
        self.root = root
        self.outcomes = outcomes
        self.now = NOW

    def clock(self) -> datetime:
        return self.now

    async def take(self) -> BackupManifest:
        outcome = self.outcomes.pop(0)
        self.now += timedelta(hours=1)
        if outcome is not None:
            raise outcome
        folder = make_backup_folder(self.root, self.now)
        return BackupManifest(folder, self.now.isoformat(), "mvp", (), 0, 0.0)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(BackupError("disk on fire"), id="backup-error"),
        pytest.param(PermissionError("disk on fire"), id="os-error"),
    ],
)
async def test_scheduler_counts_failures_never_raises_and_recovers(
    tmp_path: Path, error: BaseException
) -> None:
    root = tmp_path / "backups"
    fake = FakeBackups(root, [error, error, None, error, None, None])
    scheduler = BackupScheduler(
        fake.take, BackupConfig(interval=60, keep_last=2, keep_daily=0), root, clock=fake.clock
    )

    assert await scheduler.run_once() is None
    assert await scheduler.run_once() is None
    assert (scheduler.failures, scheduler.total_failures, scheduler.taken) == (2, 2, 0)
    assert scheduler.last_error is not None
    assert "disk on fire" in scheduler.last_error

    manifest = await scheduler.run_once()
    assert manifest is not None
    assert manifest.directory.exists()
    assert (scheduler.failures, scheduler.total_failures, scheduler.taken) == (0, 2, 1)
    assert scheduler.last_error is None

    assert await scheduler.run_once() is None
    assert (scheduler.failures, scheduler.total_failures) == (1, 3)
    for _ in range(2):
        assert await scheduler.run_once() is not None
    assert (scheduler.failures, scheduler.total_failures, scheduler.taken) == (0, 3, 3)
    assert len(list_backups(root)) == 2  # pruned to keep_last


async def test_scheduler_without_an_interval_does_nothing(tmp_path: Path) -> None:
    fake = FakeBackups(tmp_path, [])
    scheduler = BackupScheduler(fake.take, BackupConfig(), tmp_path, clock=fake.clock)
    async with asyncio.timeout(5):
        await scheduler.run()
    assert scheduler.taken == 0


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"interval": 0}, id="zero-interval"),
        pytest.param({"interval": -1.0}, id="negative-interval"),
        pytest.param({"keep_last": 0}, id="keep-last-zero"),
        pytest.param({"keep_daily": -1}, id="keep-daily-negative"),
    ],
)
def test_backup_config_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        BackupConfig(**bad)
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("mode", MODES)
async def test_scheduled_backups_run_in_the_background_and_are_pruned(
    tmp_path: Path, mode: Mode
) -> None:
    schedule = BackupConfig(interval=0.05, keep_last=2, keep_daily=0)
    async with SqlService(config(tmp_path, mode), backup=schedule) as sql:
        await add_rows(sql, "scheduled")
        scheduler = sql.backup_scheduler
        await wait_until(lambda: scheduler.taken >= 3 and len(list_backups(sql.backup_root)) == 2)
        assert scheduler.failures == 0
        kept = list_backups(sql.backup_root)
        for folder, _ in kept:
            await verify_backup(folder)
        report = await sql.health()
        assert report.last_backup_at is not None
        last = datetime.fromisoformat(report.last_backup_at)
        assert last >= kept[0][1]
