"""Security: owner-only files, backups that cannot reach outside their folder, names stored as
data (never spliced into SQL), queries that cannot take a pooled connection over, and logs that
carry no parameter values unless the application puts them there.

File modes are checked under ``umask 0``, where anything the library did not restrict itself
would come out world-readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from async_store import (
    BackupError,
    Catalog,
    ConcurrencyError,
    Database,
    DatabaseConfig,
    MigrationSet,
    NewEvent,
    QueryError,
    ReadOnlyQuery,
    SqlConfig,
    SqlService,
    StateManager,
    StoreError,
)
from async_store.cli import main
from async_store.logsinks import JsonlSink, SqlLogSink
from async_store.sqlite.backup._copy import MANIFEST, verify_backup
from async_store.sqlite.backup._restore import restore_offline
from async_store.state import KnowledgeBase, KnowledgeBaseAdd, SettingSet
from tests.conftest import on_sqlite


@pytest.fixture
def open_umask() -> Iterator[None]:
    """``umask 0`` for the test: files the library does not restrict come out 0666/0777."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sidecars(database: Path) -> list[Path]:
    """The database file and its -wal and -shm files, those that exist."""
    candidates = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    return [path for path in candidates if path.exists()]


async def write_some(sql: SqlService) -> None:
    await sql.app.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('theme', '1')")
    await sql.event_store.append("s-1", [NewEvent("Created", {"n": 1})])


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its content."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- owner-only files --------------------------------------------------------------------------


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize("mvp", [False, True], ids=["production", "mvp"])
async def test_database_wal_and_shm_files_are_owner_only(tmp_path: Path, mvp: bool) -> None:
    data = tmp_path / "new" / "data"
    config = SqlConfig.in_directory(data, mvp=mvp)
    async with SqlService(config) as sql:
        await write_some(sql)
        files = [path for db in config.databases for path in sidecars(db.path)]
        # While open, every database has its WAL and shared-memory files.
        assert len(files) == 3 * len(config.databases)
        assert {path: mode(path) for path in files} == dict.fromkeys(files, 384)
    assert mode(data) == 0o700
    assert mode(data.parent) == 0o700


@pytest.mark.usefixtures("open_umask")
def test_jsonl_log_files_are_owner_only_and_stay_so_after_rotation(tmp_path: Path) -> None:
    logger = logging.getLogger("async_store.test.jsonl_modes")
    sink = JsonlSink(tmp_path / "logs" / "store.jsonl", max_bytes=2_000, backup_count=2)
    logger.addHandler(sink)
    try:
        for n in range(100):
            logger.warning("record %d", n)
    finally:
        logger.removeHandler(sink)
        sink.close()
    files = sorted((tmp_path / "logs").iterdir())
    assert [f.name for f in files] == ["store.jsonl", "store.jsonl.1", "store.jsonl.2"]
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(tmp_path / "logs") == 0o700


@pytest.mark.usefixtures("open_umask")
async def test_backup_folders_and_files_are_owner_only(tmp_path: Path) -> None:
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as sql:
        await write_some(sql)
        manifest = await sql.backup(tmp_path / "backups")
    assert mode(tmp_path / "backups") == 0o700
    assert mode(manifest.directory) == 0o700
    inside = sorted(manifest.directory.iterdir())
    assert {path.name for path in inside} >= {"app_meta.db", "events.db", MANIFEST}
    assert {path.name: mode(path) for path in inside} == {path.name: 0o600 for path in inside}


@pytest.mark.usefixtures("open_umask")
async def test_files_of_an_offline_restore_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = SqlConfig.in_directory(data)
    async with SqlService(config) as sql:
        await write_some(sql)
        manifest = await sql.backup(tmp_path / "backups")
    # A file left behind by an interrupted restore, with loose permissions.
    leftover = data / "app_meta.db.restoring"
    leftover.write_bytes(b"partial")
    leftover.chmod(0o644)
    targets = {db.name: db.path for db in config.databases}
    aside = await restore_offline(manifest.directory, targets)
    assert mode(aside) == 0o700
    kept = sorted(aside.iterdir())
    assert kept
    assert {p.name: mode(p) for p in kept} == {p.name: 0o600 for p in kept}
    async with SqlService(config) as sql:
        await write_some(sql)
        files = [path for db in config.databases for path in sidecars(db.path)]
        assert len(files) == 6
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}


