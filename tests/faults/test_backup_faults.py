"""A backup killed with SIGKILL leaves an unfinished ``.partial`` folder, never a backup that looks
complete; the live databases are intact and the next backup succeeds.

A separate process opens a production-mode service on ~20 MB of data and takes one backup. The
test watches the backups folder and kills the process at a chosen point: as soon as the
``.partial`` folder appears, once the app_meta copy is being written, once the events copy is
being written. (The backup may also win the race and finish; then it must be complete and
verify.) After each kill: every folder not named ``.partial`` has a manifest and verifies, the
live files pass ``integrity_check`` and hold every row, and ``list_backups`` ignores the
unfinished folders. Finally a new service takes a backup that verifies.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from async_store import NewEvent, SqlConfig, SqlService
from async_store.backups._retention import list_backups
from async_store.sqlite.backup._copy import verify_backup
from tests.test_backup import wait_until

BACKER = textwrap.dedent(
    """
    import asyncio, sys
    from async_store import SqlConfig, SqlService

    async def main():
        async with SqlService(SqlConfig.in_directory(sys.argv[1])) as sql:
            print("ready", flush=True)
            await sql.backup()
            print("done", flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)

ROWS = 200
ROW_BYTES = 100_000
EVENTS = 2_000


def partials(root: Path) -> list[Path]:
    return sorted(root.glob("backup-*.partial")) if root.is_dir() else []


def complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("backup-*") if not p.name.endswith(".partial"))


KILL_POINTS: list[tuple[str, Callable[[Path], bool]]] = [
    ("partial-folder-appears", lambda root: bool(partials(root))),
    (
        "app-meta-copy-started",
        lambda root: any((p / "app_meta.db").exists() for p in partials(root)),
    ),
    ("events-copy-started", lambda root: any((p / "events.db").exists() for p in partials(root))),
]


def check_live(data: Path) -> None:
    for name in ("app_meta.db", "events.db"):
        conn = sqlite3.connect(data / name)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], name
            if name == "app_meta.db":
                assert conn.execute("SELECT count(*) FROM logs").fetchone() == (ROWS,)
            else:
                assert conn.execute("SELECT count(*) FROM events").fetchone() == (EVENTS,)
        finally:
            conn.close()


async def kill_backup_at(data: Path, root: Path, point: Callable[[Path], bool]) -> None:
    already = set(complete(root))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BACKER,
        str(data),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = await process.stdout.readline()
        assert line == b"ready\n", line
        # Poll the folder; stop at the kill point, or when the backup won the race.
        await wait_until(
            lambda: point(root) or set(complete(root)) != already, limit=60, interval=0.0005
        )
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


@pytest.mark.slow
async def test_a_backup_killed_midway_leaves_only_a_partial_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = SqlConfig.in_directory(data)
    async with SqlService(config) as sql:
        await sql.app.execute_many(
            "INSERT INTO logs(level, logger, message) VALUES ('INFO', 'fill', ?)",
            [(f"{i:06d}" + "x" * ROW_BYTES,) for i in range(ROWS)],
        )
        for start in range(0, EVENTS, 500):
            await sql.event_store.append(
                f"stream-{start}", [NewEvent("Filled", {"i": i}) for i in range(start, start + 500)]
            )
        root = sql.backup_root

    killed_midway = 0
    for _, point in KILL_POINTS:
        await kill_backup_at(data, root, point)
        if partials(root):
            killed_midway += 1
        # Never a folder that looks complete without being complete.
        for folder in complete(root):
            assert (folder / "manifest.json").exists(), folder
            await verify_backup(folder)
        assert [path for path, _ in list_backups(root)] == complete(root)
        check_live(data)
    # The kills landed inside a backup (the copies of ~20 MB take far longer than the poll).
    assert killed_midway >= 1

    async with SqlService(config) as sql:
        manifest = await sql.backup()
        assert await sql.app.fetch_val("SELECT count(*) FROM logs") == ROWS
    await verify_backup(manifest.directory)
    listed = [path for path, _ in list_backups(root)]
    assert manifest.directory in listed
    assert not any(path.name.endswith(".partial") for path in listed)
    check_live(data)
