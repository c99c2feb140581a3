"""Adopting an encode/databases application's SQLite file under ``SqlService``: a migration set
with a baseline records its versions up to it without running them, the library's own sets and
the later versions then run, and the application's rows stay as they were. Without a baseline
the file is still refused; on a store that has a record the baseline does nothing; an edited
baselined migration is still found out; a failing first migration leaves the file unadopted."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from async_store import MigrationError, NewEvent, SqlConfig, SqlService
from async_store.migrations.runner import MigrationSet
from tests.contract.test_migrations import NOTES_V1, NOTES_V2, write_set
from tests.test_migrations import applied, schema_of, user_version

USERS = "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)"


def databases_app_file(path: Path, *, version: int = 0, extra: str = "") -> Path:
    """The file an encode/databases application leaves: its tables and rows, in SQLite's
    default rollback-journal mode, and no migration record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(NOTES_V1[0].rstrip(";"))
        conn.execute(USERS)
        if extra:
            conn.execute(extra)
        conn.executemany("INSERT INTO notes(body) VALUES (?)", [("first",), ("second",)])
        conn.execute("INSERT INTO users(email) VALUES ('a@example.com')")
        if version:
            conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()
    return path


def record(path: Path) -> list[tuple[str, int, str, float]]:
    """The record of the application's set: version, name as recorded, duration."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT migration_set, version, name, duration_ms FROM schema_migrations"
            " WHERE migration_set = 'notes' ORDER BY version"
        ).fetchall()
    finally:
        conn.close()


def notes_set(tmp_path: Path, versions: int, baseline: int) -> MigrationSet:
    folders = {"0001_notes": NOTES_V1, "0002_tags": NOTES_V2}
    root = write_set(tmp_path / "m", dict(list(folders.items())[:versions]))
    return MigrationSet.from_directory("notes", root, baseline=baseline)


async def test_a_databases_file_is_adopted_at_its_baseline(tmp_path: Path) -> None:
    path = databases_app_file(tmp_path / "app.db")
    mine = notes_set(tmp_path, 1, baseline=1)
    async with SqlService(SqlConfig.mvp(path), migration_sets=[mine]) as sql:
        assert await sql.migration_status()  # readable
        rows = await sql.app.fetch_all("SELECT body FROM notes ORDER BY id")
        assert [row["body"] for row in rows] == ["first", "second"]
        assert await sql.app.fetch_val("SELECT email FROM users") == "a@example.com"
        # The library's own tables are there, and work.
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('k', '1')")
        await sql.event_store.append("s-1", [NewEvent("Happened", {"n": 1})])
    assert record(path) == [("notes", 1, "notes (baseline)", 0.0)]
    assert ("app_meta", 1) in applied(path)
    assert ("events", 2) in applied(path)
    assert user_version(path) == 1  # follows app_meta

    # A later version of the application's set applies on top.
    mine = notes_set(tmp_path, 2, baseline=1)
    async with SqlService(SqlConfig.mvp(path), migration_sets=[mine]) as sql:
        assert await sql.app.fetch_val("SELECT count(*) FROM notes WHERE tag = ''") == 2
        status = {(s.migration_set, s.version): s for s in await sql.migration_status()}
        for version in (1, 2):
            assert (status["notes", version].applied, status["notes", version].checksum_ok) == (
                True,
                True,
            )
    assert [row[:3] for row in record(path)] == [
        ("notes", 1, "notes (baseline)"),
        ("notes", 2, "tags"),
    ]


async def test_a_baseline_records_every_version_up_to_it(tmp_path: Path) -> None:
    path = databases_app_file(tmp_path / "app.db", extra=NOTES_V2[0].split(";")[0])
    conn = sqlite3.connect(path)
    conn.execute(NOTES_V2[0].split(";")[1])
    conn.close()
    mine = notes_set(tmp_path, 2, baseline=2)
    async with SqlService(SqlConfig.mvp(path), migration_sets=[mine]) as sql:
        assert await sql.migrate() == []
    assert record(path) == [
        ("notes", 1, "notes (baseline)", 0.0),
        ("notes", 2, "tags (baseline)", 0.0),
    ]


async def test_migrate_says_what_it_baselined(tmp_path: Path) -> None:
    path = databases_app_file(tmp_path / "app.db")
    mine = notes_set(tmp_path, 2, baseline=1)
    async with SqlService(SqlConfig.mvp(path), migration_sets=[mine], migrate=False) as sql:
        done = await sql.migrate()
    assert done[0] == "baselined notes at 0001"
    assert "applied notes 0002_tags" in done
    assert "applied app_meta 0001_initial" in done


async def test_without_a_baseline_the_file_is_still_refused(tmp_path: Path) -> None:
    path = databases_app_file(tmp_path / "app.db")
    before = path.read_bytes()
    mine = notes_set(tmp_path, 1, baseline=0)
    with pytest.raises(MigrationError, match=r"belongs to another application.*baseline=N"):
        await SqlService(SqlConfig.mvp(path), migration_sets=[mine]).start()
    with pytest.raises(MigrationError, match="belongs to another application"):
        await SqlService(SqlConfig.mvp(path)).start()
    assert path.read_bytes() == before


async def test_the_other_applications_user_version_is_taken_over(tmp_path: Path) -> None:
    path = databases_app_file(tmp_path / "app.db", version=12)
    async with SqlService(SqlConfig.mvp(path), migration_sets=[notes_set(tmp_path, 2, 1)]):
        pass
    assert user_version(path) == 1
    # Adopted by a walk of the application's set alone: app_meta, which user_version
    # follows, then starts from a clean user_version.
    path = databases_app_file(tmp_path / "other.db", version=12)
    mine = notes_set(tmp_path, 2, 1)
    async with SqlService(SqlConfig.mvp(path), migration_sets=[mine], migrate=False) as sql:
        assert await sql.migrate(migration_set="notes") == [
            "baselined notes at 0001",
            "applied notes 0002_tags",
        ]
        assert user_version(path) == 0
        assert "applied app_meta 0001_initial" in await sql.migrate()
    assert user_version(path) == 1


async def test_a_new_file_runs_the_versions_below_the_baseline(tmp_path: Path) -> None:
    path = tmp_path / "new" / "app.db"
    mine = notes_set(tmp_path, 2, baseline=2)
    async with SqlService(SqlConfig.mvp(path), migration_sets=[mine]) as sql:
        await sql.app.execute("INSERT INTO notes(body, tag) VALUES ('x', 'y')")
    assert [(row[1], row[2]) for row in record(path)] == [(1, "notes"), (2, "tags")]


@pytest.mark.parametrize(
    ("first", "then"),
    [
        pytest.param(2, 1, id="recorded-beyond-the-baseline"),
        pytest.param(1, 2, id="recorded-below-the-baseline"),
    ],
)
async def test_a_baseline_on_a_recorded_store_does_nothing(
    tmp_path: Path, first: int, then: int
) -> None:
    """The baseline only adopts a file without a record: here the later version runs as
    usual, and nothing recorded is rewritten."""
    path = tmp_path / "app.db"
    async with SqlService(SqlConfig.mvp(path), migration_sets=[notes_set(tmp_path, first, 0)]):
        pass
    before = record(path)
    async with SqlService(
        SqlConfig.mvp(path), migration_sets=[notes_set(tmp_path, 2, then)]
    ) as sql:
        assert await sql.app.fetch_val("SELECT count(*) FROM notes WHERE tag = ''") == 0
    after = record(path)
    assert after[: len(before)] == before
    assert [row[:3] for row in after] == [("notes", 1, "notes"), ("notes", 2, "tags")]
    assert all(row[2] in ("notes", "tags") for row in after)


async def test_an_edited_migration_below_the_baseline_is_still_found(tmp_path: Path) -> None:
    path = databases_app_file(tmp_path / "app.db")
    async with SqlService(SqlConfig.mvp(path), migration_sets=[notes_set(tmp_path, 2, 1)]):
        pass
    up = tmp_path / "m" / "0001_notes" / "up.sql"
    up.write_text(up.read_text() + "\nCREATE INDEX notes_body ON notes(body);\n")
    edited = MigrationSet.from_directory("notes", tmp_path / "m", baseline=1)
    with pytest.raises(MigrationError, match=r"0001_notes/up.sql was edited after it was applied"):
        await SqlService(SqlConfig.mvp(path), migration_sets=[edited]).start()


async def test_a_failing_first_migration_leaves_the_file_unadopted(tmp_path: Path) -> None:
    """The application has a table the library's app_meta set creates too: the adoption
    commits with that migration, so neither is kept."""
    clash = "CREATE TABLE settings(k TEXT)"
    path = databases_app_file(tmp_path / "app.db", version=7, extra=clash)
    schema = schema_of(path)
    with pytest.raises(MigrationError, match="settings already exists"):
        await SqlService(SqlConfig.mvp(path), migration_sets=[notes_set(tmp_path, 2, 1)]).start()
    assert schema_of(path) == schema
    assert user_version(path) == 7
    conn = sqlite3.connect(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "schema_migrations" not in tables
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 2
    finally:
        conn.close()


async def test_services_starting_at_once_adopt_the_file_once(tmp_path: Path) -> None:
    path = databases_app_file(tmp_path / "app.db")
    services = [
        SqlService(SqlConfig.mvp(path), migration_sets=[notes_set(tmp_path, 2, 1)])
        for _ in range(3)
    ]
    try:
        await asyncio.gather(*(service.start() for service in services))
    finally:
        await asyncio.gather(*(service.close() for service in services))
    assert [row[:3] for row in record(path)] == [
        ("notes", 1, "notes (baseline)"),
        ("notes", 2, "tags"),
    ]
    assert applied(path).count(("app_meta", 1)) == 1


async def test_production_mode_adopts_the_database_of_the_baselined_set(tmp_path: Path) -> None:
    databases_app_file(tmp_path / "data" / "app_meta.db")
    config = SqlConfig.in_directory(tmp_path / "data")
    async with SqlService(config, migration_sets=[notes_set(tmp_path, 2, 1)]) as sql:
        assert await sql.app.fetch_val("SELECT count(*) FROM notes") == 2
        await sql.event_store.append("s-1", [NewEvent("Happened", {"n": 1})])
    databases_app_file(tmp_path / "other" / "events.db")
    other = SqlConfig.in_directory(tmp_path / "other")
    with pytest.raises(MigrationError, match="events: the file holds tables"):
        await SqlService(other, migration_sets=[notes_set(tmp_path, 2, 1)]).start()


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        pytest.param(3, r"baseline 3 is not one of its versions \(0..2\)", id="beyond"),
        pytest.param(-1, "baseline -1 is not one of its versions", id="negative"),
        pytest.param(True, "baseline must be an int", id="bool"),
        pytest.param("1", "baseline must be an int", id="text"),
    ],
)
def test_a_baseline_that_is_not_a_version_is_refused(
    tmp_path: Path, baseline: object, message: str
) -> None:
    with pytest.raises(MigrationError, match=message):
        notes_set(tmp_path, 2, baseline=baseline)  # type: ignore[arg-type]


def test_a_built_in_set_takes_no_baseline() -> None:
    app_meta = MigrationSet.builtin("app_meta")
    with pytest.raises(MigrationError, match="takes no baseline"):
        MigrationSet(app_meta.name, app_meta.migrations, baseline=1)