@pytest.mark.usefixtures("open_umask")
async def test_files_of_an_online_restore_stay_owner_only(tmp_path: Path) -> None:
    config = SqlConfig.in_directory(tmp_path / "data")
    async with SqlService(config) as sql:
        await write_some(sql)
        manifest = await sql.backup(tmp_path / "backups")
        await sql.restore(manifest.directory)
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('after', '1')")
        files = [path for db in config.databases for path in sidecars(db.path)]
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}


# -- backups cannot reach outside their folder -----------------------------------------------


@pytest.fixture
async def backup(tmp_path: Path) -> Path:
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as sql:
        await write_some(sql)
        manifest = await sql.backup(tmp_path / "backups")
    return manifest.directory


def rename_in_manifest(backup: Path, new_name: str) -> None:
    """Point the manifest's app_meta entry at ``new_name`` (size and sha256 unchanged)."""
    path = backup / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    entry = next(item for item in manifest["files"] if item["database"] == "app_meta")
    entry["name"] = new_name
    path.write_text(json.dumps(manifest), encoding="utf-8")


def plant_decoy(backup: Path, where: Path) -> Path:
    """A byte-for-byte copy of the backup's app_meta.db outside the backup: it matches the
    manifest's size and sha256, so only the name check can stop it being used."""
    where.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backup / "app_meta.db", where)
    (backup / "app_meta.db").unlink()
    return where


ESCAPES = [
    pytest.param(lambda b: "../app_meta.db", lambda b: b.parent / "app_meta.db", id="dot-dot"),
    pytest.param(
        lambda b: "x/../../app_meta.db", lambda b: b.parent / "app_meta.db", id="dot-dot-inside"
    ),
    pytest.param(
        lambda b: str(b.parent.parent / "elsewhere" / "app_meta.db"),
        lambda b: b.parent.parent / "elsewhere" / "app_meta.db",
        id="absolute",
    ),
    pytest.param(lambda b: "sub/app_meta.db", lambda b: b / "sub" / "app_meta.db", id="subfolder"),
]


@pytest.mark.parametrize(("name", "decoy"), ESCAPES)
async def test_verify_refuses_a_manifest_whose_names_leave_the_backup(
    backup: Path, name: object, decoy: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(name)
    assert callable(decoy)
    plant_decoy(backup, decoy(backup))
    rename_in_manifest(backup, name(backup))
    with pytest.raises(BackupError, match="not a plain file name inside the backup"):
        await verify_backup(backup)
    assert await asyncio.to_thread(main, ["verify", str(backup)]) == 1
    assert "not a plain file name inside the backup" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "decoy"), ESCAPES)
