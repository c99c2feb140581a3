"""A full disk: writes fail with ``DatabaseFull``, reads go on, nothing committed is lost, and
the same service writes again once there is room, without a restart.

One scenario, two ways to run out of room, on a production-mode service with a StateManager:

* ``PRAGMA max_page_count`` set on each writer connection just above the file's size (always
  available); room returns when the limit is raised again.
* a real filesystem full: a 8 MiB tmpfs mounted in a private mount namespace (``unshare -m``,
  which needs root or CAP_SYS_ADMIN; skipped otherwise), filled with a ballast file; room
  returns when the ballast is deleted. The scenario then runs in that namespace, in a separate
  process (``python -m tests.faults.test_disk_full DIR``), and reports its figures as JSON.

The scenario writes a baseline; then, once (ten times in the long version, on the same
service), it takes the room away and writes rounds of every kind (an ``execute`` of a 2 KiB
row, a two-row transaction, an event append, StateManager mutations) until every kind has
failed, and gives the room back. Every failure is a :class:`DatabaseFull`; a write that failed
left nothing behind, so the rows on disk are exactly the acknowledged ones. While full: reads,
``read_state()``, ``verify_events()`` and ``health()`` work. Once room returns, every kind of
write succeeds again on the same objects, ``flush()`` brings the projections up to the state,
and after a restart everything acknowledged is there and ``integrity_check`` is ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from async_store import DatabaseFull, NewEvent, SqlConfig, SqlService, StateManager, StoreError
from async_store.state import KnowledgeBase, KnowledgeBaseAdd, SettingSet
from tests.conftest import on_sqlite
from tests.contract.test_state_manager import assert_projected
from tests.faults._workload import REPO, ROUNDS, integrity, record

ROW = "x" * 2048
MAX_ROUNDS = 3000
"""Rounds of writes after the room is gone before the test gives up waiting for failures."""
TMPFS_SIZE = "8m"
CYCLES = max(1, ROUNDS // 20)
"""Times the room is taken away and given back on one service (10 in the long version)."""


@dataclass
class Acked:
    rows: set[str] = field(default_factory=set)
    """``logs.message`` of every acknowledged row (both of a transaction's)."""
    events: set[str] = field(default_factory=set)
    state_version: int = 0
    failures: Counter[str] = field(default_factory=Counter)


async def write_round(sql: SqlService, manager: StateManager, n: int, acked: Acked) -> set[str]:
    """One write of each kind; returns the kinds that failed (each with ``DatabaseFull``)."""

    async def single() -> None:
        await sql.app.execute(
            "INSERT INTO logs(level, logger, message, extra) VALUES ('INFO', 'full', ?, ?)",
            (f"single-{n}", json.dumps({"pad": ROW})),
        )
        acked.rows.add(f"single-{n}")

    async def pair() -> None:
        async with sql.app.transaction() as tx:
            for half in "ab":
                await tx.execute(
                    "INSERT INTO logs(level, logger, message, extra) VALUES ('INFO', 'full', ?, ?)",
                    (f"pair-{n}/{half}", json.dumps({"pad": ROW})),
                )
        acked.rows.update({f"pair-{n}/a", f"pair-{n}/b"})

    async def append() -> None:
        event = NewEvent("Filled", {"pad": ROW}, event_id=f"full-{n}")
        await sql.event_store.append("full", [event])
        acked.events.add(f"full-{n}")

    async def mutate() -> None:
        versions = await asyncio.gather(
            manager.mutate(KnowledgeBaseAdd(KnowledgeBase(f"kb-{n}", "Docs", description=ROW))),
            manager.mutate(SettingSet(f"key-{n % 7}", {"n": n, "pad": ROW[:512]})),
            return_exceptions=True,
        )
        errors = [v for v in versions if isinstance(v, BaseException)]
        acked.state_version = max(
            [acked.state_version, *(v for v in versions if isinstance(v, int))]
        )
        if errors:
            raise errors[0]

    kinds: dict[str, Callable[[], Awaitable[None]]] = {
        "execute": single,
        "transaction": pair,
        "append": append,
        "mutate": mutate,
    }
    failed = set()
    for kind, write in kinds.items():
        error: StoreError | None = None
        try:
            await write()
        except StoreError as exc:
            error = exc
        if error is not None:
            assert isinstance(error, DatabaseFull), f"{kind}: {error!r}"
            assert "full" in str(error).lower(), str(error)
            failed.add(kind)
            acked.failures[kind] += 1
    return failed


async def assert_exactly_acknowledged(sql: SqlService, acked: Acked) -> None:
    rows = await sql.app.fetch_all("SELECT message FROM logs WHERE logger = 'full'")
    assert {row[0] for row in rows} == acked.rows
    events = await sql.events.fetch_all("SELECT event_id FROM events WHERE stream_id = 'full'")
    assert {row[0] for row in events} == acked.events
    assert await sql.event_store.stream_version("$app") == acked.state_version


PROJECTOR_RETRY = 30.0
"""Seconds the projector is given to retry its failed batch once room returned (it retries
every second)."""


async def flush_once_room_returned(manager: StateManager) -> int:
    """``flush()`` until the projector, retrying on its own, has caught up; returns how many
    flushes were refused with the error of the batch that failed while the disk was full."""
    refused: list[StoreError] = []
    async with asyncio.timeout(PROJECTOR_RETRY):
        while True:
            try:
                await manager.flush()
            except StoreError as exc:
                refused.append(exc)
                await asyncio.sleep(0.05)
            else:
                break
    assert all("full" in str(error) for error in refused), refused[:1]
    return len(refused)


class Room:
    """How the scenario takes room away and gives it back."""

    async def take(self, sql: SqlService) -> None:
        raise NotImplementedError

    async def give_back(self, sql: SqlService) -> None:
        raise NotImplementedError


def set_max_page_count(conn: sqlite3.Connection, *, limit: int) -> list[Any]:
    return conn.execute(f"PRAGMA max_page_count = {limit}").fetchall()


class PageLimit(Room):
    """``PRAGMA max_page_count`` on each writer connection (the only one that writes), of
    every database or of those named."""

    def __init__(self, *names: str) -> None:
        self.names = names

    async def _limit(self, sql: SqlService, extra: int | None) -> None:
        for database in sql.databases:
            if self.names and database.name not in self.names:
                continue
            pages = await database.fetch_val("PRAGMA page_count")
            limit = 2**31 if extra is None else pages + extra
            rows = await on_sqlite(database).run_on_writer(
                functools.partial(set_max_page_count, limit=limit)
            )
            assert rows[0][0] >= pages

    async def take(self, sql: SqlService) -> None:
        await self._limit(sql, 4)

    async def give_back(self, sql: SqlService) -> None:
        await self._limit(sql, None)


class Ballast(Room):
    """A file that fills the filesystem holding the databases."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _fill(self) -> int:
        written = 0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for size in (1 << 16, 1 << 12, 1 << 9):  # then smaller writes, for the last bytes
                with contextlib.suppress(OSError):
                    while True:
                        written += os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        return written

    async def take(self, sql: SqlService) -> None:
        assert await asyncio.to_thread(self._fill) > 0
        assert shutil.disk_usage(self.path.parent).free < 65536

    async def give_back(self, sql: SqlService) -> None:
        self.path.unlink()


async def fill_until_every_write_fails(
    sql: SqlService, manager: StateManager, room: Room, n: int, acked: Acked
) -> tuple[int, list[str]]:
    """Take the room away and write until every kind of write has failed; check what works
    while full. Returns the next round number and what ``health()`` said."""
    await room.take(sql)
    failed: set[str] = set()
    first = n
    while failed != {"execute", "transaction", "append", "mutate"}:
        assert n - first < MAX_ROUNDS, f"writes still succeed after {n - first} rounds: {failed}"
        failed |= await write_round(sql, manager, n, acked)
        n += 1
    # Full: reads work, and exactly the acknowledged writes are there.
    await assert_exactly_acknowledged(sql, acked)
    assert manager.read_state().version == acked.state_version
    assert (await sql.event_store.verify_events()).ok
    report = await sql.health()
    assert report.status != "ok"
    assert any("full" in reason for reason in report.reasons), report.reasons
    return n, [report.status, *report.reasons]


async def scenario(directory: Path, room: Room) -> dict[str, Any]:
    """The scenario of the module docstring, ``CYCLES`` times on one service; returns its
    figures."""
    config = SqlConfig.in_directory(directory / "data")
    acked = Acked()
    stale = 0
    async with SqlService(config) as sql, StateManager(sql) as manager:
        for n in range(5):
            assert await write_round(sql, manager, n, acked) == set()
        await manager.flush()
        n = 5
        for _ in range(CYCLES):
            n, health = await fill_until_every_write_fails(sql, manager, room, n, acked)
            await room.give_back(sql)
            # The same service, without a restart: every kind of write succeeds again.
            for m in range(n, n + 3):
                assert await write_round(sql, manager, m, acked) == set()
            n += 3
            stale += await flush_once_room_returned(manager)
            await assert_projected(sql, manager.read_state())
            await assert_exactly_acknowledged(sql, acked)
        state = manager.read_state()

    for name in ("app_meta.db", "events.db"):
        assert integrity(config.app.path.parent / name) == "ok"
    async with SqlService(config) as sql, StateManager(sql) as manager:
        await assert_exactly_acknowledged(sql, acked)
        assert manager.read_state() == state
        await assert_projected(sql, state)
    return {
        "cycles": CYCLES,
        "database_full_errors": dict(acked.failures),
        "acknowledged_rows": len(acked.rows),
        "acknowledged_events": len(acked.events),
        "acknowledged_state_version": acked.state_version,
        "flushes_refused_after_room_returned": stale,
        "health_while_full": health,
        "lost": 0,
    }


async def test_max_page_count_reached_then_raised(tmp_path: Path) -> None:
    figures = await scenario(tmp_path, PageLimit())
    record("disk_full_max_page_count", **figures)


async def test_flush_right_after_room_returned_waits_for_the_projector(tmp_path: Path) -> None:
    room = PageLimit("app_meta")
    async with SqlService(SqlConfig.in_directory(tmp_path)) as sql, StateManager(sql) as manager:
        await manager.mutate(SettingSet("before", 1))
        await manager.flush()
        await room.take(sql)
        n = 0
        async with asyncio.timeout(30):
            while manager.projection_error is None:  # the events database still has room
                await manager.mutate(SettingSet(f"key-{n}", ROW))
                await asyncio.sleep(0.01)
                n += 1
        await room.give_back(sql)
        version = await manager.flush()
        assert version == manager.read_state().version
        await assert_projected(sql, manager.read_state())


def mount_tmpfs(mountpoint: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a private mount namespace with a tmpfs on ``mountpoint``."""
    script = f'mount -t tmpfs -o size={TMPFS_SIZE} tmpfs "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(mountpoint), *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs and mount namespaces are Linux's")
def test_filesystem_full_then_space_freed(tmp_path: Path) -> None:
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed: cannot mount a private tmpfs")
    probe = mount_tmpfs(mountpoint, "true")
    if probe.returncode != 0:
        pytest.skip(
            "mounting a tmpfs in a private mount namespace is not allowed here "
            f"(needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
        )
    result = mount_tmpfs(
        mountpoint, sys.executable, "-m", "tests.faults.test_disk_full", str(mountpoint)
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["lost"] == 0
    record("disk_full_tmpfs", **figures)
    # The namespace, and with it the tmpfs, ended with the process: nothing was left here.
    assert list(mountpoint.iterdir()) == []


if __name__ == "__main__":
    place = Path(sys.argv[1])
    print(json.dumps(asyncio.run(scenario(place, Ballast(place / "ballast")))))
