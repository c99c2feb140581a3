"""What a restore refuses before it replaces anything (a backup whose manifest truthfully
describes files that are not this library's, or of the other mode), what a backup refuses to
publish, and an online restore that pauses writes to both databases together."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from async_store import (
    BackupError,
    BackupManifest,
    DatabaseFull,
    NewEvent,
    PoolClosed,
    SqlConfig,
    SqlService,
    StoreError,
)
from async_store.migrations.runner import MigrationSet
from async_store.sqlite.backup._copy import verify_backup
from async_store.sqlite.backup._restore import restore_offline
from tests.conftest import on_sqlite
from tests.test_backup import (
    MODES,
    Mode,
    add_rows,
    config,
    setting_keys,
    targets,
    transaction_held,
    wait_until,
    write_migration,
)

# -- forging backups -------------------------------------------------------------------------


def reseal(backup: Path) -> None:
    """Rewrite the manifest so that it describes every file exactly as it is now: size,
    sha256, user_version and schema versions. Only the contents can then tell what it is."""
    path = backup / "manifest.json"
    data = json.loads(path.read_text())
    for item in data["files"]:
        file = backup / item["name"]
        item["size_bytes"] = file.stat().st_size
        item["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
        conn = sqlite3.connect(file)
        try:
            item["user_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
            columns = {row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")}
            item["schema_versions"] = (
                dict(
                    conn.execute(
                        "SELECT migration_set, max(version) FROM schema_migrations"
                        " GROUP BY migration_set"
                    ).fetchall()
                )
                if "migration_set" in columns
                else {}
            )
        finally:
            conn.close()
    path.write_text(json.dumps(data))


def rewrite(path: Path, *statements: str) -> None:
    """Replace the file with a new SQLite database made by ``statements``."""
    path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def edit(path: Path, *statements: str) -> None:
    """Change the copy in place (a plain connection, as another program would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def unrelated_app(path: Path) -> None:
    rewrite(
        path,
        "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO customers(name) VALUES ('Ada')",
        "PRAGMA user_version = 1",
    )


def other_migration_tool(path: Path) -> None:
    # golang-migrate's record: a table of the same name, other columns.
    rewrite(
        path,
        "CREATE TABLE schema_migrations(version INTEGER PRIMARY KEY, dirty BOOLEAN)",
        "INSERT INTO schema_migrations VALUES (20240101, 0)",
        "CREATE TABLE orders(id INTEGER PRIMARY KEY)",
    )


def forged_record(path: Path) -> None:
    # async_store's layout, but the app_meta set was applied from other SQL.
    edit(path, "UPDATE schema_migrations SET checksum = 'forged' WHERE migration_set = 'app_meta'")


def newer_than_code(path: Path) -> None:
    edit(
        path,
        "INSERT INTO schema_migrations VALUES ('app_meta', 2, 'future', 'x', '2030-01-01', 1)",
        "PRAGMA user_version = 2",
    )


def gap_in_record(path: Path) -> None:
    edit(path, "DELETE FROM schema_migrations WHERE migration_set = 'app_meta' AND version = 1")
    edit(path, "INSERT INTO schema_migrations VALUES ('app_meta', 2, 'x', 'x', '2030-01-01', 1)")


FOREIGN = [
    pytest.param(unrelated_app, "no schema_migrations table", id="unrelated-app"),
    pytest.param(other_migration_tool, "not async_store's", id="other-migration-tool"),
    pytest.param(forged_record, "applied from other SQL", id="forged-record"),
    pytest.param(newer_than_code, "newer than this code", id="newer-than-code"),
    pytest.param(gap_in_record, "has a gap", id="gap-in-record"),
]


def live_bytes(cfg: SqlConfig) -> dict[str, bytes]:
    """Every live database file and its WAL, as bytes."""
    found = {}
    for database in cfg.databases:
        for suffix in ("", "-wal"):
            path = Path(f"{database.path}{suffix}")
            if path.exists():
                found[path.name] = path.read_bytes()
    return found


async def backup_of(tmp_path: Path, mode: Mode) -> BackupManifest:
    """A backup of a service of ``mode`` in ``tmp_path / 'source'`` holding rows ``b-*``."""
    async with SqlService(config(tmp_path / "source", mode)) as sql:
        await add_rows(sql, "b")
        return await sql.backup(tmp_path / "backups")


async def live_service(tmp_path: Path, mode: Mode) -> SqlConfig:
    """A stopped service of ``mode`` in ``tmp_path / 'live'`` holding rows ``live-*``."""
    cfg = config(tmp_path / "live", mode)
    async with SqlService(cfg) as sql:
        await add_rows(sql, "live")
    return cfg


async def still_serving(sql: SqlService) -> None:
    assert await setting_keys(sql) == ["live-0", "live-1", "live-2"]
    await sql.app.execute("INSERT INTO settings(key, value) VALUES ('later', '1')")
    await sql.event_store.append("later", [NewEvent("Later", {})])
    assert await sql.event_store.stream_version("stream-live") == 3


# -- a consistent manifest of foreign files --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("forge", "message"), FOREIGN)
async def test_a_foreign_backup_with_a_true_manifest_is_refused_everywhere(
    tmp_path: Path, mode: Mode, forge: Callable[[Path], None], message: str
) -> None:
    manifest = await backup_of(tmp_path, mode)
    forge(manifest.directory / "app_meta.db")
    reseal(manifest.directory)
    cfg = await live_service(tmp_path, mode)

    with pytest.raises(BackupError, match=message) as info:
        await verify_backup(manifest.directory)
    assert "app_meta.db" in str(info.value)

    before = live_bytes(cfg)
    with pytest.raises(BackupError, match=message):
        await restore_offline(manifest.directory, targets(cfg))
    assert live_bytes(cfg) == before
    assert list(cfg.app.path.parent.glob("replaced-*")) == []
    assert list(cfg.app.path.parent.glob("*.restoring")) == []

    async with SqlService(cfg) as sql:
        before = live_bytes(cfg)
        with pytest.raises(BackupError, match=message):
            await sql.restore(manifest.directory)
        assert live_bytes(cfg) == before, "a refused online restore changed a live file"
        await still_serving(sql)


async def test_a_foreign_events_file_is_refused_and_app_meta_left_alone(tmp_path: Path) -> None:
    """The events copy is the foreign one: app_meta (once copied before events was looked
    at) is not replaced either."""
    manifest = await backup_of(tmp_path, "production")
    unrelated_app(manifest.directory / "events.db")
    reseal(manifest.directory)
    cfg = await live_service(tmp_path, "production")
    async with SqlService(cfg) as sql:
        before = live_bytes(cfg)
        with pytest.raises(BackupError, match=r"events\.db: no schema_migrations table"):
            await sql.restore(manifest.directory)
        assert live_bytes(cfg) == before
        await still_serving(sql)


async def test_a_set_the_service_does_not_know_is_refused_online(tmp_path: Path) -> None:
    """Verify alone cannot know an application's own sets and lets them be; a service knows
    its sets, and refuses a backup holding another."""
    root = tmp_path / "billing"
    write_migration(
        root, 1, "invoices", "CREATE TABLE invoices(id INTEGER);", "DROP TABLE invoices;"
    )
    billing = MigrationSet.from_directory("billing", root)
    async with SqlService(config(tmp_path / "source", "mvp"), migration_sets=[billing]) as sql:
        manifest = await sql.backup(tmp_path / "backups")
    assert await verify_backup(manifest.directory) == manifest
    with pytest.raises(BackupError, match="migration set 'billing'"):
        await verify_backup(manifest.directory, migration_sets=[])
    cfg = await live_service(tmp_path, "mvp")
    async with SqlService(cfg) as sql:
        before = live_bytes(cfg)
        with pytest.raises(BackupError, match="migration set 'billing', which this service"):
            await sql.restore(manifest.directory)
        assert live_bytes(cfg) == before
        await still_serving(sql)
    async with SqlService(cfg, migration_sets=[billing]) as sql:
        await sql.restore(manifest.directory)
        assert await sql.app.fetch_val("SELECT count(*) FROM invoices") == 0


# -- the mode of a backup --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        pytest.param(
            "production",
            "mvp",
            "production-mode backup cannot be restored into an MVP-mode store: it holds "
            "events, which an MVP-mode store has no file for",
            id="production-into-mvp",
        ),
        pytest.param(
            "mvp",
            "production",
            "MVP-mode backup cannot be restored into a production-mode store: it holds no "
            "copy of events",
            id="mvp-into-production",
        ),
    ],
)
async def test_a_backup_of_the_other_mode_is_refused(
    tmp_path: Path, source: Mode, target: Mode, message: str
) -> None:
    manifest = await backup_of(tmp_path, source)
    cfg = await live_service(tmp_path, target)
    before = live_bytes(cfg)
    with pytest.raises(BackupError, match=message):
        await restore_offline(manifest.directory, targets(cfg))
    assert live_bytes(cfg) == before
    assert list(cfg.app.path.parent.glob("replaced-*")) == []
    async with SqlService(cfg) as sql:
        before = live_bytes(cfg)
        with pytest.raises(BackupError, match=message) as info:
            await sql.restore(manifest.directory)
        assert "nothing was replaced" in str(info.value)
        assert live_bytes(cfg) == before
        await still_serving(sql)


