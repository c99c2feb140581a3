"""The migration runner on SQLite, beyond the contract (``tests/contract/test_migrations.py``):
which file each set goes to, ``user_version``, the events rebuild, a foreign file, loading and
splitting SQL, and rebuilds with foreign keys off."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from async_store import MigrationError, NewEvent, SqlConfig, SqlService
from async_store.migrations.runner import MigrationSet
from async_store.sqlite._migrations import split_statements
from tests.conftest import on_sqlite
from tests.contract.test_migrations import NOTES_V1, NOTES_V2, write_set


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " AND name != 'schema_migrations' ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()
    return rows


def applied(path: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT migration_set, version FROM schema_migrations ORDER BY migration_set, version"
        ).fetchall()
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


async def test_start_applies_both_sets_to_their_own_databases(tmp_path: Path) -> None:
    async with SqlService(SqlConfig.in_directory(tmp_path)) as sql:
        assert await sql.app.fetch_val("SELECT count(*) FROM knowledge_bases") == 0
        assert await sql.events.fetch_val("SELECT count(*) FROM events") == 0
    assert applied(tmp_path / "app_meta.db") == [("app_meta", 1)]
    assert applied(tmp_path / "events.db") == [("events", 1), ("events", 2)]
    assert user_version(tmp_path / "app_meta.db") == 1
    assert user_version(tmp_path / "events.db") == 2


async def test_mvp_applies_both_sets_to_one_file(tmp_path: Path) -> None:
    async with SqlService(SqlConfig.in_directory(tmp_path, mvp=True)) as sql:
        assert await sql.app.fetch_val("SELECT count(*) FROM events") == 0
    assert applied(tmp_path / "app_meta.db") == [("app_meta", 1), ("events", 1), ("events", 2)]
    assert user_version(tmp_path / "app_meta.db") == 1
    assert not (tmp_path / "events.db").exists()


@pytest.mark.parametrize(
    "mvp", [pytest.param(False, id="production"), pytest.param(True, id="mvp")]
)
async def test_up_down_up_leaves_the_same_schema(tmp_path: Path, mvp: bool) -> None:
    config = SqlConfig.in_directory(tmp_path, mvp=mvp)
    async with SqlService(config) as sql:
        pass
    files = [tmp_path / "app_meta.db"] + ([] if mvp else [tmp_path / "events.db"])
    first = [schema_of(f) for f in files]
    async with SqlService(config, migrate=False) as sql:
        reverted = await sql.migrate(0, migration_set="app_meta")
        assert reverted == ["reverted app_meta 0001_initial"]
        await sql.migrate(0, migration_set="events")
    assert all(not [row for row in schema_of(f) if row[0] != "index"] for f in files)
    assert user_version(tmp_path / "app_meta.db") == 0
    async with SqlService(config) as sql:
        pass
    assert [schema_of(f) for f in files] == first


@pytest.mark.parametrize("mvp", [False, True], ids=["production", "mvp"])
async def test_a_log_written_at_events_1_carries_on_after_the_rebuild(
    tmp_path: Path, mvp: bool
) -> None:
    """events 0002 rebuilds the events table: a log written before it reads, verifies and grows
    on as if nothing happened."""
    config = SqlConfig.in_directory(tmp_path, mvp=mvp)
    async with SqlService(config) as sql:
        await sql.migrate(1, migration_set="events")
        first = await sql.event_store.append("kb-1", [NewEvent("Added", {"n": n}) for n in (1, 2)])
        await sql.event_store.append("kb-2", [NewEvent("Added", {"n": 3})])
    async with SqlService(config) as sql:  # migrates events to its newest version on start
        assert (await sql.event_store.verify_events()).ok
        later = await sql.event_store.append("kb-1", [NewEvent("Added", {"n": 4})])
        assert (later.first_version, later.last_position) == (3, first.last_position + 2)
        stream = [e.data["n"] async for e in sql.event_store.read_stream("kb-1")]
        assert stream == [1, 2, 4]
    file = tmp_path / ("app_meta.db" if mvp else "events.db")
    assert ("events", 2) in applied(file)


async def test_application_sets_up_and_down(tmp_path: Path) -> None:
    root = write_set(tmp_path / "m", {"0001_notes": NOTES_V1, "0002_tags": NOTES_V2})
    own = MigrationSet.from_directory("notes", root)
    config = SqlConfig.in_directory(tmp_path / "data")
    async with SqlService(config, migration_sets=[own]) as sql:
        await sql.app.execute("INSERT INTO notes(body, tag) VALUES ('hello', 'x')")
        assert await sql.migrate(1, migration_set="notes") == ["reverted notes 0002_tags"]
        assert await sql.app.fetch_val("SELECT body FROM notes") == "hello"
        assert await sql.migrate(migration_set="notes") == ["applied notes 0002_tags"]
    assert user_version(tmp_path / "data" / "app_meta.db") == 1  # follows app_meta only
    with pytest.raises(MigrationError, match="reserved"):
        MigrationSet.from_directory("app_meta", root)


async def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "app_meta.db")
    conn.execute("CREATE TABLE contacts(name TEXT)")
    conn.execute("PRAGMA user_version = 12")
    conn.commit()
    conn.close()
    with pytest.raises(MigrationError, match="belongs to another application"):
        await SqlService(SqlConfig.in_directory(tmp_path)).start()
    assert schema_of(tmp_path / "app_meta.db") == [
        ("table", "contacts", "CREATE TABLE contacts(name TEXT)")
    ]


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        pytest.param(["0001_a", "0003_c"], "expected 0002, found 0003", id="gap"),
        pytest.param(["0002_b"], "expected 0001, found 0002", id="not-from-one"),
        pytest.param(["0001_a", "01_b"], "named NNNN_name", id="bad-name"),
    ],
)
def test_version_folders_are_checked_on_load(
    tmp_path: Path, folders: list[str], message: str
) -> None:
    write_set(tmp_path, dict.fromkeys(folders, ("SELECT 1;", "SELECT 1;")))
    with pytest.raises(MigrationError, match=message):
        MigrationSet.from_directory("mine", tmp_path)


def test_a_missing_down_file_is_refused(tmp_path: Path) -> None:
    write_set(tmp_path, {"0001_a": ("SELECT 1;", "SELECT 1;")})
    (tmp_path / "0001_a" / "down.sql").unlink()
    with pytest.raises(MigrationError, match=r"0001_a: down\.sql is missing"):
        MigrationSet.from_directory("mine", tmp_path)


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("BEGIN;", id="begin"),
        pytest.param("begin immediate;", id="begin-immediate"),
        pytest.param("COMMIT;", id="commit"),
        pytest.param("END TRANSACTION;", id="end"),
        pytest.param("ROLLBACK;", id="rollback"),
        pytest.param("SAVEPOINT s;", id="savepoint"),
        pytest.param("RELEASE s;", id="release"),
        pytest.param("VACUUM;", id="vacuum"),
        pytest.param("PRAGMA journal_mode = DELETE;", id="journal-mode"),
        pytest.param("PRAGMA main.synchronous = OFF;", id="synchronous"),
        pytest.param("/* sneaky */ PRAGMA foreign_keys=OFF;", id="foreign-keys"),
    ],
)
def test_files_with_forbidden_statements_are_refused_on_load(
    tmp_path: Path, statement: str
) -> None:
    write_set(tmp_path, {"0001_a": (f"CREATE TABLE a(x);\n{statement}\n", "DROP TABLE a;")})
    with pytest.raises(MigrationError, match=r"0001_a/up\.sql: statement 2 .* is not allowed"):
        MigrationSet.from_directory("mine", tmp_path)


def test_triggers_and_strings_are_split_correctly() -> None:
    sql = (
        "-- leading comment; with a semicolon\n"
        "CREATE TABLE t(x TEXT DEFAULT 'a;b');\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n"
        "  UPDATE t SET x = 'c;d' WHERE rowid = new.rowid;\n"
        "  SELECT 1;\nEND;\n"
        "/* block; comment */ INSERT INTO t VALUES ('e'); SELECT 2;"
    )
    statements = split_statements(sql)
    assert len(statements) == 4
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")
    with pytest.raises(MigrationError, match="not terminated"):
        split_statements("SELECT 1; SELECT 2")


REBUILD_V1 = (
    "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);\n"
    "CREATE TABLE child(id INTEGER PRIMARY KEY,"
    " parent_id INTEGER NOT NULL REFERENCES parent(id) ON DELETE CASCADE);\n"
    "CREATE INDEX idx_child_parent ON child(parent_id);",
    "DROP TABLE child;\nDROP TABLE parent;",
)
REBUILD_V2 = (
    "-- async_store: foreign_keys=off\n"
    "CREATE TABLE parent_new(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');\n"
    "INSERT INTO parent_new(id, name) SELECT id, coalesce(name, '') FROM parent;\n"
    "DROP TABLE parent;\n"
    "ALTER TABLE parent_new RENAME TO parent;",
    "SELECT 1;",
)


async def test_a_rebuild_with_foreign_keys_off_keeps_child_rows(tmp_path: Path) -> None:
    config = SqlConfig.in_directory(tmp_path / "data")
    v1 = MigrationSet.from_directory("tree", write_set(tmp_path / "v1", {"0001_tree": REBUILD_V1}))
    async with SqlService(config, migration_sets=[v1]) as sql:
        await sql.app.execute("INSERT INTO parent(id, name) VALUES (1, NULL), (2, 'b')")
        await sql.app.execute("INSERT INTO child(parent_id) VALUES (1), (1), (2)")
    v2 = MigrationSet.from_directory(
        "tree", write_set(tmp_path / "v2", {"0001_tree": REBUILD_V1, "0002_rebuild": REBUILD_V2})
    )
    async with SqlService(config, migration_sets=[v2]) as sql:
        assert await sql.app.fetch_val("SELECT count(*) FROM child") == 3
        assert await sql.app.fetch_val("SELECT name FROM parent WHERE id = 1") == ""
        assert (
            await on_sqlite(sql.app).run_on_writer(
                lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]
            )
            == 1
        )
        await sql.app.execute("DELETE FROM parent WHERE id = 1")
        assert await sql.app.fetch_val("SELECT count(*) FROM child") == 1


async def test_a_rebuild_that_breaks_foreign_keys_is_refused(tmp_path: Path) -> None:
    config = SqlConfig.in_directory(tmp_path / "data")
    v1 = MigrationSet.from_directory("tree", write_set(tmp_path / "v1", {"0001_tree": REBUILD_V1}))
    async with SqlService(config, migration_sets=[v1]) as sql:
        await sql.app.execute("INSERT INTO parent(id, name) VALUES (1, 'a'), (2, 'b')")
        await sql.app.execute("INSERT INTO child(parent_id) VALUES (1), (2)")
    lossy = (
        "-- async_store: foreign_keys=off\n"
        "CREATE TABLE parent_new(id INTEGER PRIMARY KEY, name TEXT);\n"
        "INSERT INTO parent_new SELECT * FROM parent WHERE id = 1;\n"
        "DROP TABLE parent;\nALTER TABLE parent_new RENAME TO parent;",
        "SELECT 1;",
    )
    v2 = MigrationSet.from_directory(
        "tree", write_set(tmp_path / "v2", {"0001_tree": REBUILD_V1, "0002_lossy": lossy})
    )
    database = tmp_path / "data" / "app_meta.db"
    before = schema_of(database)
    with pytest.raises(MigrationError, match="foreign key violation"):
        await SqlService(config, migration_sets=[v2]).start()
    assert schema_of(database) == before
    async with SqlService(config, migration_sets=[v1]) as sql:
        assert await sql.app.fetch_val("SELECT count(*) FROM parent") == 2
        assert (
            await on_sqlite(sql.app).run_on_writer(
                lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]
            )
            == 1
        )


def test_package_sets_load_through_importlib_resources() -> None:
    loaded = MigrationSet.builtin("events")
    assert loaded.latest >= 1
    assert loaded.database == "events"
    with pytest.raises(MigrationError, match="no built-in migration set"):
        MigrationSet.builtin("other")
    with pytest.raises(MigrationError, match="not found"):
        MigrationSet.from_package("mine", "async_store", "no_such_folder")
