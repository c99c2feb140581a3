"""A writer process killed with SIGKILL, over and over: nothing acknowledged is lost, nothing
half-done is visible, and the service starts cleanly after every kill.

* **Crash loop.** A worker (``python -m tests.faults._workload mixed``) runs a production-mode
  service under a mixed workload: event appends, StateManager mutations, two-row app_meta
  transactions (some raising, to be rolled back), single ``execute`` and three-row
  ``execute_many`` writes, and back-to-back backups. It prints a line once each ``await``
  returned. The test kills it after a seeded random number of acknowledgements, or (about one
  kill in three) the moment a backup's ``.partial`` folder appears. After every kill:
  ``integrity_check`` is ok on both files; the service starts and has no migration to apply;
  every acknowledged append is stored at its position and version, each appender's events are
  a gap-free prefix of its appends, ``verify_events()`` is ok; every acknowledged state change
  is in the ``$app`` stream at the version its caller got; every two-row transaction and
  three-row ``execute_many`` is there whole or not at all, the rolled-back ones never;
  the projections equal the state folded from the log once a new StateManager flushed; every
  backup folder not named ``.partial`` verifies. Each lane kills several generations of workers
  on the same files; it ends with a new backup that ``async-store verify`` accepts (and a
  ``.partial`` folder, if one was left, that it refuses).
* **Kill during a migration.** An application migration set of two versions that create,
  fill, index and alter a 60,000-row table and rewrite rows of ``logs``. The worker traces
  every statement its writer starts; the test kills it right after a seeded random one. The
  file is then exactly as before (every table, row and the schema), or exactly at version 1,
  or fully migrated -- never in between -- and the next start completes the set.

``ASYNC_STORE_FAULT_ROUNDS`` sets the number of crash-loop kills (default 9) and
``ASYNC_STORE_FAULT_SEED`` the seed.
"""

from __future__ import annotations

import hashlib
import math
import random
import shutil
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from async_store import NewEvent, SqlConfig, SqlService, StateManager
from async_store.database import Row
from async_store.migrations.runner import MigrationSet
from async_store.sqlite.backup._copy import verify_backup
from tests.contract.test_state_manager import assert_projected, events_of
from tests.faults._workload import (
    ROUNDS,
    SEED,
    Acks,
    cli,
    describe_event,
    integrity,
    kill_worker,
    parse_acks,
    record,
    rounds,
    worker_args,
)
from tests.faults.test_state_faults import state_at

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX-only")

KILLS = rounds(9)
GENERATIONS = 3 if not ROUNDS else 5
"""Kills per lane: each lane is one directory that several workers in turn write and die on."""
LANES = math.ceil(KILLS / GENERATIONS)


def backups(root: Path) -> tuple[list[Path], list[Path]]:
    """The complete backup folders and the ``.partial`` ones."""
    if not root.is_dir():
        return [], []
    folders = sorted(root.glob("backup-*"))
    partial = [f for f in folders if f.name.endswith(".partial")]
    return [f for f in folders if f not in partial], partial


def a_new_partial_backup(root: Path) -> Callable[[list[bytes]], bool]:
    """A kill condition: a ``.partial`` folder appeared that was not there before."""
    earlier = len(backups(root)[1])
    return lambda _: len(backups(root)[1]) > earlier


def split_rows(rows: list[Row]) -> dict[tuple[str, str], set[str]]:
    """``logs`` rows grouped by (logger, operation): the parts each operation left."""
    parts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for logger, message in rows:
        name, _, part = message.partition("/")
        parts[(logger, name)].add(part)
    return parts


async def check_events(sql: SqlService, acks: Acks) -> None:
    rows = await sql.events.fetch_all(
        "SELECT event_id, position, stream_id, version FROM events WHERE stream_id != '$app'"
    )
    stored = {row[0]: (row[0], row[1], row[2], row[3]) for row in rows}
    lost = [ack for ack in acks.events if stored.get(ack[0]) != ack]
    assert not lost, f"{len(lost)} acknowledged appends lost or moved: {lost[:5]}"
    report = await sql.event_store.verify_events()
    assert report.ok, report
    appended: dict[str, list[int]] = defaultdict(list)
    for event_id in stored:
        appender, _, n = event_id.rpartition("-")
        appended[appender].append(int(n))
    for appender, ns in appended.items():
        assert sorted(ns) == list(range(len(ns))), f"appender {appender} has a gap"


