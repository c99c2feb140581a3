"""The migration runner on every backend: start-up applies what is pending once, refusals that
change nothing (an edited, a failing, a newer or a gapped record), down and status, application
sets, a store of another application adopted at a set's baseline, and the built-in schema's
foreign keys.

The record is read through the contract (``schema_migrations``); a schema is compared by what a
query can see."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from async_store import (
    Database,
    ForeignKeyViolation,
    MigrationError,
    QueryError,
    SqlConfig,
    SqlService,
)
from async_store.migrations.runner import MigrationSet
from tests.contract.conftest import Backend


def write_set(root: Path, versions: dict[str, tuple[str, str]]) -> Path:
    """Create ``root/NNNN_name/{up,down}.sql`` for each ``{"0001_name": (up, down)}``."""
    for folder, (up, down) in versions.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "up.sql").write_bytes(up.encode())
        (root / folder / "down.sql").write_bytes(down.encode())
    return root


NOTES_V1 = ("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);", "DROP TABLE notes;")
NOTES_V2 = (
    "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT '';\n"
    "CREATE INDEX idx_notes_tag ON notes(tag);",
    "DROP INDEX idx_notes_tag;\nALTER TABLE notes DROP COLUMN tag;",
)


async def applied(sql: SqlService) -> list[tuple[str, int]]:
    """What the app database's record says is applied."""
    rows = await sql.app.fetch_all(
        "SELECT migration_set, version FROM schema_migrations ORDER BY migration_set, version"
    )
    return [(row[0], row[1]) for row in rows]


async def test_a_second_start_applies_nothing(sql_config: Callable[..., SqlConfig]) -> None:
    async with SqlService(sql_config()) as sql:
        before = await applied(sql)
    async with SqlService(sql_config()) as sql:
        assert await sql.migrate() == []
        assert await applied(sql) == before


