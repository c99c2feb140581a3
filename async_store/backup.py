"""Backups: verified ``VACUUM INTO`` copies with a manifest, retention, and restore.

A backup is a folder ``backup-<UTC time>/`` holding one file per database and ``manifest.json``
(files, sizes, sha256, schema versions, event position, duration). It is built in a
``.partial`` folder, each copy checked (``integrity_check``, ``foreign_key_check``, schema
version equal to the source's) and fsynced, then renamed into place: a folder without
``.partial`` is always complete. The copies are made from a dedicated connection, so the writer
never waits for a backup.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from ._connection import open_connection, run_on_file
from .database import Database
from .errors import BackupError, StoreError

__all__ = [
    "BackupConfig",
    "BackupScheduler",
    "BackupFile",
    "BackupManifest",
    "create_backup",
    "list_backups",
    "prune",
    "restore_offline",
    "select_expired",
    "verify_backup",
]

log = logging.getLogger("async_store.backup")

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class BackupConfig:
    """Where backups go and, for scheduled backups, how often and how many to keep."""

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
            raise BackupError(f"backup interval must be > 0 seconds, not {self.interval}")
        if self.keep_last < 1 or self.keep_daily < 0:
            raise BackupError("keep_last must be >= 1 and keep_daily >= 0")


@dataclass(frozen=True)
class BackupFile:
    """One database's copy in a backup."""

    name: str
    """File name inside the backup folder (``app_meta.db``)."""
    database: str
    """The database it copies (``app_meta`` or ``events``)."""
    size_bytes: int
    sha256: str
    user_version: int
    schema_versions: dict[str, int]
    """Migration set → newest applied version, from ``schema_migrations``."""


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds; ``files`` has one verified copy per database."""

    directory: Path
    created_at: str
    mode: str
    files: tuple[BackupFile, ...]
    event_position: int
    duration_ms: float
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_at": self.created_at,
            "mode": self.mode,
            "event_position": self.event_position,
            "duration_ms": self.duration_ms,
            "files": [vars(f).copy() for f in self.files],
        }

    @classmethod
    def read(cls, directory: Path) -> BackupManifest:
        """The manifest of the backup in ``directory``; :class:`BackupError` when missing or
        unreadable."""
        path = directory / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = tuple(BackupFile(**item) for item in data["files"])
            if data.get("format") != FORMAT:
                raise BackupError(f"{path}: unknown manifest format {data.get('format')!r}")
            return cls(
                directory,
                data["created_at"],
                data["mode"],
                files,
                data["event_position"],
                data["duration_ms"],
            )
        except BackupError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"{path}: not a readable async_store backup manifest: {exc}") from exc


# -- creating --------------------------------------------------------------------------------


async def create_backup(
    databases: Sequence[Database], root: Path, *, mode: str, event_database: Database
) -> BackupManifest:
    """Back up every database into a new folder under ``root`` and return its manifest."""
    started = time.perf_counter()
    created = datetime.now(UTC)
    stamp = created.strftime("%Y%m%dT%H%M%S.%fZ")
    try:
        _make_private_dir(root)
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise BackupError(f"cannot use {root} for backups: {exc}") from exc
    needed = sum(_database_bytes(db.path) for db in databases)
    if free < needed * 1.1 + 16 * _CHUNK:
        raise BackupError(
            f"not enough free space in {root}: the backup needs about {needed:,} bytes, "
            f"{free:,} are free"
        )
    final = root / f"backup-{stamp}"
    partial = root / f"backup-{stamp}.partial"
    try:
        partial.mkdir(mode=0o700)
    except OSError as exc:
        raise BackupError(f"cannot create {partial}: {exc}") from exc
    try:
        files = []
        positions = []
        for database in databases:
            copied, position = await _copy_database(database, partial / database.path.name)
            files.append(copied)
            if position is not None:
                positions.append(position)
        manifest = BackupManifest(
            final,
            created.isoformat(timespec="microseconds"),
            mode,
            tuple(files),
            max(positions, default=0),
            round((time.perf_counter() - started) * 1000, 3),
        )
        text = json.dumps(manifest.to_dict(), indent=2)
        await run_on_file(
            partial / files[0].name,
            lambda conn: _publish(partial, final, text),
            readonly=True,
        )
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BackupError(f"backup into {partial} failed: {exc}") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


async def _copy_database(database: Database, target: Path) -> tuple[BackupFile, int | None]:
    """``VACUUM INTO`` from a dedicated connection, then verify and fsync the copy."""
    config = database.config.replace(readers=1)
    connection = await open_connection(config, reader=False)
    try:
        return await connection.run(lambda conn: _vacuum_into(conn, target, database.name))
    except StoreError:
        raise
    except Exception as exc:
        raise BackupError(f"{database.name}: backup to {target} failed: {exc}") from exc
    finally:
        await connection.close()


def _vacuum_into(
    conn: sqlite3.Connection, target: Path, name: str
) -> tuple[BackupFile, int | None]:
    """The copy's file entry, and the newest event position it holds (None: no event log)."""
    # VACUUM INTO runs in a read transaction of its own (it refuses to run inside one), so
    # the versions are read just before it; migrations only run at start-up.
    source_versions = _schema_versions(conn)
    source_user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute("VACUUM INTO ?", (str(target),))
    os.chmod(target, 0o600)
    copy = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True)
    try:
        problems = _check_copy(copy)
        versions = _schema_versions(copy)
        user_version = copy.execute("PRAGMA user_version").fetchone()[0]
        position = None
        if "events" in versions:
            position = copy.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    finally:
        copy.close()
    if problems:
        raise BackupError(f"{name}: the copy failed verification: {problems}")
    if versions != source_versions or user_version != source_user_version:
        raise BackupError(
            f"{name}: the copy's schema ({versions}, user_version {user_version}) differs from "
            f"the source's ({source_versions}, user_version {source_user_version})"
        )
    digest = _fsync_and_hash(target)
    entry = BackupFile(target.name, name, target.stat().st_size, digest, user_version, versions)
    return entry, position


