"""SQLite backups: verified ``VACUUM INTO`` copies with a manifest.

A backup is a folder ``backup-<UTC time>/`` holding one file per database and ``manifest.json``
(files, sizes, sha256, schema versions, event position, duration). It is built in a
``.partial`` folder, each copy checked (``quick_check``, ``foreign_key_check``, schema
version equal to the source's) and fsynced, then renamed into place: a folder without
``.partial`` is always complete. The copies are made from a dedicated connection, so the writer
never waits for a backup.

This module makes backups (``create_backup``) and verifies them (:func:`verify_backup`). Where
and how often they are taken, and the manifest's types and its reading, are backend-neutral
(``async_store.backups``); what a backup must hold to be restored is in ``_contents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from ..._shield import uncancellable
from ...backups._manifest import MANIFEST as MANIFEST
from ...backups._manifest import BackupFile, BackupManifest
from ...errors import BackupError
from ...events._recorder import LAST_POSITION
from ...migrations._sets import MigrationSet
from .._connection import create_private_dirs, open_connection, run_on_file
from .._migration_record import schema_versions
from ..database import SqliteDatabase as Database
from ._contents import check_layout, record_problem

__all__ = ["create_backup", "verify_backup"]

log = logging.getLogger("async_store.backup")

BACKUP_NICE = 10
"""Nice value of the thread that copies, checks and hashes a backup (Linux)."""
BACKUP_CACHE_KIB = 1024
"""Page cache of the connection that makes the copy."""
CHUNK = 1024 * 1024
HASH_CHUNK = 8 * CHUNK
"""Bytes read per step when hashing a copy: the hashing thread takes the GIL once per step."""


# -- creating --------------------------------------------------------------------------------


async def create_backup(
    databases: Sequence[Database], root: Path, *, mode: str, event_database: Database
) -> BackupManifest:
    """Back up every database into a new folder under ``root`` and return its manifest."""
    started = time.perf_counter()
    created = datetime.now(UTC)
    stamp = created.strftime("%Y%m%dT%H%M%S.%fZ")
    try:
        make_private_dir(root)
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise BackupError(f"cannot use {root} for backups: {exc}") from exc
    needed = sum(_database_bytes(db.path) for db in databases)
    if free < needed * 1.1 + 16 * CHUNK:
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
    """``VACUUM INTO`` from a dedicated connection; then the copy is checked, hashed and fsynced
    side by side, each on a thread of its own (the check and the hash at a lower priority than
    the application's threads)."""
    # A small page cache: VACUUM INTO builds the copy through it, and a large one only adds
    # memory to fill (measured: 64 MiB takes half as long again as 1 MiB for 200 MB).
    config = database.config.replace(readers=1, cache_size_kib=BACKUP_CACHE_KIB)
    connection = await open_connection(config, reader=False)
    try:
        try:
            versions, user_version = await connection.run(functools.partial(_vacuum_into, target))
        except Exception as exc:
            raise BackupError(
                f"{database.name}: copying it to {target} with VACUUM INTO failed: {exc}"
            ) from exc
        copy, hashed, synced = await _together(
            run_on_file(target, _inspect_copy, readonly=True),
            run_on_file(target, lambda conn: _hash_file(target), readonly=True),
            connection.run(lambda conn: fsync_path(target)),
        )
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled: stop the copy rather than wait for it
            connection.interrupt()
        raise
    finally:
        # To its end even under an anyio cancel scope, which cancels every await anew: the
        # close waits for whatever still runs on the connection's thread (the copy, the fsync),
        # so nothing uses the copy once this returns and the caller removes it.
        await uncancellable(connection.close())
    if any(isinstance(outcome, BaseException) for outcome in (copy, hashed, synced)):
        failed = [
            (step, outcome)
            for step, outcome in (("checking", copy), ("hashing", hashed), ("fsyncing", synced))
            if isinstance(outcome, BaseException)
        ]
        steps = "; ".join(f"{step} the copy failed: {error}" for step, error in failed)
        raise BackupError(f"{database.name}: {target}: {steps}") from failed[0][1]
    assert not isinstance(copy, BaseException)
    assert not isinstance(hashed, BaseException)
    if copy.problems:
        raise BackupError(f"{database.name}: the copy failed verification: {copy.problems}")
    if copy.versions != versions or copy.user_version != user_version:
        raise BackupError(
            f"{database.name}: the copy's schema ({copy.versions}, user_version "
            f"{copy.user_version}) differs from the source's ({versions}, user_version "
            f"{user_version})"
        )
    sha256, size_bytes = hashed
    entry = BackupFile(target.name, database.name, size_bytes, sha256, user_version, versions)
    return entry, copy.event_position


A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
T = TypeVar("T")


async def _together(
    a: Awaitable[A], b: Awaitable[B], c: Awaitable[C]
) -> tuple[A | BaseException, B | BaseException, C | BaseException]:
    """Run ``a``, ``b`` and ``c`` concurrently and return what each returned or raised, once
    all have ended, even when the caller is cancelled meanwhile (all are cancelled then, and
    the caller's cancellation is re-raised once they have ended). A task cancelled while its
    call runs on a connection's thread ends at once; it is that connection's close, queued
    behind the call, that waits for the call itself."""
    tasks = (asyncio.ensure_future(a), asyncio.ensure_future(b), asyncio.ensure_future(c))
    try:
        # Not gather(): cancelled, it may raise a new CancelledError in place of the caller's,
        # and an anyio cancel scope lets through a cancellation it does not recognise.
        await asyncio.wait(tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await uncancellable(asyncio.wait(tasks))
        raise
    return _outcome(tasks[0]), _outcome(tasks[1]), _outcome(tasks[2])


def _outcome(task: asyncio.Future[T]) -> T | BaseException:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


def _lower_priority() -> None:
    """Below the writers in the scheduler's eyes: a backup may take longer, the application's
    writes should not (Linux sets a thread's own nice value this way; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), BACKUP_NICE))


def _vacuum_into(target: Path, conn: sqlite3.Connection) -> tuple[dict[str, int], int]:
    """Copy the database into ``target``; return the source's schema versions and
    user_version, read just before (VACUUM INTO runs in a read transaction of its own and
    refuses to run inside one; migrations only run at start-up)."""
    _lower_priority()
    versions = schema_versions(conn)
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    # The copy is fsynced once it is complete, while it is checked, instead of by VACUUM INTO
    # on this thread. The setting covers this connection only and is restored: its last use
    # on a WAL database could be a checkpoint.
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.execute("PRAGMA synchronous = OFF")
    try:
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.execute(f"PRAGMA synchronous = {int(synchronous)}")
    os.chmod(target, 0o600)
    return versions, user_version


@dataclass(frozen=True)
class _Inspection:
    problems: str
    versions: dict[str, int]
    user_version: int
    event_position: int | None
    """The newest event position the copy holds; None: it has no event log."""


def _inspect_copy(conn: sqlite3.Connection) -> _Inspection:
    """Check the copy ``conn`` reads, and read what the manifest says of it."""
    _lower_priority()
    problems = _check_copy(conn, fresh=True)
    versions = schema_versions(conn)
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    position = None
    if "events" in versions:
        position = conn.execute(LAST_POSITION).fetchone()[0]
    return _Inspection(problems, versions, user_version, position)


def _hash_file(path: Path) -> tuple[str, int]:
    """The sha256 of the file at ``path`` and its size in bytes. Read in large chunks: the
    thread takes the GIL back once per chunk, and each time the event loop gives it up."""
    _lower_priority()
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    size = 0
    with path.open("rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size


def _check_copy(conn: sqlite3.Connection, *, fresh: bool = False) -> str:
    """What is wrong with the copy ``conn`` reads ("" when nothing). A ``fresh`` copy, just
    written by ``VACUUM INTO``, gets ``quick_check``: every page, cell, NOT NULL and CHECK,
    everything but the match of each index with its table, which VACUUM INTO cannot break (it
    builds every index anew from the table's rows), and which costs most of the time (measured:
    on 180 MB with two indexes, 0.4 s against 3.1 s). A stored copy, which may have rotted on
    disk, gets the full ``integrity_check``."""
    pragma = "quick_check" if fresh else "integrity_check"
    integrity = [row[0] for row in conn.execute(f"PRAGMA {pragma}").fetchall()]
    if integrity != ["ok"]:
        return f"{pragma}: " + "; ".join(integrity[:5])
    violations = conn.execute("PRAGMA foreign_key_check").fetchall()
    if violations:
        return f"foreign_key_check: {len(violations)} violation(s), first in {violations[0][0]}"
    return ""


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
    fsync_path(partial)
    os.rename(partial, final)
    fsync_path(final.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path) -> None:
    create_private_dirs(path)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)


def _database_bytes(path: Path) -> int:
    total = 0
    for candidate in (path, Path(f"{path}-wal")):
        with contextlib.suppress(OSError):
            total += candidate.stat().st_size
    return total


# -- verifying -------------------------------------------------------------------------------


async def verify_backup(
    directory: Path, *, migration_sets: Sequence[MigrationSet] | None = None
) -> BackupManifest:
    """Check a backup against its manifest and this code: every file present, of the recorded
    size and sha256, passing ``integrity_check`` and ``foreign_key_check``, at the recorded
    schema versions and ``user_version``; the databases those of the manifest's mode, each
    holding this library's migration record (the built-in sets with the checksums this code
    ships, none newer than this code). ``migration_sets``: the application's own sets; given,
    a set of the backup outside them and the built-in ones is refused (``None``: sets that are
    not built in are only checked for gaps). Raises :class:`BackupError` naming the file and
    what is wrong."""
    directory = Path(directory)
    if directory.name.endswith(".partial"):
        raise BackupError(f"{directory}: an unfinished backup (.partial) cannot be used")
    manifest = BackupManifest.read(directory)
    check_layout(directory / MANIFEST, manifest.mode, [item.database for item in manifest.files])
    for item in manifest.files:
        path = directory / item.name
        if path.is_symlink():
            raise BackupError(f"{path}: a symbolic link; a backup holds its own files")
        if not path.is_file():
            raise BackupError(f"{directory}: {item.name} is missing")
        if path.stat().st_size != item.size_bytes:
            raise BackupError(
                f"{path}: {path.stat().st_size} bytes, the manifest says {item.size_bytes}"
            )
        check = functools.partial(
            _verify_file, path=path, item=item, mode=manifest.mode, migration_sets=migration_sets
        )
        problem = await run_on_file(path, check, readonly=True)
        if problem:
            raise BackupError(f"{path}: {problem}")
    return manifest


def _verify_file(
    conn: sqlite3.Connection,
    *,
    path: Path,
    item: BackupFile,
    mode: str,
    migration_sets: Sequence[MigrationSet] | None,
) -> str:
    if _hash_file(path)[0] != item.sha256:
        return "sha256 does not match the manifest (the file changed since the backup)"
    try:
        problems = _check_copy(conn) or record_problem(
            conn, mode=mode, database=item.database, migration_sets=migration_sets
        )
        if problems:
            return problems
        versions = schema_versions(conn)
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return f"not a readable SQLite database: {exc}"
    if versions != item.schema_versions:
        return f"schema versions {versions} differ from the manifest's {item.schema_versions}"
    if user_version != item.user_version:
        return f"user_version {user_version} differs from the manifest's {item.user_version}"
    return ""
