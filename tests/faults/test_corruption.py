"""Damaged files: each kind is found with a clear error, and nothing is overwritten.

* **A zeroed page.** Page 1 (the header) of either database: the service refuses to start
  with ``NotADatabase`` naming the file. The root page of ``events`` or of ``logs``: the
  service starts (SQLite checks pages as it reads them), ``verify_events()`` or a read of the
  table raises ``DatabaseCorrupt``, and ``backup()`` refuses (``BackupError``) and leaves no
  folder that looks like a backup.
* **An edited event.** The ``data`` of one event changed with plain sqlite3 (dropping and
  restoring the append-only trigger), or by editing the bytes of the file: ``integrity_check``
  cannot see it; ``verify_events()`` names exactly that position.
* **A torn WAL tail.** The files of a worker killed with SIGKILL (its WAL not checkpointed) are
  copied and the events WAL is cut in the middle of its last commit frame (once; 20 times,
  after kills at seeded moments, in the long version), as a power loss
  during that write would leave it. That transaction never completed, so it must vanish whole:
  the service starts, ``integrity_check`` and ``verify_events()`` are ok, the log is exactly
  the intact copy's log without its last transaction, and it takes new appends.
* **A foreign file** (text, a zip archive, another application's SQLite database) in place of
  a database: refused at start-up with ``NotADatabase`` or ``MigrationError``.
* **A damaged backup**: a zeroed page, or a foreign file, in a backup folder (with its manifest
  rewritten to match, or not): ``async-store verify`` exits 1 and says what is wrong.

Before and after each detection the sha256 of every file is compared: the library changed
nothing.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from async_store import (
    BackupError,
    DatabaseCorrupt,
    MigrationError,
    NewEvent,
    NotADatabase,
    SqlConfig,
    SqlService,
    StoreError,
)
from tests.faults._workload import ROUNDS, SEED, cli, integrity, kill_worker, record, worker_args

EVENTS = 600
LOGS = 400
TEARS = max(1, ROUNDS // 10)
"""WALs torn, each after a worker killed at a seeded moment (20 in the long version)."""


async def filled(directory: Path) -> Path:
    """A production-mode data directory with a few pages of events and logs, checkpointed."""
    async with SqlService(SqlConfig.in_directory(directory)) as sql:
        for start in range(0, EVENTS, 100):
            await sql.event_store.append(
                f"stream-{start // 100}",
                [
                    NewEvent("Filled", {"marker": f"marker-{i:05d}", "pad": "e" * 200})
                    for i in range(start, start + 100)
                ],
            )
        await sql.app.execute_many(
            "INSERT INTO logs(level, logger, message) VALUES ('INFO', 'fill', ?)",
            [(f"row {i} " + "l" * 200,) for i in range(LOGS)],
        )
    return directory


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every file directly in ``directory`` but the shared-memory index of a WAL;
    an empty WAL counts as no WAL (SQLite may leave one behind when it closes a damaged
    database: it holds nothing)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
        and not path.name.endswith("-shm")
        and not (path.name.endswith("-wal") and path.stat().st_size == 0)
    }


def page_size(path: Path) -> int:
    size = struct.unpack(">H", path.read_bytes()[16:18])[0]
    return 65536 if size == 1 else size


def root_page(path: Path, table: str) -> int:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
    finally:
        connection.close()
    assert row is not None, table
    return int(row[0])


def zero_page(path: Path, page: int) -> None:
    size = page_size(path)
    data = bytearray(path.read_bytes())
    assert len(data) >= page * size
    data[(page - 1) * size : page * size] = bytes(size)
    path.write_bytes(bytes(data))


def complete_backups(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if not p.name.endswith(".partial")]


# -- zeroed pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app_meta.db", "events.db"])
async def test_a_zeroed_header_page_is_refused_at_start_up(tmp_path: Path, name: str) -> None:
    data = await filled(tmp_path / "data")
    zero_page(data / name, 1)
    before = digests(data)
    with pytest.raises(NotADatabase) as caught:
        async with SqlService(SqlConfig.in_directory(data)):
            pass
    assert str(data / name) in str(caught.value)
    assert digests(data) == before


async def read_logs(sql: SqlService) -> None:
    await sql.app.fetch_all("SELECT * FROM logs")


async def verify_events(sql: SqlService) -> None:
    await sql.event_store.verify_events()


@pytest.mark.parametrize(
    ("name", "table", "detect"),
    [
        pytest.param("events.db", "events", verify_events, id="events-by-verify_events"),
        pytest.param("app_meta.db", "logs", read_logs, id="logs-by-a-read"),
    ],
)
async def test_a_zeroed_table_page_is_found_and_nothing_is_backed_up(
    tmp_path: Path, name: str, table: str, detect: Callable[[SqlService], object]
) -> None:
    data = await filled(tmp_path / "data")
    zero_page(data / name, root_page(data / name, table))
    before = digests(data)
    assert integrity(data / name) != "ok"
    async with SqlService(SqlConfig.in_directory(data)) as sql:
        with pytest.raises(DatabaseCorrupt) as caught:
            await detect(sql)  # type: ignore[misc]
        assert "malformed" in str(caught.value)
        with pytest.raises(BackupError) as refused:
            await sql.backup()
        assert "malformed" in str(refused.value) or "verification" in str(refused.value)
        root = sql.backup_root
    assert complete_backups(root) == []
    assert digests(data) == before


# -- edited events ----------------------------------------------------------------------------

POSITION = 137


def edit_with_sqlite(path: Path) -> None:
    """Change one event's data with plain sqlite3, working around the append-only trigger."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        trigger = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'events_no_update'"
        ).fetchone()[0]
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("DROP TRIGGER events_no_update")
        changed = connection.execute(
            "UPDATE events SET data = json_set(data, '$.marker', 'edited') WHERE position = ?",
            (POSITION,),
        )
        assert changed.rowcount == 1
        connection.execute(trigger)
        connection.execute("COMMIT")
    finally:
        connection.close()