async def check_state(sql: SqlService, acks: Acks) -> None:
    events = await events_of(sql)
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    lost = [
        version
        for version, described in acks.states.items()
        if version > len(events)
        or describe_event(events[version - 1].type, events[version - 1].data) != described
    ]
    assert not lost, f"acknowledged state changes lost or moved: {lost[:5]}"
    async with StateManager(sql) as manager:
        state = manager.read_state()
        assert state == state_at(events, len(events))
        await manager.flush()
        await assert_projected(sql, state)


async def check_app(sql: SqlService, acks: Acks) -> None:
    parts = split_rows(await sql.app.fetch_all("SELECT logger, message FROM logs"))
    whole = {"pair": {"a", "b"}, "many": {"0", "1", "2"}, "single": {""}}
    for (logger, name), found in parts.items():
        assert logger != "rolled", f"a rolled-back transaction is visible: {name}"
        assert found == whole[logger], f"{logger} {name} is partly there: {found}"
    lost = [
        (logger, name)
        for logger, names in (("pair", acks.pairs), ("many", acks.manies), ("single", acks.singles))
        for name in names
        if (logger, name) not in parts
    ]
    assert not lost, f"acknowledged app writes lost: {lost[:5]}"


async def check_after_kill(directory: Path, acks: Acks, verified: set[Path]) -> int:
    """Everything the module docstring promises after a kill; returns how many ``.partial``
    backup folders there are."""
    for name in ("app_meta.db", "events.db"):
        assert integrity(directory / name) == "ok", name
    async with SqlService(SqlConfig.in_directory(directory)) as sql:
        assert await sql.migrate() == []
        await check_events(sql, acks)
        await check_state(sql, acks)
        await check_app(sql, acks)
        root = sql.backup_root
    complete, partial = backups(root)
    for folder in complete:
        if folder not in verified:
            assert (folder / "manifest.json").is_file(), folder
            await verify_backup(folder)
            verified.add(folder)
    missing = set(acks.backups) - {folder.name for folder in complete}
    assert not missing, f"acknowledged backups missing: {sorted(missing)[:3]}"
    return len(partial)


@pytest.mark.timeout(max(120, 60 * GENERATIONS))
@pytest.mark.parametrize("lane", [pytest.param(n, id=f"lane-{n}") for n in range(LANES)])
async def test_acknowledged_work_survives_repeated_sigkill(tmp_path: Path, lane: int) -> None:
    rng = random.Random(f"{SEED}-crash-loop-{lane}")
    root = tmp_path / "backups"
    acks = Acks()
    verified: set[Path] = set()
    mid_backup = mid_backup_kills = partials = 0
    for generation in range(GENERATIONS):
        at_backup = rng.random() < 0.35
        mid_backup += at_backup
        lines = await kill_worker(
            worker_args("mixed", tmp_path, generation),
            rng.randint(10, 400),
            until=a_new_partial_backup(root) if at_backup else None,
        )
        parse_acks(lines, acks)
        left = await check_after_kill(tmp_path, acks, verified)
        # A kill that left a new .partial folder hit a backup in progress.
        mid_backup_kills += left > partials
        partials = left

    # The next backup works, and the command line verifies it (and refuses a .partial).
    async with SqlService(SqlConfig.in_directory(tmp_path)) as sql:
        await sql.event_store.append("after", [NewEvent("Recovered", {})])
        manifest = await sql.backup()
    code, output = await cli("verify", str(manifest.directory))
    assert code == 0, output
    assert output.startswith("ok: "), output
    for partial in backups(root)[1][:1]:
        code, output = await cli("verify", str(partial))
        assert code == 1, output
        assert ".partial" in output, output
    record(
        "crash_loop",
        lane=lane,
        kills=GENERATIONS,
        kills_aimed_at_a_backup=mid_backup,
        kills_during_a_backup=mid_backup_kills,
        backups_verified=len(verified) + 1,
        acknowledged=acks.count(),
        acknowledged_events=len(acks.events),
        acknowledged_state_changes=len(acks.states),
        acknowledged_transactions=len(acks.pairs),
        lost=0,
    )


# -- kill during a migration ----------------------------------------------------------------------

BULK_ROWS = 60_000