async def test_restore_refuses_a_manifest_whose_names_leave_the_backup(
    tmp_path: Path, backup: Path, name: object, decoy: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(name)
    assert callable(decoy)
    plant_decoy(backup, decoy(backup))
    rename_in_manifest(backup, name(backup))
    before = tree(tmp_path)
    code = await asyncio.to_thread(main, ["restore", "--data", str(tmp_path / "data"), str(backup)])
    assert code == 1
    assert "not a plain file name inside the backup" in capsys.readouterr().err
    assert tree(tmp_path) == before, "a refused restore wrote or changed a file"


@pytest.mark.parametrize(("name", "decoy"), ESCAPES)
async def test_online_restore_refuses_a_manifest_whose_names_leave_the_backup(
    tmp_path: Path, backup: Path, name: object, decoy: object
) -> None:
    assert callable(name)
    assert callable(decoy)
    plant_decoy(backup, decoy(backup))
    rename_in_manifest(backup, name(backup))
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as sql:
        await sql.app.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('live', '1')")
        with pytest.raises(BackupError, match="not a plain file name inside the backup"):
            await sql.restore(backup)
        assert await sql.app.fetch_val("SELECT value FROM settings WHERE key = 'live'") == "1"


async def test_a_backup_file_that_is_a_symbolic_link_is_refused(
    tmp_path: Path, backup: Path
) -> None:
    outside = plant_decoy(backup, tmp_path / "outside" / "app_meta.db")
    (backup / "app_meta.db").symlink_to(outside)
    with pytest.raises(BackupError, match="symbolic link"):
        await verify_backup(backup)
    targets = {"app_meta": tmp_path / "data" / "app_meta.db"}
    before = tree(tmp_path)
    with pytest.raises(BackupError, match="symbolic link"):
        await restore_offline(backup, targets)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"name": None}, id="name-null"),
        pytest.param({"name": 5}, id="name-number"),
        pytest.param({"name": ""}, id="name-empty"),
        pytest.param({"name": "."}, id="name-dot"),
        pytest.param({"name": "a\x00b"}, id="name-nul"),
        pytest.param({"name": "..\\app_meta.db"}, id="name-backslash"),
        pytest.param({"name": MANIFEST}, id="name-manifest"),
        pytest.param({"name": "events.db"}, id="name-twice"),
        pytest.param({"database": "events"}, id="database-twice"),
        pytest.param({"size_bytes": "12"}, id="size-text"),
        pytest.param({"sha256": None}, id="sha-null"),
        pytest.param({"schema_versions": [1]}, id="versions-list"),
        pytest.param({"user_version": -1}, id="user-version-negative"),
    ],
)
async def test_malformed_manifest_entries_are_refused(
    backup: Path, entry: dict[str, object]
) -> None:
    path = backup / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"][0].update(entry)
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BackupError) as caught:
        await verify_backup(backup)
    assert str(caught.value).strip()


# -- names are data ------------------------------------------------------------------------------

HOSTILE = [
    "x'); DROP TABLE events; --",
    'a"b"; DELETE FROM settings; --',
    "[settings]",
    "`events`",
    "Robert'); DROP TABLE knowledge_bases;--",
    "?",
    ":name",
    "$1 %s {0}",
    "a\nb\r\n-- c",
    "/* */ */ /*",
    "\u202eevil",
    "ünïcödé 名前",
]