def edit_bytes(path: Path) -> None:
    """Change one digit of one event's data in the file itself, as a disk or a hand might."""
    data = path.read_bytes()
    old = f'"marker-{POSITION - 1:05d}"'.encode()
    new = f'"marker-{POSITION + 9000:05d}"'.encode()
    assert len(old) == len(new)
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(edit_with_sqlite, id="with-sqlite3"),
        pytest.param(edit_bytes, id="file-bytes"),
    ],
)
async def test_an_edited_event_is_found_by_verify_events(
    tmp_path: Path, edit: Callable[[Path], None]
) -> None:
    data = await filled(tmp_path / "data")
    edit(data / "events.db")
    assert integrity(data / "events.db") == "ok"  # invisible to SQLite's own checks
    before = digests(data)
    async with SqlService(SqlConfig.in_directory(data)) as sql:
        report = await sql.event_store.verify_events()
    assert not report.ok
    assert report.altered == (POSITION,)
    assert report.checked == EVENTS
    assert digests(data) == before


# -- a torn WAL tail --------------------------------------------------------------------------


def last_commit_frame(wal: Path) -> tuple[int, int] | None:
    """The offset and size of the last commit frame of the WAL's current generation (frames
    whose salts match the header's; older frames past them are leftovers of earlier
    generations); None when it holds no finished transaction (or there is no WAL)."""
    if not wal.exists() or wal.stat().st_size < 32:
        return None
    data = wal.read_bytes()
    page = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    frame = 24 + page
    last: int | None = None
    offset = 32
    while offset + frame <= len(data) and data[offset + 8 : offset + 16] == salts:
        if struct.unpack(">I", data[offset + 4 : offset + 8])[0]:  # the db size: a commit
            last = offset
        offset += frame
    return None if last is None else (last, frame)