BULK_SET = {
    "0001_bulk": (
        "CREATE TABLE bulk (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);\n"
        "INSERT INTO bulk (id, payload) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL"
        f" SELECT i + 1 FROM n WHERE i < {BULK_ROWS}) SELECT i, printf('%0120d', i) FROM n;\n"
        "UPDATE logs SET message = message || ' (migrated)';\n"
        "INSERT INTO logs (created_at, level, logger, message)"
        " VALUES ('2025-01-01T00:00:00Z', 'INFO', 'bulk', 'version 1');\n",
        "DROP TABLE bulk;\nUPDATE logs SET message = substr(message, 1, length(message) - 11);\n",
    ),
    "0002_bulk_index": (
        "CREATE INDEX bulk_payload ON bulk (payload);\n"
        "ALTER TABLE bulk ADD COLUMN size INTEGER NOT NULL DEFAULT 0;\n"
        "UPDATE bulk SET size = length(payload) + id;\n"
        "DELETE FROM logs WHERE logger = 'seed' AND id % 2 = 0;\n",
        "DROP INDEX bulk_payload;\nALTER TABLE bulk DROP COLUMN size;\n",
    ),
}

MIGRATION_KILLS = max(3, ROUNDS // 10)


def write_bulk_set(path: Path) -> Path:
    for folder, (up, down) in BULK_SET.items():
        (path / folder).mkdir(parents=True)
        (path / folder / "up.sql").write_text(up)
        (path / folder / "down.sql").write_text(down)
    return path


def fingerprint(path: Path) -> tuple[Any, ...]:
    """The schema, user_version and a digest of every table's rows (``schema_migrations``
    without its times)."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        schema = sorted(connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        digests = []
        for kind, name, _, _ in schema:
            if kind != "table" or name.startswith("sqlite_"):
                continue
            columns = (
                "migration_set, version, name, checksum" if name == "schema_migrations" else "*"
            )
            rows = sorted(map(repr, connection.execute(f"SELECT {columns} FROM {name}")))
            digests.append((name, hashlib.sha256("\n".join(rows).encode()).hexdigest()))
        user_version = connection.execute("PRAGMA user_version").fetchone()[0]
        return (tuple(schema), user_version, tuple(digests))
    finally:
        connection.close()


@pytest.mark.timeout(max(120, 20 * MIGRATION_KILLS))
async def test_a_migration_killed_midway_leaves_the_database_before_or_after(
    tmp_path: Path,
) -> None:
    rng = random.Random(f"{SEED}-migration")
    set_dir = write_bulk_set(tmp_path / "bulk")
    template = tmp_path / "template"
    async with SqlService(SqlConfig.in_directory(template)) as sql:
        await sql.app.execute_many(
            "INSERT INTO logs (level, logger, message) VALUES ('INFO', 'seed', ?)",
            [(f"row {i}",) for i in range(500)],
        )
        await sql.event_store.append("seed", [NewEvent("Seeded", {"i": i}) for i in range(50)])

    def copy(name: str) -> Path:
        return Path(shutil.copytree(template, tmp_path / name))

    # The three states a migration may leave: before, at version 1, fully migrated.
    reference = copy("reference")
    bulk = [MigrationSet.from_directory("bulk", set_dir)]
    states = [fingerprint(reference / "app_meta.db")]
    async with SqlService(
        SqlConfig.in_directory(reference), migration_sets=bulk, migrate=False
    ) as sql:
        await sql.migrate(1, migration_set="bulk")
    states.append(fingerprint(reference / "app_meta.db"))
    # The fully migrated state, from a worker run to its end: how many statements it starts.
    lines = await kill_worker(
        worker_args("migrate", copy("full"), set_dir), 0, until=lambda ls: ls[-1] == b"done\n"
    )
    statements = lines.index("done\n")
    states.append(fingerprint(tmp_path / "full" / "app_meta.db"))
    assert len(set(states)) == 3

    # The first kill lands in the large INSERT of version 1; the others anywhere.
    fill = next(n for n, line in enumerate(lines, 1) if line.startswith("sql INSERT INTO bulk"))
    kill_points = [fill] + [rng.randint(1, statements) for _ in range(MIGRATION_KILLS - 1)]
    outcomes = [0, 0, 0]
    for kill, point in enumerate(kill_points):
        directory = copy(f"kill-{kill}")
        await kill_worker(worker_args("migrate", directory, set_dir), point)
        assert integrity(directory / "app_meta.db") == "ok"
        found = fingerprint(directory / "app_meta.db")
        assert found in states, "a migration was left half-applied"
        outcomes[states.index(found)] += 1
        async with SqlService(SqlConfig.in_directory(directory), migration_sets=bulk) as sql:
            assert await sql.migrate() == []
        assert fingerprint(directory / "app_meta.db") == states[2]
    assert outcomes[0] >= 1, "the kill in the large INSERT did not leave the file as before"
    record(
        "migration_kills",
        kills=MIGRATION_KILLS,
        statements=statements,
        left_before=outcomes[0],
        left_at_version_1=outcomes[1],
        left_fully_migrated=outcomes[2],
        half_applied=0,
    )
