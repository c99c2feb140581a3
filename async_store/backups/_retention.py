"""Where backups go, how often they are taken and how many are kept (:class:`BackupConfig`):
which backups to keep (``prune``), and the background loop that takes them
(:class:`BackupScheduler`)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from ..errors import ConfigError
from ._manifest import BackupManifest

__all__ = ["BackupConfig", "BackupScheduler", "list_backups"]

log = logging.getLogger("async_store.backup")


@dataclass(frozen=True, kw_only=True)
class BackupConfig:
    """Where backups go and, for scheduled backups, how often and how many to keep. Invalid
    values raise :class:`ConfigError` (also a ``ValueError``) on construction."""

    directory: Path | None = None
    """Folder of the backups (created 0700). Default: ``backups/`` beside app_meta.db."""
    interval: float | None = None
    """Seconds between scheduled backups; None: no schedule, ``backup()`` on demand only."""
    keep_last: int = 7
    """The newest backups always kept."""
    keep_daily: int = 7
    """Also kept: the newest backup of each of this many most recent days."""

    def __post_init__(self) -> None:
        if self.directory is not None:
            object.__setattr__(self, "directory", Path(self.directory))
        if self.interval is not None and self.interval <= 0:
            raise ConfigError(f"backup interval must be > 0 seconds, not {self.interval}")
        if self.keep_last < 1 or self.keep_daily < 0:
            raise ConfigError("keep_last must be >= 1 and keep_daily >= 0")


def list_backups(root: Path) -> list[tuple[Path, datetime]]:
    """Complete backups under ``root``, oldest first, with their creation times."""
    found = []
    if not root.is_dir():
        return []
    for entry in root.iterdir():
        if not entry.is_dir() or not entry.name.startswith("backup-"):
            continue
        if entry.name.endswith(".partial"):
            continue
        try:
            created = datetime.strptime(entry.name[len("backup-") :], "%Y%m%dT%H%M%S.%fZ")
        except ValueError:
            continue
        found.append((entry, created.replace(tzinfo=UTC)))
    return sorted(found, key=lambda item: item[1])


def select_expired(
    backups: Sequence[tuple[Path, datetime]], *, keep_last: int, keep_daily: int, now: datetime
) -> list[Path]:
    """The backups retention drops: all but the ``keep_last`` newest and the newest of each
    of the ``keep_daily`` most recent days (counted back from ``now``)."""
    ordered = sorted(backups, key=lambda item: item[1], reverse=True)
    keep = {path for path, _ in ordered[:keep_last]}
    first_day = (now - timedelta(days=keep_daily - 1)).date() if keep_daily else None
    seen_days = set()
    for path, created in ordered:
        day = created.date()
        if first_day is not None and day >= first_day and day not in seen_days:
            seen_days.add(day)
            keep.add(path)
    return [path for path, _ in ordered if path not in keep]


STALE_PARTIAL = timedelta(hours=1)
"""A ``.partial`` folder older than this is left over from a backup that was killed."""


def prune(root: Path, *, keep_last: int, keep_daily: int, now: datetime) -> list[Path]:
    """Delete the backups :func:`select_expired` picks, and ``.partial`` folders of backups
    that started more than :data:`STALE_PARTIAL` ago (a backup in progress is left alone)."""
    expired = select_expired(
        list_backups(root), keep_last=keep_last, keep_daily=keep_daily, now=now
    )
    for entry in root.glob("backup-*.partial"):
        stamp = entry.name[len("backup-") : -len(".partial")]
        try:
            started = datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            continue
        if entry.is_dir() and now - started > STALE_PARTIAL:
            expired.append(entry)
    for path in expired:
        shutil.rmtree(path, ignore_errors=True)
    return expired


class BackupScheduler:
    """Takes a backup every ``interval`` seconds and prunes by the retention rule. A failed
    backup is logged, counted and tried again at the next interval; it never stops the
    service."""

    def __init__(
        self,
        take: Callable[[], Awaitable[BackupManifest]],
        config: BackupConfig,
        root: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._take = take
        self._config = config
        self._root = root
        self._clock = clock
        self.taken = 0
        self.failures = 0
        """Consecutive failures (reset by a success)."""
        self.total_failures = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        """Loop until cancelled (run it in a task group). No failure of a round ends the loop:
        only cancellation does."""
        interval = self._config.interval
        if interval is None:
            return
        while True:
            await anyio.sleep(interval)
            await self.run_once()

    async def run_once(self) -> BackupManifest | None:
        """One scheduled round: back up, then prune. Returns the manifest, or None if the
        backup failed. A failure of any kind (``Exception``) is logged with its traceback,
        counted, and kept in ``last_error``; cancellation goes through."""
        try:
            manifest = await self._take()
        except Exception as exc:
            self.failures += 1
            self.total_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "scheduled backup failed (%d in a row, %d in all); retrying in the next "
                "interval: %s",
                self.failures,
                self.total_failures,
                self.last_error,
                exc_info=exc,
            )
            return None
        self.taken += 1
        self.failures = 0
        self.last_error = None
        try:
            expired = prune(
                self._root,
                keep_last=self._config.keep_last,
                keep_daily=self._config.keep_daily,
                now=self._clock(),
            )
        except Exception:
            # The backup is taken; old ones stay until a later round prunes them.
            log.exception("pruning old backups in %s failed", self._root)
        else:
            if expired:
                log.info("pruned %d old backup(s)", len(expired))
        return manifest