def _check_copy(conn: sqlite3.Connection) -> str:
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        return "integrity_check: " + "; ".join(integrity[:5])
    violations = conn.execute("PRAGMA foreign_key_check").fetchall()
    if violations:
        return f"foreign_key_check: {len(violations)} violation(s), first in {violations[0][0]}"
    return ""


def _schema_versions(conn: sqlite3.Connection) -> dict[str, int]:
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if has_table is None:
        return {}
    rows = conn.execute(
        "SELECT migration_set, max(version) FROM schema_migrations GROUP BY migration_set"
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def _fsync_and_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _publish(partial: Path, final: Path, manifest_text: str) -> None:
    """Write the manifest, fsync it and the folder, rename the folder into place, fsync the
    parent: after this returns the backup survives a power loss."""
    manifest = partial / MANIFEST
    fd = os.open(manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, manifest_text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(partial)
    os.rename(partial, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)


def _database_bytes(path: Path) -> int:
    total = 0
    for candidate in (path, Path(f"{path}-wal")):
        with contextlib.suppress(OSError):
            total += candidate.stat().st_size
    return total


# -- verifying -------------------------------------------------------------------------------


async def verify_backup(directory: Path) -> BackupManifest:
    """Check a backup against its manifest: every file present, of the recorded size and
    sha256, passing ``integrity_check`` and ``foreign_key_check``, at the recorded schema
    versions. Raises :class:`BackupError` naming what is wrong."""
    directory = Path(directory)
    if directory.name.endswith(".partial"):
        raise BackupError(f"{directory}: an unfinished backup (.partial) cannot be used")
    manifest = BackupManifest.read(directory)
    for item in manifest.files:
        path = directory / item.name
        if not path.is_file():
            raise BackupError(f"{directory}: {item.name} is missing")
        if path.stat().st_size != item.size_bytes:
            raise BackupError(
                f"{path}: {path.stat().st_size} bytes, the manifest says {item.size_bytes}"
            )
        problem = await run_on_file(
            path, functools.partial(_verify_file, path=path, item=item), readonly=True
        )
        if problem:
            raise BackupError(f"{path}: {problem}")
    return manifest


def _verify_file(conn: sqlite3.Connection, *, path: Path, item: BackupFile) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != item.sha256:
        return "sha256 does not match the manifest (the file changed since the backup)"
    try:
        problems = _check_copy(conn)
        versions = _schema_versions(conn)
    except sqlite3.DatabaseError as exc:
        return f"not a readable SQLite database: {exc}"
    if problems:
        return problems
    if versions != item.schema_versions:
        return f"schema versions {versions} differ from the manifest's {item.schema_versions}"
    return ""


# -- restoring -------------------------------------------------------------------------------


async def restore_offline(
    backup: Path, targets: dict[str, Path], *, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Replace the database files ``targets`` (database name → live path) with the verified
    copies in ``backup``. Refuses (:class:`BackupError`, nothing replaced) if the backup does
    not verify, lacks one of the databases, or any process has a live file open. The replaced
    files are kept in a ``replaced-<time>/`` folder beside them; returns that folder."""
    manifest = await verify_backup(backup)
    by_database = {item.database: item for item in manifest.files}
    missing = sorted(set(targets) - set(by_database))
    if missing:
        raise BackupError(f"{backup}: holds no copy of {', '.join(missing)}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = next(iter(targets.values())).parent / f"replaced-{stamp}"
    total = sum(by_database[name].size_bytes for name in targets)
    copied = [0]

    def report(step: int) -> None:
        copied[0] += step
        if progress is not None:
            progress(copied[0], total)

    first = backup / manifest.files[0].name
    # All of it on one worker thread: the locks are held by connections of that thread.
    await run_on_file(
        first,
        lambda _conn: _restore_files(backup, targets, by_database, aside, report),
        readonly=True,
    )
    return aside


def _restore_files(
    backup: Path,
    targets: dict[str, Path],
    by_database: dict[str, BackupFile],
    aside: Path,
    report: Callable[[int], None],
) -> None:
    locks: list[sqlite3.Connection] = []
    try:
        for name, live in targets.items():
            if live.exists():
                locks.append(_lock_exclusively(name, live))
        _make_private_dir(aside)
        for name, live in targets.items():
            _swap_in(backup / by_database[name].name, live, aside, report)
    finally:
        for lock in locks:
            lock.close()


def _lock_exclusively(name: str, live: Path) -> sqlite3.Connection:
    """An exclusive lock on a live file proves no other process has it open (in WAL mode an
    exclusive locking-mode connection cannot start while another holds the file). The WAL is
    checkpointed into the file first, so the copy kept aside is complete."""
    conn = sqlite3.connect(live, isolation_level=None, timeout=0)
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.OperationalError as exc:
        conn.close()
        raise BackupError(
            f"{name}: {live} is open in another process ({exc}); stop it before restoring; "
            "nothing was replaced"
        ) from exc
    return conn


def _swap_in(source: Path, live: Path, aside: Path, report: Callable[[int], None]) -> None:
    partial = live.with_name(live.name + ".restoring")
    with (
        source.open("rb") as src,
        open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as dst,
    ):
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            report(len(chunk))
        dst.flush()
        os.fsync(dst.fileno())
    for suffix in ("", "-wal", "-shm"):
        current = Path(f"{live}{suffix}")
        if current.exists():
            os.replace(current, aside / current.name)
    os.replace(partial, live)
    _fsync_dir(live.parent)
    _fsync_dir(aside)


# -- retention -------------------------------------------------------------------------------


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
        """Loop until cancelled (run it in a task group)."""
        interval = self._config.interval
        if interval is None:
            return
        while True:
            await anyio.sleep(interval)
            await self.run_once()

    async def run_once(self) -> BackupManifest | None:
        """One scheduled round: back up, then prune. Returns the manifest, or None if the
        backup failed."""
        try:
            manifest = await self._take()
        except (StoreError, OSError) as exc:
            self.failures += 1
            self.total_failures += 1
            self.last_error = str(exc)
            log.error("scheduled backup failed (%d in a row): %s", self.failures, exc)
            return None
        self.taken += 1
        self.failures = 0
        self.last_error = None
        expired = prune(
            self._root,
            keep_last=self._config.keep_last,
            keep_daily=self._config.keep_daily,
            now=self._clock(),
        )
        if expired:
            log.info("pruned %d old backup(s)", len(expired))
        return manifest