async def test_status_lists_applied_and_pending(
    tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    own = MigrationSet.from_directory("notes", write_set(tmp_path / "m", {"0001_notes": NOTES_V1}))
    config = sql_config()
    async with SqlService(config, migration_sets=[own], migrate=False) as sql:
        status = await sql.migration_status()
        assert [(s.migration_set, s.version, s.applied) for s in status] == [
            ("app_meta", 1, False),
            ("notes", 1, False),
            ("events", 1, False),
            ("events", 2, False),
        ]
        await sql.migrate()
        status = await sql.migration_status()
        assert all(s.applied and s.checksum_ok for s in status)
        assert all(s.applied_at is not None for s in status)


async def test_an_application_set_walks_down_and_up_again(
    tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    root = write_set(tmp_path / "m", {"0001_notes": NOTES_V1, "0002_tags": NOTES_V2})
    own = MigrationSet.from_directory("notes", root)
    async with SqlService(sql_config(), migration_sets=[own]) as sql:
        await sql.app.execute("INSERT INTO notes(body, tag) VALUES ('hello', 'x')")
        assert await sql.migrate(1, migration_set="notes") == ["reverted notes 0002_tags"]
        with pytest.raises(QueryError):
            await sql.app.fetch_val("SELECT tag FROM notes")
        assert ("notes", 2) not in await applied(sql)
        assert await sql.migrate(0, migration_set="notes") == ["reverted notes 0001_notes"]
        with pytest.raises(QueryError):
            await sql.app.fetch_val("SELECT count(*) FROM notes")
        assert await sql.migrate(migration_set="notes") == [
            "applied notes 0001_notes",
            "applied notes 0002_tags",
        ]
        assert await sql.app.fetch_val("SELECT count(*) FROM notes WHERE tag = ''") == 0
        assert [a for a in await applied(sql) if a[0] == "notes"] == [("notes", 1), ("notes", 2)]


async def test_a_failing_statement_leaves_nothing_behind(
    backend: Backend, tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    root = write_set(
        tmp_path / "m",
        {
            "0001_notes": NOTES_V1,
            "0002_broken": (
                "CREATE TABLE extra(x INTEGER);\nINSERT INTO notes(nope) VALUES (1);",
                "DROP TABLE extra;",
            ),
        },
    )
    config = sql_config()
    first = MigrationSet.from_directory(
        "notes", write_set(tmp_path / "v1", {"0001_notes": NOTES_V1})
    )
    async with SqlService(config, migration_sets=[first]) as sql:
        await sql.app.execute("INSERT INTO notes(body) VALUES ('kept')")
        record = await applied(sql)
    before = backend.schema(tmp_path)
    sql = SqlService(config, migration_sets=[MigrationSet.from_directory("notes", root)])
    with pytest.raises(MigrationError, match=r"0002_broken/up\.sql: statement 2 failed"):
        await sql.start()
    assert backend.schema(tmp_path) == before
    async with SqlService(config, migration_sets=[first]) as sql:
        assert await applied(sql) == record
        assert await sql.app.fetch_val("SELECT body FROM notes") == "kept"


async def test_another_applications_store_is_adopted_at_a_baseline(
    backend: Backend, tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    """A store holding an application's tables and no migration record (what an
    encode/databases application leaves) is refused, unless the application's set has a
    baseline: its versions up to it are recorded without running, and the rest runs."""
    config = sql_config(mvp=True)
    async with Database(config.app) as database:
        await database.execute(NOTES_V1[0])
        await database.execute("INSERT INTO notes(body) VALUES ('kept')")
    before = backend.schema(tmp_path)
    root = write_set(tmp_path / "m", {"0001_notes": NOTES_V1, "0002_tags": NOTES_V2})
    plain = MigrationSet.from_directory("notes", root)
    with pytest.raises(MigrationError, match="belongs to another application"):
        await SqlService(config, migration_sets=[plain]).start()
    assert backend.schema(tmp_path) == before
    adopting = MigrationSet.from_directory("notes", root, baseline=1)
    async with SqlService(config, migration_sets=[adopting]) as sql:
        assert await sql.app.fetch_val("SELECT body || tag FROM notes") == "kept"
        assert ("notes", 1) in await applied(sql)
        assert ("app_meta", 1) in await applied(sql)
        assert all(s.applied and s.checksum_ok for s in await sql.migration_status())


async def test_an_edited_migration_is_refused_but_a_crlf_change_is_not(
    backend: Backend, tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    root = write_set(tmp_path / "m", {"0001_notes": NOTES_V1})
    config = sql_config()
    async with SqlService(config, migration_sets=[MigrationSet.from_directory("notes", root)]):
        pass
    up = root / "0001_notes" / "up.sql"
    up.write_bytes(b"\xef\xbb\xbf" + NOTES_V1[0].replace("\n", "\r\n").encode())
    async with SqlService(config, migration_sets=[MigrationSet.from_directory("notes", root)]):
        pass
    up.write_text(NOTES_V1[0].replace("NOT NULL", ""))
    before = backend.schema(tmp_path)
    with pytest.raises(MigrationError, match=r"0001_notes/up\.sql was edited after it was applied"):
        await SqlService(
            config, migration_sets=[MigrationSet.from_directory("notes", root)]
        ).start()
    assert backend.schema(tmp_path) == before


async def test_a_database_newer_than_the_code_is_refused(
    tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    both = write_set(tmp_path / "both", {"0001_notes": NOTES_V1, "0002_tags": NOTES_V2})
    only_first = write_set(tmp_path / "first", {"0001_notes": NOTES_V1})
    config = sql_config()
    async with SqlService(config, migration_sets=[MigrationSet.from_directory("notes", both)]):
        pass
    older_code = SqlService(
        config, migration_sets=[MigrationSet.from_directory("notes", only_first)]
    )
    with pytest.raises(MigrationError, match="newer than this code"):
        await older_code.start()


async def test_a_built_in_database_from_the_future_is_refused(
    sql_config: Callable[..., SqlConfig],
) -> None:
    async with SqlService(sql_config()) as sql:
        await sql.events.execute(
            "INSERT INTO schema_migrations VALUES ('events', 3, 'future', 'x', 'now', 1)"
        )
    with pytest.raises(MigrationError, match="events version 3, newer than this code"):
        await SqlService(sql_config()).start()


async def test_a_gap_in_the_record_is_refused(
    tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    root = write_set(tmp_path / "m", {"0001_notes": NOTES_V1, "0002_tags": NOTES_V2})
    config = sql_config()
    async with SqlService(config, migration_sets=[MigrationSet.from_directory("notes", root)]):
        pass
    async with SqlService(config, migrate=False) as sql:
        await sql.app.execute(
            "DELETE FROM schema_migrations WHERE migration_set = 'notes' AND version = 1"
        )
    with pytest.raises(MigrationError, match="version 1 is missing"):
        await SqlService(
            config, migration_sets=[MigrationSet.from_directory("notes", root)]
        ).start()


async def test_the_real_schema_enforces_foreign_keys_and_cascades(sql: SqlService) -> None:
    app = sql.app
    with pytest.raises(ForeignKeyViolation):
        await app.execute(
            "INSERT INTO documents(id, kb_id, title, content_hash, size_bytes)"
            " VALUES ('d1', 'missing', 't', ?, 1)",
            ("a" * 64,),
        )
    await app.execute("INSERT INTO knowledge_bases(id, name) VALUES ('kb', 'Docs')")
    await app.execute(
        "INSERT INTO documents(id, kb_id, title, content_hash, size_bytes)"
        " VALUES ('d1', 'kb', 't', ?, 1)",
        ("a" * 64,),
    )
    await app.execute(
        "INSERT INTO document_chunks(document_id, kb_id, chunk_index, content, content_hash)"
        " VALUES ('d1', 'kb', 0, 'text', ?)",
        ("b" * 64,),
    )
    await app.execute("DELETE FROM knowledge_bases WHERE id = 'kb'")
    assert await app.fetch_val("SELECT count(*) FROM documents") == 0
    assert await app.fetch_val("SELECT count(*) FROM document_chunks") == 0


async def test_unknown_target_set_and_version_are_refused(sql: SqlService) -> None:
    with pytest.raises(MigrationError, match="unknown migration set"):
        await sql.migrate(0, migration_set="nope")
    with pytest.raises(MigrationError, match="cannot migrate to 9"):
        await sql.migrate(9)
