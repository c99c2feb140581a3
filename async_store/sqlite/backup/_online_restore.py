"""Online restore: the backup's copies put in place of the live databases while the service
runs, with the writes to every database paused (the steps of ``SqlService.restore`` after the
backup itself verified).

SQLite cannot replace two database files in one transaction, so the restore does what it can
to fail before anything is replaced, and says exactly what was replaced when it cannot:

1. (``SqlService.restore``: refused at once inside a ``transaction()`` block, which the pause
   would wait for; then the backup verified.)
2. Before the pause: enough free space for the copies (each is written to its WAL first).
3. Once every writer is held: every source opened and read (a read transaction, which also
   pins the very file that was checked: a later rename or unlink of it changes nothing),
   checked against the manifest.
4. The copies, one after another, app_meta first, each followed by the migrations it lacks. A
   failure of the first replaces nothing; a later one raises a :class:`BackupError` naming
   what was replaced and what was not, and how to bring them back together.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..._shield import uncancellable
from ...backups._manifest import BackupFile
from ...errors import BackupError, StoreError
from ...migrations.runner import MigrationWork
from .._migrations import session_job
from .._writer_pause import Paused, pause_writers
from ..database import SqliteDatabase as Database

__all__ = ["restore_online"]

ROOM_FACTOR = 1.1
"""Free space asked for per byte of a copy: the WAL holds every page with a frame header."""


async def restore_online(
    databases: Sequence[Database],
    backup: Path,
    files: Mapping[str, BackupFile],
    migrations: Mapping[str, MigrationWork],
    *,
    before: Callable[[], None],
) -> None:
    """Replace each of ``databases`` (app_meta first) with its copy in ``backup`` (``files``:
    database name → its entry in the verified manifest), then the migration runner's
    ``migrations[name]`` where given. ``before()`` runs once every writer is held, before
    anything is read.
    Raises :class:`BackupError`, saying what was replaced (see the module docstring), or
    :class:`PoolClosed`. The caller is not inside a ``transaction()`` block of any of
    ``databases`` (the pause would wait for it)."""
    sources = [_Source(db, backup / files[db.name].name, files[db.name]) for db in databases]
    _check_room(sources)
    async with pause_writers(databases) as paused:
        before()
        try:
            for source in sources:
                await paused.run(source.database, source.open)
            await _copy_all(paused, sources, migrations, backup)
        finally:
            await uncancellable(
                asyncio.gather(
                    *(paused.run(source.database, source.close) for source in sources),
                    return_exceptions=True,
                )
            )


async def _copy_all(
    paused: Paused,
    sources: list[_Source],
    migrations: Mapping[str, MigrationWork],
    backup: Path,
) -> None:
    replaced: list[str] = []
    for source in sources:
        name = source.database.name
        try:
            await paused.run(source.database, source.copy)
        except StoreError as exc:
            step = f"copying the backup over {name}"
            raise _failure(backup, sources, replaced, step, exc) from exc
        replaced.append(name)
        work = migrations.get(name)
        if work is not None:
            try:
                await paused.run(source.database, session_job(source.database.config, work))
            except StoreError as exc:
                step = f"migrating {name} (replaced, at the backup's schema)"
                raise _failure(backup, sources, replaced, step, exc) from exc


def _failure(
    backup: Path, sources: list[_Source], replaced: list[str], step: str, exc: StoreError
) -> BackupError:
    if not replaced:
        return BackupError(f"{backup}: {step} failed: {exc}; nothing was replaced")
    kept = [s.database.name for s in sources if s.database.name not in replaced]
    return BackupError(
        f"{backup}: {step} failed: {exc}. Replaced with the backup: {', '.join(replaced)}; "
        f"not replaced (still the live data): {', '.join(kept) or 'none'}. The databases no "
        "longer match each other and writes go on against them as they are. To bring them "
        "back together, restore the same backup again once the cause is fixed (online, or "
        "offline with the service stopped: async-store restore)"
    )


def _check_room(sources: list[_Source]) -> None:
    """Refuse when a filesystem lacks room for the copies written to it: cheap, and a full
    disk is the likeliest failure of a copy."""
    needs: dict[int, tuple[Path, int]] = {}
    for source in sources:
        folder = source.database.path.parent
        try:
            device = os.stat(folder).st_dev
        except OSError as exc:
            raise BackupError(f"{source.database.name}: cannot use {folder}: {exc}") from exc
        _, need = needs.get(device, (folder, 0))
        needs[device] = (folder, need + source.file.size_bytes)
    for folder, need in needs.values():
        free = shutil.disk_usage(folder).free
        if free < need * ROOM_FACTOR:
            raise BackupError(
                f"not enough free space in {folder} to restore: the copies need about "
                f"{need:,} bytes, {free:,} are free; nothing was replaced"
            )


class _Source:
    """One database's copy in the backup, open for reading on its database's writer thread
    from :meth:`open` to :meth:`copy` (or :meth:`close`)."""

    def __init__(self, database: Database, path: Path, file: BackupFile) -> None:
        self.database = database
        self.path = path
        self.file = file
        self._conn: sqlite3.Connection | None = None

    def open(self, _target: sqlite3.Connection) -> None:
        """Open the copy read-only in a read transaction and check it still is the copy the
        manifest describes (size and user_version: the full check ran just before)."""
        name = self.database.name
        try:
            self._conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
            self._conn.execute("BEGIN")
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            page_count, page_size, user_version = (
                self._conn.execute(f"PRAGMA {pragma}").fetchone()[0]
                for pragma in ("page_count", "page_size", "user_version")
            )
            on_disk = os.stat(self.path).st_size
        except (sqlite3.Error, OSError) as exc:
            raise BackupError(
                f"{name}: the backup's copy {self.path} cannot be read any more ({exc}); "
                "nothing was replaced"
            ) from exc
        # A file cut short still reads (SQLite fills the missing pages with zeros): its size
        # on disk must match as well as the size its header gives.
        sizes = {page_count * page_size, on_disk}
        if sizes != {self.file.size_bytes} or user_version != self.file.user_version:
            raise BackupError(
                f"{name}: the backup's copy {self.path} changed after it was verified "
                f"({on_disk:,} bytes on disk, {page_count * page_size:,} by its header, "
                f"user_version {user_version}; the manifest says {self.file.size_bytes:,} "
                f"bytes, user_version {self.file.user_version}); nothing was replaced"
            )

    def copy(self, target: sqlite3.Connection) -> None:
        """SQLite's backup API copies the open source over ``target`` (a writer connection,
        outside any transaction) in one transaction of the target."""
        assert self._conn is not None, "opened first"
        try:
            self._conn.backup(target)
        finally:
            self.close(target)

    def close(self, _target: sqlite3.Connection) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