async def test_a_manifest_whose_mode_does_not_match_its_files_is_refused(tmp_path: Path) -> None:
    manifest = await backup_of(tmp_path, "production")
    (manifest.directory / "events.db").unlink()
    data = json.loads((manifest.directory / "manifest.json").read_text())
    data["files"] = [item for item in data["files"] if item["database"] == "app_meta"]
    (manifest.directory / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BackupError, match="a production backup holds app_meta and events"):
        await verify_backup(manifest.directory)
    data["mode"] = "mvp"  # an MVP file holds both sets: a production app_meta.db does not
    (manifest.directory / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BackupError, match="no record of async_store's events migrations, which"):
        await verify_backup(manifest.directory)


# -- a backup that fails its checks ----------------------------------------------------------


async def test_a_foreign_key_violation_in_the_source_fails_the_backup_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, "production")
    root = tmp_path / "backups"
    async with SqlService(cfg) as sql:
        await add_rows(sql, "v")
        other = sqlite3.connect(cfg.app.path, isolation_level=None, timeout=10)
        try:
            other.execute("PRAGMA foreign_keys = OFF")
            other.execute(
                "INSERT INTO documents(id, kb_id, title, content_hash, size_bytes)"
                " VALUES ('doc-1', 'no-such-kb', 'orphan', ?, 0)",
                ("0" * 64,),
            )
        finally:
            other.close()
        with pytest.raises(BackupError, match="foreign_key_check: 1 violation") as info:
            await sql.backup(root)
        assert "app_meta" in str(info.value)
        assert list(root.iterdir()) == [], "a failed backup left a folder behind"
        assert await setting_keys(sql) == ["v-0", "v-1", "v-2"]  # and the service serves on