def rows(path: Path, table: str) -> list[tuple[object, ...]]:
    """Every row of ``table``, ordered by its first columns (for events: the position)."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        connection.close()


def copy_data(source: Path, target: Path) -> Path:
    """The database files and WALs, without the shared-memory files (rebuilt on open)."""
    target.mkdir()
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith("-shm"):
            shutil.copy2(path, target / path.name)
    return target


ATTEMPTS = 5


@pytest.mark.parametrize("tear", [pytest.param(n, id=f"tear-{n}") for n in range(TEARS)])
async def test_a_torn_wal_tail_loses_only_the_unfinished_transaction(
    tmp_path: Path, tear: int
) -> None:
    # Where the kill lands is up to timing: just after a checkpoint let the WAL start over, its
    # current generation may hold no finished transaction yet, or only one that tearing
    # cannot show (it rewrote what was there). Then the worker is killed again, elsewhere.
    choose = random.Random(f"{SEED}-tear-{tear}")
    for attempt in range(ATTEMPTS):
        killed = tmp_path / f"killed-{attempt}"
        await kill_worker(worker_args("mixed", killed, 0), choose.randint(50, 500))
        commit = last_commit_frame(killed / "events.db-wal")
        if commit is None:
            continue
        offset, frame = commit
        intact = copy_data(killed, tmp_path / f"intact-{attempt}")
        torn = copy_data(killed, tmp_path / f"torn-{attempt}")
        with (torn / "events.db-wal").open("r+b") as handle:
            handle.truncate(offset + frame // 2)

        expected = rows(intact / "events.db", "events")
        found = rows(torn / "events.db", "events")
        assert integrity(torn / "events.db") == "ok"
        # The intact log without its newest transaction: a prefix, shorter or (when that
        # transaction wrote a snapshot or a checkpoint, not events) the same, never anything
        # else.
        assert found == expected[: len(found)]
        others = ("aggregate_snapshots", "event_checkpoints")
        before = [rows(intact / "events.db", table) for table in others]
        after = [rows(torn / "events.db", table) for table in others]
        if (expected, before) != (found, after):
            break
    else:
        pytest.fail(f"in {ATTEMPTS} kills, no WAL held a transaction whose tear lost anything")
    async with SqlService(SqlConfig.in_directory(torn)) as sql:
        assert await sql.migrate() == []
        report = await sql.event_store.verify_events()
        assert report.ok, report
        assert report.checked == len(found)
        result = await sql.event_store.append("after-tear", [NewEvent("Recovered", {})])
        assert result.last_position > (found[-1][0] if found else 0)  # type: ignore[operator]
    record("torn_wal", events_intact=len(expected), events_after_tear=len(found))


# -- foreign files ----------------------------------------------------------------------------


def text_file(path: Path) -> None:
    path.write_text("name,value\nthis is a spreadsheet,1\n" * 200)


def zip_file(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a database " * 500)


def another_applications_database(path: Path, *, user_version: int = 7) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
        connection.executemany("INSERT INTO notes(body) VALUES (?)", [("note",)] * 100)
        connection.execute(f"PRAGMA user_version = {user_version}")
        connection.commit()
    finally:
        connection.close()


def another_applications_unversioned_database(path: Path) -> None:
    """Most applications never set user_version: their tables give them away."""
    another_applications_database(path, user_version=0)


def another_applications_wal_database(path: Path) -> None:
    another_applications_database(path)
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    finally:
        connection.close()  # the last connection: checkpoints and removes the -wal file


@pytest.mark.parametrize(
    ("write", "error"),
    [
        pytest.param(text_file, NotADatabase, id="text"),
        pytest.param(zip_file, NotADatabase, id="zip"),
        pytest.param(
            another_applications_database,
            MigrationError,
            id="another-applications-sqlite-database",
        ),
        pytest.param(
            another_applications_wal_database,
            MigrationError,
            id="another-applications-wal-database",
        ),
        pytest.param(
            another_applications_unversioned_database,
            MigrationError,
            id="another-applications-unversioned-database",
        ),
    ],
)
@pytest.mark.parametrize("mvp", [False, True], ids=["production", "mvp"])
async def test_a_foreign_file_is_refused_and_left_as_it_was(
    tmp_path: Path, write: Callable[[Path], None], error: type[StoreError], mvp: bool
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write(data / "app_meta.db")
    before = digests(data)["app_meta.db"]
    with pytest.raises(error) as caught:
        async with SqlService(SqlConfig.in_directory(data, mvp=mvp)):
            pass
    assert "app_meta" in str(caught.value)
    if write is another_applications_unversioned_database:
        assert "tables (notes)" in str(caught.value)
    assert digests(data)["app_meta.db"] == before
    assert not (data / "app_meta.db-wal").exists()


# -- damaged backups --------------------------------------------------------------------------


def zero_events_root(path: Path) -> None:
    zero_page(path, root_page(path, "events"))


def foreign_bytes(path: Path) -> None:
    size = path.stat().st_size
    path.write_bytes((b"not a database, " * (size // 16 + 1))[:size])


@pytest.mark.parametrize(
    "damage",
    [pytest.param(zero_events_root, id="zeroed-page"), pytest.param(foreign_bytes, id="foreign")],
)
@pytest.mark.parametrize(
    "manifest_matches", [False, True], ids=["manifest-as-written", "manifest-rewritten"]
)
async def test_async_store_verify_refuses_a_damaged_backup(
    tmp_path: Path, damage: Callable[[Path], None], manifest_matches: bool
) -> None:
    data = await filled(tmp_path / "data")
    async with SqlService(SqlConfig.in_directory(data)) as sql:
        folder = (await sql.backup()).directory
    code, output = await cli("verify", str(folder))
    assert code == 0, output
    damage(folder / "events.db")
    if manifest_matches:
        # The manifest rewritten to match, as a careless copy tool might: the checks of the
        # file itself must still catch it.
        manifest = json.loads((folder / "manifest.json").read_text())
        for item in manifest["files"]:
            if item["name"] == "events.db":
                item["sha256"] = hashlib.sha256((folder / "events.db").read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
    before = digests(folder)
    code, output = await cli("verify", str(folder))
    assert code == 1, output
    assert "events.db" in output, output
    expected = ("malformed", "not a readable", "integrity") if manifest_matches else ("sha256",)
    assert any(word in output for word in expected), output
    assert digests(folder) == before
