"""The embedded SQL schema (``migrations/``), checked with ``sqlite3`` directly.

The statements are split by the runner's own splitter (``sqlite3.complete_statement``, never
``executescript``) and run one by one inside one transaction, with foreign keys enforced.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from async_store.migrations.runner import MigrationSet
from async_store.sqlite._migrations import split_statements

MIGRATIONS = Path(__file__).parent.parent / "migrations" / "sqlite"
SETS = ("app_meta", "events")
SQL_FILES = sorted(MIGRATIONS.glob("*/*/*.sql"))

HASH_A = "a" * 64
HASH_B = "b" * 64
HASH_C = "c" * 64
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

Schema = list[tuple[str, str, str, str | None]]


# --- helpers -----------------------------------------------------------------------------------


def versions(migration_set: str) -> list[Path]:
    return sorted(path for path in (MIGRATIONS / migration_set).iterdir() if path.is_dir())


def run_script(conn: sqlite3.Connection, script: Path) -> None:
    """Run one up.sql or down.sql in one transaction, as the runner does."""
    statements = split_statements(script.read_text(encoding="utf-8"))
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            conn.execute(statement)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate_up(conn: sqlite3.Connection, migration_set: str) -> None:
    for version in versions(migration_set):
        run_script(conn, version / "up.sql")


def migrate_down(conn: sqlite3.Connection, migration_set: str) -> None:
    for version in reversed(versions(migration_set)):
        run_script(conn, version / "down.sql")


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def schema(conn: sqlite3.Connection) -> Schema:
    """Every schema object, rootpage left out: pages are reallocated on drop and re-create."""
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def user_objects(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    return [row[0] for row in rows]


def insert(conn: sqlite3.Connection, table: str, row: Mapping[str, object]) -> None:
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))


def count(conn: sqlite3.Connection, table: str) -> int:
    value: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return value


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "test.db")
    yield conn
    conn.close()


@pytest.fixture
def mvp_db(db: sqlite3.Connection) -> sqlite3.Connection:
    """Both sets in one file (MVP mode), with two knowledge bases, a document with two chunks
    in kb-1, a pipeline using kb-1 and a flow: the parents the other rows hang on."""
    migrate_up(db, "app_meta")
    migrate_up(db, "events")
    insert(db, "knowledge_bases", {"id": "kb-1", "name": "Docs"})
    insert(db, "knowledge_bases", {"id": "kb-2", "name": "Other"})
    insert(
        db,
        "documents",
        {"id": "doc-1", "kb_id": "kb-1", "title": "A", "content_hash": HASH_A, "size_bytes": 3},
    )
    for index in range(2):
        insert(
            db,
            "document_chunks",
            {
                "document_id": "doc-1",
                "kb_id": "kb-1",
                "chunk_index": index,
                "content": f"chunk {index}",
                "content_hash": HASH_A,
            },
        )
    insert(db, "pipelines", {"id": "pl-1", "name": "Ingest", "kb_id": "kb-1"})
    insert(db, "flows", {"id": "fl-1", "name": "Flow"})
    return db


# One valid row per table (parents come from the mvp_db fixture); each rejection case below
# changes a single column of it, so it fails for that column only.
VALID_ROWS: dict[str, dict[str, object]] = {
    "settings": {"key": "theme", "value": '"dark"'},
    "knowledge_bases": {"id": "kb-new", "name": "New", "chunk_size": 500, "chunk_overlap": 50},
    "documents": {
        "id": "doc-new",
        "kb_id": "kb-1",
        "title": "New",
        "content_hash": HASH_C,
        "size_bytes": 0,
    },
    "document_chunks": {
        "document_id": "doc-1",
        "kb_id": "kb-1",
        "chunk_index": 9,
        "content": "text",
        "content_hash": HASH_C,
    },
    "pipelines": {"id": "pl-new", "name": "New", "steps": '[{"op": "split"}]'},
    "pipeline_runs": {"id": "run-new", "pipeline_id": "pl-1"},
    "tools": {"id": "tool-1", "name": "search"},
    "flows": {"id": "fl-new", "name": "New"},
    "schedules": {"id": "s-new", "name": "New", "pipeline_id": "pl-1", "interval_seconds": 60},
    "projection_checkpoints": {"name": "app", "position": 0},
    "logs": {"level": "INFO", "logger": "app", "message": "hello"},
    "events": {
        "event_id": "e-new",
        "stream_id": "kb-1",
        "version": 1,
        "type": "KbCreated",
        "data": '{"name": "Docs"}',
        "content_hash": HASH_C,
    },
    "aggregate_snapshots": {"stream_id": "$app", "version": 3, "state": "{}"},
    "event_checkpoints": {"name": "search-index", "position": 0},
}


# --- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("migration_set", SETS)
def test_versions_are_numbered_from_one_and_have_up_and_down(migration_set: str) -> None:
    found = versions(migration_set)
    assert found, f"no migrations under {MIGRATIONS / migration_set}"
    for number, path in enumerate(found, start=1):
        assert re.fullmatch(rf"{number:04d}_[a-z0-9_]+", path.name), path.name
        assert (path / "up.sql").is_file()
        assert (path / "down.sql").is_file()


@pytest.mark.parametrize("migration_set", SETS)
def test_the_runner_loads_every_file(migration_set: str) -> None:
    # Loading splits every file and refuses transaction control, VACUUM and connection PRAGMAs.
    loaded = MigrationSet.builtin(migration_set)
    assert [m.version for m in loaded.migrations] == list(
        range(1, len(versions(migration_set)) + 1)
    )
    for migration in loaded.migrations:
        assert migration.statements("up")
        assert migration.statements("down")
        assert "schema_migrations" not in migration.up_sql.lower(), "the runner owns that table"


# --- up and down -------------------------------------------------------------------------------


@pytest.mark.parametrize("migration_set", SETS)
def test_up_applies_cleanly(db: sqlite3.Connection, migration_set: str) -> None:
    migrate_up(db, migration_set)
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert user_tables(db)


@pytest.mark.parametrize("migration_set", SETS)
def test_up_then_down_leaves_no_user_objects(db: sqlite3.Connection, migration_set: str) -> None:
    migrate_up(db, migration_set)
    migrate_down(db, migration_set)
    assert user_objects(db) == []
    # AUTOINCREMENT leaves sqlite_sequence behind (it cannot be dropped), but empty.
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        assert count(db, "sqlite_sequence") == 0


@pytest.mark.parametrize("migration_set", SETS)
def test_down_undoes_up_version_by_version(db: sqlite3.Connection, migration_set: str) -> None:
    for version in versions(migration_set):
        before = schema(db)
        run_script(db, version / "up.sql")
        after = schema(db)
        run_script(db, version / "down.sql")
        assert [row for row in schema(db) if row[1] != "sqlite_sequence"] == [
            row for row in before if row[1] != "sqlite_sequence"
        ]
        run_script(db, version / "up.sql")
        assert schema(db) == after


def test_both_sets_share_one_file_in_mvp_mode(db: sqlite3.Connection) -> None:
    migrate_up(db, "app_meta")
    app_only = set(user_objects(db))
    migrate_up(db, "events")
    migrate_down(db, "events")
    assert set(user_objects(db)) == app_only
    migrate_down(db, "app_meta")
    assert user_objects(db) == []


def test_down_succeeds_on_populated_database(mvp_db: sqlite3.Connection) -> None:
    insert(mvp_db, "pipeline_runs", {"id": "run-1", "pipeline_id": "pl-1"})
    insert(mvp_db, "schedules", {"id": "s-1", "name": "S", "flow_id": "fl-1", "cron": "* * * * *"})
    insert(mvp_db, "events", VALID_ROWS["events"])
    insert(mvp_db, "aggregate_snapshots", VALID_ROWS["aggregate_snapshots"])
    migrate_down(mvp_db, "events")
    migrate_down(mvp_db, "app_meta")
    assert user_objects(mvp_db) == []


@pytest.mark.xfail(
    sqlite3.sqlite_version_info < (3, 41, 0),
    reason="before SQLite 3.41 the JSON functions are not innocuous: with trusted_schema=OFF a "
    "schema using json_valid() cannot be read at all ('malformed database schema')",
    raises=sqlite3.DatabaseError,
    strict=True,
)
@pytest.mark.parametrize("migration_set", SETS)
def test_schema_readable_with_trusted_schema_off(tmp_path: Path, migration_set: str) -> None:
    path = tmp_path / "test.db"
    conn = connect(path)
    try:
        migrate_up(conn, migration_set)
    finally:
        conn.close()
    conn = connect(path)
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        for table in user_tables(conn):
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    finally:
        conn.close()


# --- foreign keys ------------------------------------------------------------------------------


def test_every_foreign_key_has_an_index(mvp_db: sqlite3.Connection) -> None:
    """SQLite finds child rows (for CASCADE, RESTRICT and the check on the parent side) with an
    equality on every child-key column, so an index that leads with one of them lets it seek.
    Partial indexes do not count: they cannot serve an unconditional lookup."""
    unindexed: list[str] = []
    for table in user_tables(mvp_db):
        keys: dict[int, list[str]] = {}
        for fk in mvp_db.execute(f"PRAGMA foreign_key_list({table})").fetchall():
            keys.setdefault(fk[0], []).append(fk[3])
        leading_columns: set[str] = set()
        for index in mvp_db.execute(f"PRAGMA index_list({table})").fetchall():
            if index[4]:
                continue
            info = mvp_db.execute(f"PRAGMA index_info({index[1]})").fetchall()
            leading_columns.add(min(info)[2])
        unindexed += [
            f"{table}({', '.join(columns)})"
            for columns in keys.values()
            if leading_columns.isdisjoint(columns)
        ]
    assert unindexed == []


def test_deleting_knowledge_base_deletes_its_documents_and_chunks(
    mvp_db: sqlite3.Connection,
) -> None:
    insert(
        mvp_db,
        "documents",
        {"id": "doc-2", "kb_id": "kb-2", "title": "B", "content_hash": HASH_B, "size_bytes": 1},
    )
    insert(
        mvp_db,
        "document_chunks",
        {
            "document_id": "doc-2",
            "kb_id": "kb-2",
            "chunk_index": 0,
            "content": "kept",
            "content_hash": HASH_B,
        },
    )
    mvp_db.execute("DELETE FROM pipelines WHERE kb_id = 'kb-1'")  # RESTRICT would refuse
    mvp_db.execute("DELETE FROM knowledge_bases WHERE id = 'kb-1'")
    assert mvp_db.execute("SELECT id FROM documents").fetchall() == [("doc-2",)]
    assert mvp_db.execute("SELECT content FROM document_chunks").fetchall() == [("kept",)]


def test_deleting_document_deletes_its_chunks(mvp_db: sqlite3.Connection) -> None:
    mvp_db.execute("DELETE FROM documents WHERE id = 'doc-1'")
    assert count(mvp_db, "document_chunks") == 0


def test_chunk_stays_in_the_knowledge_base_of_its_document(mvp_db: sqlite3.Connection) -> None:
    chunk = {
        "document_id": "doc-1",
        "kb_id": "kb-2",
        "chunk_index": 5,
        "content": "x",
        "content_hash": HASH_A,
    }
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        insert(mvp_db, "document_chunks", chunk)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        mvp_db.execute("UPDATE documents SET kb_id = 'kb-2' WHERE id = 'doc-1'")


def test_deleting_pipeline_deletes_its_runs_and_schedules(mvp_db: sqlite3.Connection) -> None:
    insert(mvp_db, "pipeline_runs", {"id": "run-1", "pipeline_id": "pl-1"})
    insert(mvp_db, "schedules", {"id": "s-1", "name": "S", "pipeline_id": "pl-1", "cron": "@daily"})
    insert(mvp_db, "schedules", {"id": "s-2", "name": "F", "flow_id": "fl-1", "cron": "@daily"})
    mvp_db.execute("DELETE FROM pipelines WHERE id = 'pl-1'")
    assert count(mvp_db, "pipeline_runs") == 0
    assert mvp_db.execute("SELECT id FROM schedules").fetchall() == [("s-2",)]


def test_deleting_flow_deletes_its_schedules(mvp_db: sqlite3.Connection) -> None:
    insert(mvp_db, "schedules", {"id": "s-1", "name": "S", "flow_id": "fl-1", "cron": "@daily"})
    mvp_db.execute("DELETE FROM flows WHERE id = 'fl-1'")
    assert count(mvp_db, "schedules") == 0


def test_deleting_knowledge_base_used_by_pipeline_fails(mvp_db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        mvp_db.execute("DELETE FROM knowledge_bases WHERE id = 'kb-1'")
    assert count(mvp_db, "documents") == 1
    mvp_db.execute("DELETE FROM pipelines WHERE id = 'pl-1'")
    mvp_db.execute("DELETE FROM knowledge_bases WHERE id = 'kb-1'")
    assert count(mvp_db, "documents") == 0


@pytest.mark.parametrize(
    ("table", "row"),
    [
        pytest.param("documents", {"kb_id": "kb-9"}, id="document-unknown-kb"),
        pytest.param("pipelines", {"kb_id": "kb-9"}, id="pipeline-unknown-kb"),
        pytest.param("pipeline_runs", {"pipeline_id": "pl-9"}, id="run-unknown-pipeline"),
        pytest.param("schedules", {"flow_id": "fl-9"}, id="schedule-unknown-flow"),
    ],
)
def test_unknown_parent_is_rejected(
    mvp_db: sqlite3.Connection, table: str, row: dict[str, object]
) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        insert(mvp_db, table, VALID_ROWS[table] | row)


# --- CHECK constraints -------------------------------------------------------------------------


def test_valid_rows_cover_every_table(mvp_db: sqlite3.Connection) -> None:
    assert sorted(VALID_ROWS) == user_tables(mvp_db)


@pytest.mark.parametrize("table", sorted(VALID_ROWS))
def test_valid_row_is_accepted(mvp_db: sqlite3.Connection, table: str) -> None:
    insert(mvp_db, table, VALID_ROWS[table])


def test_defaults(mvp_db: sqlite3.Connection) -> None:
    for table, row in VALID_ROWS.items():
        insert(mvp_db, table, row)
    mvp_db.row_factory = sqlite3.Row
    kb: sqlite3.Row = mvp_db.execute("SELECT * FROM knowledge_bases WHERE id = 'kb-1'").fetchone()
    assert (kb["description"], kb["chunk_size"], kb["chunk_overlap"], kb["metadata"]) == (
        "",
        1000,
        100,
        "{}",
    )
    doc: sqlite3.Row = mvp_db.execute("SELECT * FROM documents WHERE id = 'doc-1'").fetchone()
    assert (doc["status"], doc["mime_type"], doc["chunk_count"]) == ("pending", "text/plain", 0)
    pipeline: sqlite3.Row = mvp_db.execute("SELECT * FROM pipelines WHERE id = 'pl-1'").fetchone()
    assert (pipeline["steps"], pipeline["config"], pipeline["enabled"]) == ("[]", "{}", 1)
    run: sqlite3.Row = mvp_db.execute("SELECT * FROM pipeline_runs").fetchone()
    assert (run["status"], run["finished_at"]) == ("running", None)
    tool: sqlite3.Row = mvp_db.execute("SELECT * FROM tools").fetchone()
    assert tool["kind"] == "function"
    snapshot: sqlite3.Row = mvp_db.execute("SELECT * FROM aggregate_snapshots").fetchone()
    assert snapshot["schema_version"] == 1
    timestamps = [
        kb["created_at"],
        kb["updated_at"],
        doc["created_at"],
        run["started_at"],
        snapshot["created_at"],
        mvp_db.execute("SELECT recorded_at FROM events").fetchone()[0],
        mvp_db.execute("SELECT created_at FROM logs").fetchone()[0],
        mvp_db.execute("SELECT updated_at FROM settings").fetchone()[0],
    ]
    assert all(TIMESTAMP.match(stamp) for stamp in timestamps), timestamps


REJECTED = [
    # JSON columns
    pytest.param("settings", {"value": "dark"}, id="settings-value-not-json"),
    pytest.param("knowledge_bases", {"metadata": "{"}, id="kb-metadata-not-json"),
    pytest.param("documents", {"metadata": "{'a': 1}"}, id="document-metadata-python-repr"),
    pytest.param("document_chunks", {"metadata": ""}, id="chunk-metadata-empty"),
    pytest.param("pipelines", {"steps": "[1,"}, id="pipeline-steps-not-json"),
    pytest.param("pipelines", {"config": "nope"}, id="pipeline-config-not-json"),
    pytest.param("pipeline_runs", {"stats": "{"}, id="run-stats-not-json"),
    pytest.param("tools", {"config": "{"}, id="tool-config-not-json"),
    pytest.param("flows", {"definition": "{"}, id="flow-definition-not-json"),
    pytest.param("logs", {"extra": "{"}, id="log-extra-not-json"),
    pytest.param("events", {"data": "{"}, id="event-data-not-json"),
    pytest.param("events", {"metadata": "{"}, id="event-metadata-not-json"),
    pytest.param("aggregate_snapshots", {"state": "{"}, id="snapshot-state-not-json"),
    # statuses
    pytest.param("documents", {"status": "done"}, id="document-bad-status"),
    pytest.param("pipeline_runs", {"status": "paused"}, id="run-bad-status"),
    pytest.param("pipeline_runs", {"status": "succeeded"}, id="run-finished-without-end"),
    pytest.param(
        "pipeline_runs",
        {"finished_at": "2025-01-01T00:00:00.000Z"},
        id="run-running-with-end",
    ),
    # schedules: exactly one of cron / interval
    pytest.param("schedules", {"cron": "0 * * * *"}, id="schedule-cron-and-interval"),
    pytest.param("schedules", {"interval_seconds": None}, id="schedule-neither"),
    pytest.param("schedules", {"interval_seconds": 0}, id="schedule-zero-interval"),
    # names, ids and flags
    pytest.param("knowledge_bases", {"name": ""}, id="kb-empty-name"),
    pytest.param("knowledge_bases", {"id": None}, id="kb-null-id"),
    pytest.param("settings", {"key": None}, id="settings-null-key"),
    pytest.param("pipelines", {"name": ""}, id="pipeline-empty-name"),
    pytest.param("tools", {"name": ""}, id="tool-empty-name"),
    pytest.param("flows", {"name": ""}, id="flow-empty-name"),
    pytest.param("schedules", {"name": ""}, id="schedule-empty-name"),
    pytest.param("pipelines", {"enabled": 2}, id="pipeline-enabled-2"),
    pytest.param("tools", {"enabled": -1}, id="tool-enabled-negative"),
    pytest.param("flows", {"enabled": 2}, id="flow-enabled-2"),
    pytest.param("schedules", {"enabled": 2}, id="schedule-enabled-2"),
    # sizes and positions
    pytest.param("knowledge_bases", {"chunk_size": 0}, id="kb-chunk-size-zero"),
    pytest.param("knowledge_bases", {"chunk_overlap": -1}, id="kb-overlap-negative"),
    pytest.param("knowledge_bases", {"chunk_overlap": 500}, id="kb-overlap-equals-size"),
    pytest.param("documents", {"size_bytes": -1}, id="document-negative-size"),
    pytest.param("documents", {"chunk_count": -1}, id="document-negative-chunk-count"),
    pytest.param("documents", {"content_hash": "A" * 64}, id="document-hash-uppercase"),
    pytest.param("documents", {"content_hash": "abc"}, id="document-hash-short"),
    pytest.param("documents", {"content_hash": HASH_A}, id="document-same-content-twice"),
    pytest.param("document_chunks", {"chunk_index": -1}, id="chunk-negative-index"),
    pytest.param("document_chunks", {"chunk_index": 0}, id="chunk-index-taken"),
    pytest.param("document_chunks", {"token_count": -1}, id="chunk-negative-tokens"),
    pytest.param("projection_checkpoints", {"position": -1}, id="projection-position-negative"),
    # event store
    pytest.param("events", {"version": 0}, id="event-version-zero"),
    pytest.param("events", {"stream_id": ""}, id="event-empty-stream"),
    pytest.param("events", {"type": ""}, id="event-empty-type"),
    pytest.param("events", {"content_hash": "a" * 63}, id="event-hash-short"),
    pytest.param("aggregate_snapshots", {"version": -1}, id="snapshot-version-negative"),
    pytest.param("aggregate_snapshots", {"schema_version": 0}, id="snapshot-schema-version-0"),
    pytest.param("event_checkpoints", {"position": -1}, id="event-checkpoint-negative"),
]


@pytest.mark.parametrize(("table", "change"), REJECTED)
def test_invalid_row_is_rejected(
    mvp_db: sqlite3.Connection, table: str, change: dict[str, object]
) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        insert(mvp_db, table, VALID_ROWS[table] | change)


# --- event store -------------------------------------------------------------------------------


def append_event(conn: sqlite3.Connection, event_id: str, version: int) -> int:
    row = VALID_ROWS["events"] | {"event_id": event_id, "version": version}
    insert(conn, "events", row)
    position: int = conn.execute(
        "SELECT position FROM events WHERE event_id = ?", (event_id,)
    ).fetchone()[0]
    return position


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE events SET type = 'Changed'", id="update"),
        pytest.param("UPDATE events SET position = position + 100", id="update-position"),
        pytest.param("DELETE FROM events", id="delete"),
        pytest.param("INSERT OR REPLACE INTO events SELECT * FROM events", id="replace"),
        pytest.param(
            "REPLACE INTO events (event_id, stream_id, version, type, data, content_hash) "
            "SELECT 'e-other', stream_id, version, type, data, content_hash FROM events",
            id="replace-stream-version",
        ),
        # The guard cannot tell a plain duplicate from REPLACE: OR IGNORE aborts too.
        pytest.param("INSERT OR IGNORE INTO events SELECT * FROM events", id="ignore-duplicate"),
    ],
)
def test_events_are_append_only(mvp_db: sqlite3.Connection, statement: str) -> None:
    append_event(mvp_db, "e-1", 1)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        mvp_db.execute(statement)
    assert count(mvp_db, "events") == 1


@pytest.mark.parametrize(
    ("event_id", "version"),
    [pytest.param("e-2", 1, id="same-stream-version"), pytest.param("e-1", 2, id="same-event-id")],
)
def test_duplicate_append_is_refused(
    mvp_db: sqlite3.Connection, event_id: str, version: int
) -> None:
    append_event(mvp_db, "e-1", 1)
    with pytest.raises(sqlite3.IntegrityError, match="append-only") as caught:
        append_event(mvp_db, event_id, version)
    assert caught.value.sqlite_errorname == "SQLITE_CONSTRAINT_TRIGGER"
    assert count(mvp_db, "events") == 1


def test_event_positions_are_never_reused(mvp_db: sqlite3.Connection) -> None:
    positions = [append_event(mvp_db, f"e-{n}", n) for n in (1, 2, 3)]
    # A repair that bypasses the guard: the newest position must still not come back.
    mvp_db.execute("DROP TRIGGER events_no_delete")
    mvp_db.execute("DELETE FROM events WHERE position = ?", (positions[-1],))
    assert append_event(mvp_db, "e-4", 3) > positions[-1]


def test_rebuilding_events_keeps_every_row_position_and_guard(db: sqlite3.Connection) -> None:
    """events 0002 rebuilds the table (a CHECK cannot be altered in place): rows, positions and
    the highest position ever handed out survive it, and so do the guards."""
    first, *later = versions("events")
    run_script(db, first / "up.sql")
    positions = [append_event(db, f"e-{n}", n) for n in (1, 2, 3)]
    db.execute("DROP TRIGGER events_no_delete")  # a repair removes the newest event
    db.execute("DELETE FROM events WHERE position = ?", (positions[-1],))
    rows = db.execute("SELECT * FROM events ORDER BY position").fetchall()
    for version in later:
        run_script(db, version / "up.sql")

    assert db.execute("SELECT * FROM events ORDER BY position").fetchall() == rows
    assert append_event(db, "e-4", 3) == positions[-1] + 1  # never the removed position again
    for statement in ("UPDATE events SET type = 'X'", "DELETE FROM events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        append_event(db, "e-1", 9)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_events_down_refuses_a_hash_the_older_check_would_not_take(
    mvp_db: sqlite3.Connection,
) -> None:
    """Reverting events 0002 brings back the hex check; a row it would refuse stops the
    revert, which then changes nothing."""
    insert(mvp_db, "events", VALID_ROWS["events"] | {"content_hash": "X" * 64})
    before = schema(mvp_db)
    with pytest.raises(sqlite3.IntegrityError):
        run_script(mvp_db, versions("events")[1] / "down.sql")
    assert schema(mvp_db) == before
    assert count(mvp_db, "events") == 1


# --- lookups use indexes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            "SELECT * FROM events WHERE stream_id = ? AND version >= ? ORDER BY version",
            "SEARCH events USING INDEX sqlite_autoindex_events_2 (stream_id=? AND version>?)",
            id="read-stream",
        ),
        pytest.param(
            "SELECT * FROM events WHERE position > ? ORDER BY position LIMIT 500",
            "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)",
            id="read-all",
        ),
        pytest.param(
            "SELECT * FROM events WHERE type = ? AND position > ? ORDER BY position",
            "SEARCH events USING INDEX idx_events_type_position (type=? AND position>?)",
            id="read-by-type",
        ),
        pytest.param(
            "SELECT position FROM events WHERE event_id = ?",
            "SEARCH events USING COVERING INDEX sqlite_autoindex_events_1 (event_id=?)",
            id="idempotency",
        ),
        pytest.param(
            "SELECT * FROM aggregate_snapshots WHERE stream_id = ? ORDER BY version DESC LIMIT 1",
            "SEARCH aggregate_snapshots USING PRIMARY KEY (stream_id=?)",
            id="newest-snapshot",
        ),
        pytest.param(
            "SELECT * FROM knowledge_bases WHERE name = ?",
            "SEARCH knowledge_bases USING INDEX idx_knowledge_bases_name (name=?)",
            id="kb-by-name",
        ),
        pytest.param(
            "SELECT * FROM documents WHERE kb_id = ? ORDER BY created_at DESC LIMIT 50",
            "SEARCH documents USING INDEX idx_documents_kb_id_created_at (kb_id=?)",
            id="documents-of-kb",
        ),
        pytest.param(
            "SELECT * FROM documents WHERE kb_id = ? AND content_hash = ?",
            "SEARCH documents USING INDEX idx_documents_kb_id_content_hash "
            "(kb_id=? AND content_hash=?)",
            id="idempotent-ingest",
        ),
        pytest.param(
            "SELECT * FROM documents WHERE kb_id = ? AND source_uri = ?",
            "SEARCH documents USING INDEX idx_documents_kb_id_source_uri "
            "(kb_id=? AND source_uri=?)",
            id="document-by-source",
        ),
        pytest.param(
            "SELECT * FROM document_chunks WHERE kb_id = ? AND id > ? ORDER BY id LIMIT 500",
            "SEARCH document_chunks USING INDEX idx_document_chunks_kb_id_id (kb_id=? AND id>?)",
            id="chunks-of-kb",
        ),
        pytest.param(
            "SELECT * FROM document_chunks WHERE document_id = ? ORDER BY chunk_index",
            "SEARCH document_chunks USING INDEX sqlite_autoindex_document_chunks_1 (document_id=?)",
            id="chunks-of-document",
        ),
        pytest.param(
            "SELECT * FROM pipeline_runs WHERE pipeline_id = ? ORDER BY started_at DESC",
            "SEARCH pipeline_runs USING INDEX idx_pipeline_runs_pipeline_id_started_at "
            "(pipeline_id=?)",
            id="runs-of-pipeline",
        ),
        pytest.param(
            "SELECT * FROM pipeline_runs WHERE status = 'running' AND started_at < ?",
            "SEARCH pipeline_runs USING INDEX idx_pipeline_runs_running (started_at<?)",
            id="stuck-runs",
        ),
        pytest.param(
            "SELECT * FROM schedules WHERE enabled = 1 AND next_run_at <= ? ORDER BY next_run_at",
            "SEARCH schedules USING INDEX idx_schedules_enabled_next_run_at "
            "(enabled=? AND next_run_at<?)",
            id="due-schedules",
        ),
        pytest.param(
            "SELECT * FROM logs WHERE created_at >= ? ORDER BY created_at",
            "SEARCH logs USING INDEX idx_logs_created_at (created_at>?)",
            id="logs-since",
        ),
    ],
)
def test_lookup_uses_an_index(mvp_db: sqlite3.Connection, query: str, expected: str) -> None:
    parameters = tuple(range(query.count("?")))
    plan = [row[3] for row in mvp_db.execute(f"EXPLAIN QUERY PLAN {query}", parameters)]
    assert plan == [expected]
