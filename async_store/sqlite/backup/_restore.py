"""Offline restore: replace the live database files with a verified backup while no process
has them open, keeping the replaced files aside."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ...backups._manifest import BackupFile
from ...errors import BackupError
from ...migrations._sets import MigrationSet
from .._connection import run_on_file
from ._contents import MODE_DATABASES, check_target
from ._copy import CHUNK, fsync_path, make_private_dir, verify_backup

__all__ = ["restore_offline"]


async def restore_offline(
    backup: Path,
    targets: dict[str, Path],
    *,
    progress: Callable[[int, int], None] | None = None,
    migration_sets: Sequence[MigrationSet] | None = None,
) -> Path:
    """Replace the database files ``targets`` (database name → live path: ``app_meta`` alone
    in MVP mode, ``app_meta`` and ``events`` in production mode) with the verified copies in
    ``backup``. Refuses (:class:`BackupError`, nothing replaced) if the backup does not verify
    (see :func:`verify_backup`; ``migration_sets`` are the application's own sets), is not
    one of this library's, was taken in the other mode, or any process has a live file open.
    The replaced files are kept in a ``replaced-<time>/`` folder beside them; returns that
    folder."""
    target_mode = next(
        (mode for mode, names in MODE_DATABASES.items() if sorted(names) == sorted(targets)),
        None,
    )
    if target_mode is None:
        raise BackupError(
            f"cannot restore into {', '.join(targets) or 'no database'}: the targets are "
            "app_meta (MVP mode) or app_meta and events (production mode)"
        )
    manifest = await verify_backup(backup, migration_sets=migration_sets)
    check_target(Path(backup), manifest.mode, target_mode, targets)
    by_database = {item.database: item for item in manifest.files}
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
        make_private_dir(aside)
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
    # A file left by an interrupted restore may have other permissions (O_CREAT's mode applies
    # only to a new file): start afresh, so the restored database is owner-only.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    with (
        source.open("rb") as src,
        open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as dst,
    ):
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            report(len(chunk))
        dst.flush()
        os.fsync(dst.fileno())
    for suffix in ("", "-wal", "-shm"):
        current = Path(f"{live}{suffix}")
        if current.exists():
            os.replace(current, aside / current.name)
    os.replace(partial, live)
    fsync_path(live.parent)
    fsync_path(aside)