# -- writes during an online restore ---------------------------------------------------------


async def test_online_restore_replaces_both_databases_with_writes_to_both_paused(
    tmp_path: Path,
) -> None:
    """An events transaction that the restore must wait for holds the events writer. The
    restore does not replace app_meta meanwhile (writes to events could still land between
    the two copies), it does not keep app_meta's writer from others, and a write to app_meta
    made inside the events transaction does not deadlock it."""
    async with SqlService(config(tmp_path, "production")) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup(tmp_path / "backups")
        await add_rows(sql, "after")
        entered, go_on = asyncio.Event(), asyncio.Event()

        async def events_transaction() -> None:
            async with sql.events.transaction() as tx:
                await tx.execute("SELECT 1")
                entered.set()
                await go_on.wait()
                await sql.app.execute("INSERT INTO settings(key, value) VALUES ('inside', '1')")

        async with asyncio.timeout(60):  # a bound on a hang, not a measure of speed
            holder = asyncio.ensure_future(events_transaction())
            await entered.wait()
            restore = asyncio.ensure_future(sql.restore(manifest.directory))
            try:
                # The restore has reached the events writer: it waits behind the transaction.
                await wait_until(lambda: sql.events.statistics().writer_queue_depth >= 1)
                assert not restore.done()
                keys = await setting_keys(sql)
                assert "after-0" in keys, "app_meta was replaced while events took writes"
                await sql.app.execute("INSERT INTO settings(key, value) VALUES ('waiting', '1')")
            finally:
                go_on.set()
                await holder
                restored = await restore
            assert restored == manifest

        assert await setting_keys(sql) == ["before-0", "before-1", "before-2"]
        assert await sql.event_store.stream_version("stream-after") == 0
        assert await sql.events.fetch_val("SELECT max(position) FROM events") == (
            manifest.event_position
        )
        assert (await sql.event_store.verify_events()).ok