def schema_of(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()
    return [(row[0], row[1]) for row in rows]


def one_value(path: Path, sql: str, parameters: tuple[object, ...]) -> object:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute(sql, parameters).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


async def test_hostile_names_are_stored_as_data(tmp_path: Path) -> None:
    """Checkpoint names, stream ids, event types and ids, snapshot streams, setting keys and
    entity ids full of quotes, comments and semicolons come back exactly as given, and the
    schema is untouched: none of them was spliced into SQL."""
    config = SqlConfig.in_directory(tmp_path / "data")
    async with SqlService(config) as sql:
        schemas = {db.name: schema_of(db.path) for db in sql.databases}
        store = sql.event_store
        async with StateManager(sql) as state:
            for number, name in enumerate(HOSTILE, start=1):
                await store.set_checkpoint(name, number)
                assert await store.get_checkpoint(name) == number
                result = await store.append(
                    name, [NewEvent(name, {name: name}, {"m": name}, f"{name}-{number}")]
                )
                events = [event async for event in store.read_stream(name)]
                assert [(e.stream_id, e.type, e.data, e.event_id) for e in events] == [
                    (name, name, {name: name}, f"{name}-{number}")
                ]
                assert result.last_version == 1
                await store.save_snapshot(name, 1, {name: [name]})
                snapshot = await store.load_snapshot(name)
                assert snapshot is not None
                assert snapshot.state == {name: [name]}
                await state.mutate(SettingSet(name, {name: name}))
                await state.mutate(KnowledgeBaseAdd(KnowledgeBase(name, name, description=name)))
            await state.flush()
            catalog = Catalog(sql.app)
            for name in HOSTILE:
                assert await catalog.setting(name) == {name: name}
                row = await catalog.row("knowledge_bases", name)
                assert row is not None
                assert (row["id"], row["name"], row["description"]) == (name, name, name)
        assert {db.name: schema_of(db.path) for db in sql.databases} == schemas
    events_file = config.databases[1].path
    for name in HOSTILE:
        stored = one_value(
            events_file, "SELECT name FROM event_checkpoints WHERE name = ?", (name,)
        )
        assert stored == name


@pytest.mark.parametrize("name", HOSTILE)
async def test_table_and_column_names_from_callers_are_checked_not_spliced(
    tmp_path: Path, name: str
) -> None:
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as sql:
        schemas = {db.name: schema_of(db.path) for db in sql.databases}
        catalog = Catalog(sql.app)
        with pytest.raises(QueryError, match="unknown table"):
            await catalog.rows(name)
        with pytest.raises(QueryError, match="unknown table"):
            await catalog.row(name, "x")
        with pytest.raises(QueryError, match="no column"):
            await sql.app.fetch_val("SELECT 1 AS one", column=name)
        with pytest.raises(StoreError):
            await sql.migrate(0, migration_set=name)
        assert {db.name: schema_of(db.path) for db in sql.databases} == schemas


async def test_a_hostile_migration_set_name_is_stored_as_data(tmp_path: Path) -> None:
    name = "app'); DROP TABLE schema_migrations; --"
    folder = tmp_path / "own" / "0001_extra"
    folder.mkdir(parents=True)
    (folder / "up.sql").write_text("CREATE TABLE app_extra(x INTEGER);\n", encoding="utf-8")
    (folder / "down.sql").write_text("DROP TABLE app_extra;\n", encoding="utf-8")
    own = MigrationSet.from_directory(name, tmp_path / "own")
    config = SqlConfig.in_directory(tmp_path / "data", mvp=True)
    async with SqlService(config, migration_sets=[own]) as sql:
        rows = await sql.app.fetch_all(
            "SELECT version FROM schema_migrations WHERE migration_set = ?", (name,)
        )
        assert [row[0] for row in rows] == [1]
        assert await sql.migrate(0, migration_set=name) == [f"reverted {name} 0001_extra"]
        assert await sql.app.fetch_val("SELECT count(*) FROM schema_migrations") > 0
        assert await sql.migrate(1, migration_set=name) == [f"applied {name} 0001_extra"]


async def test_a_database_named_with_sql_works(tmp_path: Path) -> None:
    name = "db'; DROP TABLE t; --"
    async with Database(DatabaseConfig(path=tmp_path / "t.db", name=name)) as db:
        await db.execute("CREATE TABLE t(x)")
        async with db.transaction() as tx, tx.transaction() as inner:
            await inner.execute("INSERT INTO t(x) VALUES (?)", (name,))
        assert await db.fetch_val("SELECT x FROM t") == name


# -- queries cannot take a pooled connection over ------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA query_only = 0",
        "PRAGMA query_only = OFF",
        "EXPLAIN PRAGMA query_only = 0",
        'pragma main."QUERY_ONLY"(false)',
        "-- comment\n/* another */ PRAGMA query_only=0",
        "PRAGMA trusted_schema = ON",
        "PRAGMA writable_schema = ON",
        "PRAGMA locking_mode = EXCLUSIVE",
        "BEGIN",
        "ATTACH DATABASE 'attached.db' AS other",
        "VACUUM INTO 'copy.db'",
    ],
)
async def test_a_read_cannot_make_its_reader_writable(
    tmp_path: Path, sql: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = DatabaseConfig(path=tmp_path / "t.db", readers=1)
    async with Database(config) as db:
        await db.execute("CREATE TABLE t(x)")
        await db.execute("INSERT INTO t(x) VALUES (1)")
        with pytest.raises(QueryError):
            await db.fetch_all(sql)
        assert await db.fetch_val("PRAGMA query_only") == 1
        with pytest.raises(ReadOnlyQuery):
            await on_sqlite(db).run_in_reader(lambda conn: conn.execute("DELETE FROM t"), "t")
        assert await db.fetch_val("SELECT count(*) FROM t") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.db"]


@pytest.mark.parametrize(
    "sql",
    [
        "COMMIT",
        "ROLLBACK",
        "END TRANSACTION",
        "BEGIN IMMEDIATE",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA query_only = 1",
        "PRAGMA user_version = 99",
        "PRAGMA journal_mode = DELETE",
        "RELEASE async_store_write",
        "ROLLBACK TRANSACTION TO SAVEPOINT async_store_write",
    ],
)
async def test_a_write_cannot_end_the_group_commit_or_reconfigure_the_writer(
    tmp_path: Path, sql: str
) -> None:
    async with Database(DatabaseConfig(path=tmp_path / "t.db", readers=1)) as db:
        await db.execute("CREATE TABLE t(x)")
        others = [db.execute("INSERT INTO t(x) VALUES (?)", (n,)) for n in range(20)]
        bad = db.execute(sql)
        results = await asyncio.gather(*others, bad, return_exceptions=True)
        assert isinstance(results[-1], QueryError)
        assert not any(isinstance(result, BaseException) for result in results[:-1])
        assert await db.fetch_val("SELECT count(*) FROM t") == 20
        async with db.transaction() as tx:
            assert await tx.fetch_val("PRAGMA foreign_keys") == 1
            assert await tx.fetch_val("PRAGMA query_only") == 0
        assert await db.fetch_val("PRAGMA user_version") == 0


# -- logs carry no parameter values unless asked -----------------------------------------------


async def test_logs_carry_no_parameter_values_unless_the_application_adds_them(
    tmp_path: Path,
) -> None:
    """Failing calls whose parameters and values hold a secret, and an application that logs
    the errors it got: neither sink writes the secret. The sinks write a record's ``extra``,
    so an application that wants values logged passes them there, and then they are written."""
    secret = f"s3cr3t-{uuid.uuid4()}"
    logger = logging.getLogger("async_store")
    app_log = logging.getLogger("async_store.test_security")
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as sql:
        jsonl = JsonlSink(tmp_path / "logs" / "store.jsonl")
        table = SqlLogSink(sql.app, flush_interval=0.05)
        await table.start()
        logger.addHandler(jsonl)
        logger.addHandler(table)
        previous_level = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            failures: list[StoreError] = []
            calls = [
                sql.app.execute(
                    "INSERT INTO knowledge_bases(id, name, chunk_size) VALUES (?, ?, ?)",
                    (secret, secret, -1),
                ),
                sql.app.fetch_all("SELECT ?", secret),
                sql.app.execute_many("SELECT ?", [secret]),
                sql.app.execute("INSERT INTO settings(key, value) VALUES (?, ?)", (secret, secret)),
                sql.event_store.append("s", [NewEvent("T", {"k": {secret}})]),  # type: ignore[dict-item]
                sql.event_store.append("s", [NewEvent("T", {secret: 1}, event_id="e-1")]),
                sql.event_store.append("s", [NewEvent("T", {"k": 2}, event_id="e-1")]),
            ]
            for call in calls:
                try:
                    await call
                except StoreError as exc:
                    failures.append(exc)
            async with StateManager(sql) as state:
                for delta in (SettingSet("api_key", {secret}), SettingSet("api_key", (secret,))):
                    try:
                        await state.mutate(delta)
                    except StoreError as exc:
                        failures.append(exc)
            assert len(failures) == 8, failures
            assert any(isinstance(exc, ConcurrencyError) for exc in failures)
            for failure in failures:
                app_log.error("the store refused a call", exc_info=failure)
            app_log.warning("asked for", extra={"parameters": [f"{secret}-asked"]})
        finally:
            logger.removeHandler(jsonl)
            logger.removeHandler(table)
            logger.setLevel(previous_level)
            await table.aclose()
            jsonl.close()
        rows = await sql.app.fetch_all("SELECT level, logger, message, extra FROM logs")
    file_text = (tmp_path / "logs" / "store.jsonl").read_text(encoding="utf-8")
    table_text = json.dumps([list(row) for row in rows], ensure_ascii=False)
    for text in (file_text, table_text):
        assert text.count("the store refused a call") == 8
        assert f"{secret}-asked" in text, "a value passed in extra was not written"
        assert text.count(secret) == text.count(f"{secret}-asked"), "a parameter value leaked"
