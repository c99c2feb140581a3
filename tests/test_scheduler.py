"""The backup scheduler as the service runs it: failures of any kind logged, counted and
retried on the next interval; retention by the scheduler's clock."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from async_store import BackupConfig, BackupManifest, SqlConfig, SqlService
from async_store.backups._retention import BackupScheduler, list_backups
from async_store.sqlite.backup import BACKUPS

STAMP = "%Y%m%dT%H%M%S.%fZ"


async def wait_until(condition: Callable[[], bool], *, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        await asyncio.sleep(0.005)


class InjectedFault(Exception):
    """Not a StoreError, not an OSError: what a bug anywhere in a backup would raise."""


async def test_scheduled_backups_survive_unexpected_failures_and_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = BACKUPS.create
    failing = True
    failed = 0

    async def faulty(*args: Any, **kwargs: Any) -> BackupManifest:
        nonlocal failed
        if failing:
            failed += 1
            raise InjectedFault(f"fault {failed}")
        return await real(*args, **kwargs)

    # The backend's backups, which every backup the service takes, scheduled or not, go through.
    monkeypatch.setattr(BACKUPS, "create", faulty)
    caplog.set_level(logging.INFO, logger="async_store")
    root = tmp_path / "backups"
    schedule = BackupConfig(directory=root, interval=0.05, keep_last=10, keep_daily=0)
    async with SqlService(SqlConfig.in_directory(tmp_path / "data"), backup=schedule) as sql:
        scheduler = sql.backup_scheduler
        await wait_until(lambda: scheduler.total_failures >= 3)
        during = await sql.health()

        failing = False
        await wait_until(lambda: scheduler.taken >= 2)
        after = await sql.health()

    # While failing: counted, in a row, with the error's kind, and degraded.
    assert during.backup_failures >= 3
    assert during.backup_failures_total == during.backup_failures
    assert during.last_backup_error is not None
    assert during.last_backup_error.startswith("InjectedFault: fault")
    assert during.status == "degraded"
    assert any("backup" in r and "failed" in r for r in during.reasons), during.reasons
    # Recovered: the loop went on, later backups succeeded, the failures stay counted.
    assert after.backup_failures == 0
    assert after.backup_failures_total == failed >= 3
    assert after.backups_taken >= 2
    assert after.last_backup_error is None
    assert after.last_backup_at is not None
    assert len(list_backups(root)) >= 2
    # Each failure logged when it happened, with its traceback.
    failures = [
        r for r in caplog.records if r.name == "async_store.backup" and r.levelno == logging.ERROR
    ]
    assert len(failures) == failed
    for record in failures:
        assert record.exc_info is not None
        assert record.exc_info[0] is InjectedFault
        assert "retrying" in record.getMessage()
    assert not any("background work failed" in r.getMessage() for r in caplog.records)


async def test_only_cancellation_ends_the_scheduler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = [
        InjectedFault("a bug"),
        KeyError("missing"),
        ValueError("bad"),
        RuntimeError("odd"),
    ]
    attempts = 0

    async def take() -> BackupManifest:
        nonlocal attempts
        attempts += 1
        raise errors[attempts % len(errors)]

    scheduler = BackupScheduler(take, BackupConfig(interval=0.01), tmp_path)
    with caplog.at_level(logging.ERROR, logger="async_store.backup"):
        task = asyncio.create_task(scheduler.run())
        await wait_until(lambda: scheduler.total_failures >= 2 * len(errors))
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    assert scheduler.taken == 0
    assert scheduler.failures == scheduler.total_failures == attempts
    kinds = {r.exc_info[0] for r in caplog.records if r.exc_info is not None}
    assert kinds == {type(e) for e in errors}


class FakeClock:
    """Days pass in a few milliseconds: each backup is taken six hours after the last."""

    def __init__(self, start: datetime) -> None:
        self.now = start - timedelta(hours=6)

    def __call__(self) -> datetime:
        return self.now


def with_clock_time(
    take: Callable[[], Awaitable[BackupManifest]], clock: FakeClock
) -> Callable[[], Awaitable[BackupManifest]]:
    """A real backup, its folder then named for the fake clock's time (the folder name is its
    creation time, which retention reads)."""

    async def taken_at_clock_time() -> BackupManifest:
        clock.now += timedelta(hours=6)
        manifest = await take()
        folder = manifest.directory.with_name(f"backup-{clock.now.strftime(STAMP)}")
        manifest.directory.rename(folder)
        return manifest

    return taken_at_clock_time


def folders(root: Path) -> list[str]:
    return [path.name for path, _ in list_backups(root)]


def at(day: int, hour: int) -> str:
    return f"backup-{datetime(2026, 3, day, hour, 30, tzinfo=UTC).strftime(STAMP)}"


async def test_daily_retention_through_the_scheduler_over_five_days(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    clock = FakeClock(datetime(2026, 3, 1, 0, 30, tzinfo=UTC))
    config = BackupConfig(directory=root, keep_last=3, keep_daily=3)
    data = SqlConfig.in_directory(tmp_path / "data", mvp=True)
    async with SqlService(data, backup=config) as sql:  # no interval: no loop of its own
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('a', '1')")
        scheduler = BackupScheduler(with_clock_time(sql.backup, clock), config, root, clock=clock)
        seen: dict[datetime, list[str]] = {}
        for _ in range(20):  # 1 March 00:30 to 5 March 18:30, every six hours
            assert await scheduler.run_once() is not None
            seen[clock.now] = folders(root)

    assert scheduler.taken == 20
    assert scheduler.total_failures == 0
    # After the first day: the three newest, and the newest of 1 March (already among them).
    assert seen[datetime(2026, 3, 1, 18, 30, tzinfo=UTC)] == [
        at(1, 6),
        at(1, 12),
        at(1, 18),
    ]
    # On 2 March at 06:30: three newest; 1 March's newest is one of them.
    assert seen[datetime(2026, 3, 2, 6, 30, tzinfo=UTC)] == [at(1, 18), at(2, 0), at(2, 6)]
    # On 3 March at 06:30: the three newest, and the newest of 2 March and of 1 March.
    assert seen[datetime(2026, 3, 3, 6, 30, tzinfo=UTC)] == [
        at(1, 18),
        at(2, 18),
        at(3, 0),
        at(3, 6),
    ]
    # At the end: the three newest (all of 5 March) and the newest of 4 and 3 March; 1 and 2
    # March fell out of the three-day window.
    assert folders(root) == [at(3, 18), at(4, 18), at(5, 6), at(5, 12), at(5, 18)]
    assert sorted(p.name for p in root.iterdir()) == folders(root)  # nothing else is left