async def test_online_restore_under_writers_on_both_databases(tmp_path: Path) -> None:
    """Eight tasks each write a setting, then an event, in turn, through the restore. Every
    write succeeds or fails with a clear error, none hangs; afterwards the databases hold the
    backup plus, of the writers' work, only writes made after the restore, an app_meta write
    never without the event its task wrote next."""
    async with SqlService(config(tmp_path, "production")) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup(tmp_path / "backups")
        await add_rows(sql, "after")
        stop = asyncio.Event()
        errors: list[BaseException] = []

        async def writer(n: int) -> int:
            k = 0
            while not stop.is_set():
                try:
                    await sql.app.execute(
                        "INSERT INTO settings(key, value) VALUES (?, ?)", (f"w{n}-{k:05d}", "1")
                    )
                    await sql.event_store.append(f"w{n}", [NewEvent("Wrote", {"k": k})])
                except StoreError as exc:
                    errors.append(exc)
                k += 1
            return k

        async with asyncio.timeout(120):  # a bound on a hang, not a measure of speed
            tasks = [asyncio.ensure_future(writer(n)) for n in range(8)]
            await wait_until(lambda: sql.app.statistics().transactions > 40)
            await sql.restore(manifest.directory)
            restored_at = sql.app.statistics().transactions
            await wait_until(lambda: sql.app.statistics().transactions > restored_at + 40)
            stop.set()
            counts = await asyncio.gather(*tasks)

        assert errors == [], errors
        keys = await setting_keys(sql)
        assert [k for k in keys if not k.startswith("w")] == ["before-0", "before-1", "before-2"]
        assert await sql.event_store.stream_version("stream-after") == 0
        for n, count in enumerate(counts):
            kept = [int(k.split("-")[1]) for k in keys if k.startswith(f"w{n}-")]
            events = [e.data["k"] async for e in sql.event_store.read_stream(f"w{n}") if e.data]
            # What survived of each task is what it wrote after the restore: a run to its end.
            assert kept == list(range(count - len(kept), count))
            assert events == sorted(events)
            assert set(kept) <= set(events), f"w{n}: a setting kept, its event lost"
        assert (await sql.event_store.verify_events()).ok


async def test_an_online_restore_cancelled_while_it_waits_replaces_nothing(
    tmp_path: Path,
) -> None:
    """Cancelled while it waits for the events writer, the restore withdraws from both
    writers: nothing is replaced and both serve writes again."""
    async with SqlService(config(tmp_path, "production")) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup(tmp_path / "backups")
        await add_rows(sql, "after")
        async with asyncio.timeout(60):  # a bound on a hang, not a measure of speed
            async with transaction_held(sql.events):
                restore = asyncio.ensure_future(sql.restore(manifest.directory))
                await wait_until(lambda: sql.events.statistics().writer_queue_depth >= 1)
                restore.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await restore
                assert sql.events.statistics().writer_queue_depth == 0
                await sql.app.execute("INSERT INTO settings(key, value) VALUES ('next', '1')")
            await sql.event_store.append("next", [NewEvent("Next", {})])

        assert await setting_keys(sql) == [
            *(f"{p}-{i}" for p in ("after", "before") for i in range(3)),
            "next",
        ]
        assert await sql.event_store.stream_version("stream-after") == 3


def events_set_in_app_meta(path: Path) -> None:
    edit(path, "INSERT INTO schema_migrations VALUES ('events', 1, 'x', 'x', '2030-01-01', 1)")


def version_zero(path: Path) -> None:
    edit(
        path,
        "PRAGMA ignore_check_constraints = ON",
        "INSERT INTO schema_migrations VALUES ('mine', 0, 'x', 'x', '2030-01-01', 1)",
    )


def newer_user_version(path: Path) -> None:
    edit(path, "PRAGMA user_version = 7")


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        pytest.param(
            events_set_in_app_meta,
            "holds the events migrations, which production mode keeps in the events database",
            id="events-set-in-app-meta",
        ),
        pytest.param(version_zero, "the mine migration record holds version 0", id="version-0"),
        pytest.param(newer_user_version, "user_version is 7, newer", id="newer-user-version"),
    ],
)
async def test_verify_refuses_a_record_this_code_did_not_write(
    tmp_path: Path, forge: Callable[[Path], None], message: str
) -> None:
    manifest = await backup_of(tmp_path, "production")
    forge(manifest.directory / "app_meta.db")
    reseal(manifest.directory)
    with pytest.raises(BackupError, match=message) as info:
        await verify_backup(manifest.directory)
    assert "app_meta.db" in str(info.value)


async def test_verify_refuses_a_user_version_other_than_the_manifests(tmp_path: Path) -> None:
    manifest = await backup_of(tmp_path, "mvp")
    path = manifest.directory / "manifest.json"
    data = json.loads(path.read_text())
    data["files"][0]["user_version"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(BackupError, match=r"user_version 1 differs from the manifest's 2"):
        await verify_backup(manifest.directory)


async def test_an_online_restore_on_a_closed_service_raises_and_replaces_nothing(
    tmp_path: Path,
) -> None:
    manifest = await backup_of(tmp_path, "production")
    cfg = await live_service(tmp_path, "production")
    sql = SqlService(cfg)
    await sql.start()
    await sql.close()
    before = live_bytes(cfg)
    with pytest.raises(PoolClosed, match="closed"):
        await sql.restore(manifest.directory)
    assert live_bytes(cfg) == before


async def test_verify_refuses_an_unknown_mode(tmp_path: Path) -> None:
    manifest = await backup_of(tmp_path, "mvp")
    path = manifest.directory / "manifest.json"
    data = json.loads(path.read_text())
    data["mode"] = "cluster"
    path.write_text(json.dumps(data))
    with pytest.raises(BackupError, match="unknown mode 'cluster'"):
        await verify_backup(manifest.directory)


async def test_offline_restore_refuses_targets_of_no_mode(tmp_path: Path) -> None:
    manifest = await backup_of(tmp_path, "production")
    cfg = await live_service(tmp_path, "production")
    before = live_bytes(cfg)
    with pytest.raises(BackupError, match="the targets are app_meta"):
        await restore_offline(manifest.directory, {"events": cfg.app.path})
    assert live_bytes(cfg) == before


# -- a restore that fails part way -----------------------------------------------------------


def remove(path: Path) -> None:
    path.unlink()


def replace_with_garbage(path: Path) -> None:
    garbage = path.with_name("garbage")
    garbage.write_bytes(b"not a database" * 512)
    os.replace(garbage, path)


def cut_short(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 4096)


def grown(path: Path) -> None:
    """A page of zeros appended: the file still reads as the database it was."""
    with path.open("ab") as file:
        file.write(bytes(4096))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(remove, "cannot be read any more", id="removed"),
        pytest.param(replace_with_garbage, "cannot be read any more", id="replaced-by-garbage"),
        pytest.param(cut_short, "cannot be read any more", id="cut-short"),
        pytest.param(grown, "changed after it was verified", id="grown"),
    ],
)
async def test_a_copy_damaged_after_verification_replaces_nothing(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    """The events copy is damaged through a real file operation after the backup verified,
    while the restore waits for the events writer: every copy is opened and checked before
    any is put in place, so app_meta is not replaced either, and both serve writes after."""
    async with SqlService(config(tmp_path, "production")) as sql:
        await add_rows(sql, "before")
        manifest = await sql.backup(tmp_path / "backups")
        await add_rows(sql, "after")
        async with asyncio.timeout(60):  # a bound on a hang, not a measure of speed
            async with transaction_held(sql.events):
                restore = asyncio.ensure_future(sql.restore(manifest.directory))
                # Verified, and waiting for the events writer.
                await wait_until(lambda: sql.events.statistics().writer_queue_depth >= 1)
                damage(manifest.directory / "events.db")
            with pytest.raises(BackupError, match=message) as info:
                await restore

        assert "events" in str(info.value)
        assert "nothing was replaced" in str(info.value)
        keys = await setting_keys(sql)
        assert keys == [*(f"{p}-{i}" for p in ("after", "before") for i in range(3))]
        assert await sql.event_store.stream_version("stream-after") == 3
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('next', '1')")
        await sql.event_store.append("next", [NewEvent("Next", {})])
        assert (await sql.event_store.verify_events()).ok


async def big_backup(tmp_path: Path) -> BackupManifest:
    """A backup of rows ``b-*``, padded so that each of its databases is larger than the live
    service's: a live writer whose ``max_page_count`` is its present size cannot take it."""
    async with SqlService(config(tmp_path / "source", "production")) as sql:
        await add_rows(sql, "b")
        await sql.app.execute_many(
            "INSERT INTO settings(key, value) VALUES (?, ?)",
            [(f"pad-{i:03d}", json.dumps("x" * 2000)) for i in range(200)],
        )
        await sql.event_store.append(
            "bulk", [NewEvent("Padded", {"pad": "x" * 2000, "i": i}) for i in range(200)]
        )
        return await sql.backup(tmp_path / "backups")


def no_room(conn: sqlite3.Connection) -> None:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()


def room(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823").fetchone()


async def test_a_first_copy_failing_replaces_nothing(tmp_path: Path) -> None:
    """The disk fills during the app_meta copy (its writer's ``max_page_count`` is its
    present size, the backup's copy is larger): the copies run one after another, so events
    is not replaced either."""
    manifest = await big_backup(tmp_path)
    cfg = await live_service(tmp_path, "production")
    async with SqlService(cfg) as sql, asyncio.timeout(60):
        await on_sqlite(sql.app).run_on_writer(no_room)
        with pytest.raises(BackupError, match="nothing was replaced") as info:
            await sql.restore(manifest.directory)
        assert "copying the backup over app_meta failed" in str(info.value)
        assert isinstance(info.value.__cause__, DatabaseFull)
        await on_sqlite(sql.app).run_on_writer(room)
        await still_serving(sql)


async def test_a_copy_failing_after_another_was_replaced_says_which(tmp_path: Path) -> None:
    """The disk fills during the events copy, after app_meta was replaced: the error names
    app_meta as replaced and events as not, and restoring the same backup again once there
    is room brings both back together."""
    manifest = await big_backup(tmp_path)
    cfg = await live_service(tmp_path, "production")
    async with SqlService(cfg) as sql, asyncio.timeout(60):
        await on_sqlite(sql.events).run_on_writer(no_room)
        with pytest.raises(BackupError) as info:
            await sql.restore(manifest.directory)
        text = str(info.value)
        assert "copying the backup over events failed" in text
        assert "Replaced with the backup: app_meta;" in text
        assert "not replaced (still the live data): events" in text
        assert "restore the same backup again" in text
        assert isinstance(info.value.__cause__, DatabaseFull)
        assert (await setting_keys(sql))[:3] == ["b-0", "b-1", "b-2"]
        assert await sql.event_store.stream_version("stream-live") == 3
        assert await sql.event_store.stream_version("bulk") == 0

        await on_sqlite(sql.events).run_on_writer(room)
        await sql.restore(manifest.directory)
        assert (await setting_keys(sql))[:3] == ["b-0", "b-1", "b-2"]
        assert await sql.event_store.stream_version("stream-live") == 0
        assert await sql.event_store.stream_version("bulk") == 200
        assert (await sql.event_store.verify_events()).ok


async def test_a_restore_without_room_for_the_copies_replaces_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = await backup_of(tmp_path, "production")
    cfg = await live_service(tmp_path, "production")
    async with SqlService(cfg) as sql:
        real = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(
            "async_store.sqlite.backup._online_restore.shutil.disk_usage",
            lambda path: real._replace(free=4096),
        )
        with pytest.raises(BackupError, match="not enough free space") as info:
            await sql.restore(manifest.directory)
        assert "nothing was replaced" in str(info.value)
        await still_serving(sql)


@pytest.mark.parametrize("database", ["app_meta", "events"])
async def test_a_restore_inside_a_transaction_block_is_refused(
    tmp_path: Path, database: str
) -> None:
    """The restore would wait for the writer the caller's own block holds: refused at once,
    nothing replaced, and the block goes on."""
    manifest = await backup_of(tmp_path, "production")
    cfg = await live_service(tmp_path, "production")
    async with SqlService(cfg) as sql:
        target = sql.app if database == "app_meta" else sql.events
        async with asyncio.timeout(30):  # a bound on a hang, not a measure of speed
            async with target.transaction() as tx:
                await tx.execute("SELECT 1")
                with pytest.raises(
                    BackupError, match=f"inside a transaction.. block of {database}"
                ):
                    await sql.restore(manifest.directory)
                await tx.execute("SELECT 1")
        await still_serving(sql)
