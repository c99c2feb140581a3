"""Backups: how fast ``sql.backup()`` copies a large database, and what it costs the writers.

The template is an app_meta.db migrated by the service, with a ``bench_filler`` table of random
1,000-byte blobs bringing it to 200 MB (20 MB with ``--quick``) and an empty ``bench_writes``
table. Each run opens the service in production mode on a copy of it (events.db created fresh,
small) and leaves the copy warm in the page cache.

``backup`` times one ``await sql.backup()`` (``VACUUM INTO`` per database from a dedicated
connection, then ``integrity_check`` and ``foreign_key_check`` of each copy, sha256 and fsync,
the manifest, the rename) against ``cp`` of the same two files in a subprocess, after a
``PRAGMA wal_checkpoint(TRUNCATE)`` so the files are complete. Both are reported in MB/s of the
source files' size. A ``cp`` followed by ``sync`` of the copies is shown for reference: the
backup fsyncs its copies, ``cp`` does not; so is a bare ``VACUUM INTO`` of both files (no checks,
no hash, no fsync), the floor of any backup made with it; and so is the sha256 of both files
alone, which a backup's manifest needs: a backup cannot beat it either, whatever copies the
files.

``backup-writes`` runs 20 tasks doing one-row ``sql.app.execute`` inserts, each its own
transaction, for as long as a backup takes; the baseline runs the same writers for the same
duration without a backup (the duration of the backup measured in the same round).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import (
    Contender,
    ErrorLog,
    Latency,
    Measurement,
    Profile,
    Scenario,
    Target,
    Throughput,
)

if TYPE_CHECKING:
    from async_store import SqlService

__all__ = ["backup", "backup_writes"]

SIZE_FULL_MB = 200
SIZE_QUICK_MB = 20
BLOB_BYTES = 1_000
ROW_BYTES = 1_030
"""A filler row's share of the file: its blob and the row and page overhead (measured)."""
FILES = ("app_meta.db", "events.db")

CP = "cp (subprocess)"
CP_SYNC = "cp + sync (ref.)"
VACUUM = "VACUUM INTO alone (ref.)"
SHA256 = "sha256 alone (ref.)"
STORE = "async_store sql.backup()"

WRITERS = 20
WRITES_ALONE = "20 writers, no backup"
WRITES_DURING = "20 writers during sql.backup()"
INSERT_WRITE = "INSERT INTO bench_writes(task, n, payload) VALUES (?, ?, ?)"
PAYLOAD = "x" * 100


def _prepare(size_mb: int, notes: list[str], template: Path) -> None:
    """A migrated app_meta.db of about `size_mb` MB: `bench_filler` of random blobs."""
    from async_store import SqlConfig, SqlService

    directory = template.parent / "migrate"

    async def migrate() -> None:
        async with SqlService(SqlConfig.in_directory(directory)):
            pass

    asyncio.run(migrate())
    started = time.perf_counter()
    conn = sqlite3.connect(directory / "app_meta.db", isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE bench_filler (id INTEGER PRIMARY KEY, data BLOB NOT NULL)"
        ).fetchall()
        conn.execute(
            "CREATE TABLE bench_writes (id INTEGER PRIMARY KEY, task INTEGER NOT NULL,"
            " n INTEGER NOT NULL, payload TEXT NOT NULL)"
        ).fetchall()
        rows = size_mb * 1_000_000 // ROW_BYTES
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?)"
            " INSERT INTO bench_filler(data) SELECT randomblob(?) FROM c",
            (rows, BLOB_BYTES),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    shutil.move(directory / "app_meta.db", template)
    shutil.rmtree(directory)
    for suffix in ("-wal", "-shm"):
        Path(f"{template}{suffix}").unlink(missing_ok=True)
    notes.append(
        f"app_meta.db: {template.stat().st_size / 1e6:,.1f} MB ({rows:,} blobs of"
        f" {BLOB_BYTES:,} bytes), built in {time.perf_counter() - started:.1f} s"
    )


def _store_directory(path: Path) -> Path:
    """The run's copy of the template as the app_meta.db of a production-mode directory."""
    directory = path.parent / "store"
    directory.mkdir()
    shutil.move(path, directory / "app_meta.db")
    return directory


def _source_bytes(directory: Path) -> int:
    return sum((directory / name).stat().st_size for name in FILES)


async def _checkpoint(sql: SqlService) -> None:
    for database in sql.databases:
        await database.run_on_writer(
            lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        )


def _settle(directory: Path | None = None) -> None:
    """Before timing: no garbage to collect; no dirty pages of earlier work (an earlier
    scenario's files, this run's copy of the template) still being written back, which slows
    whatever writes next; and the source files read once, so that every contender starts with
    them in the page cache (in a full run they were at times not, and ``cp`` read them from
    the disk at 400-700 MB/s)."""
    gc.collect()
    os.sync()
    if directory is not None:
        for name in FILES:
            with (directory / name).open("rb", buffering=0) as handle:
                while handle.read(8 << 20):
                    pass


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(*argv)
    code = await process.wait()
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with code {code}")


# -- backup --------------------------------------------------------------------------------------


def _cp_contender(name: str, *, sync: bool) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService

        directory = _store_directory(path)
        target = path.parent / "copy"
        target.mkdir()
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            await _checkpoint(sql)
            size = _source_bytes(directory)
            sources = [str(directory / name) for name in FILES]
            _settle(directory)
            started = time.perf_counter()
            await _run("cp", *sources, str(target))
            if sync:
                await _run("sync", *(str(target / name) for name in FILES))
            seconds = time.perf_counter() - started
        errors = ErrorLog()
        copied = _source_bytes(target)
        if copied != size:
            errors.record(OSError(f"copied {copied:,} bytes of {size:,}"))
        return Throughput(ops=size / 1e6, seconds=seconds, errors=errors.kinds())

    return Contender(name, run, ("async_store",))


def _step_contender(name: str, step: Callable[[Path, Path], object]) -> Contender:
    """One step of a backup alone, ``step(source file, scratch folder)`` for each file, on the
    loop's thread (nothing else runs meanwhile): what a backup that must take it cannot beat."""

    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService

        directory = _store_directory(path)
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            await _checkpoint(sql)
            size = _source_bytes(directory)
            _settle(directory)
            started = time.perf_counter()
            for name in FILES:
                step(directory / name, path.parent)
            seconds = time.perf_counter() - started
        return Throughput(ops=size / 1e6, seconds=seconds)

    return Contender(name, run, ("async_store",))


def _vacuum_into(source: Path, scratch: Path) -> None:
    """The copy a backup starts with, not checked, hashed or fsynced."""
    conn = sqlite3.connect(source, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("VACUUM INTO ?", (str(scratch / f"vacuumed-{source.name}"),))
    finally:
        conn.close()


def _sha256(source: Path, scratch: Path) -> str:
    """The hash a backup's manifest holds for the file."""
    with source.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _backup_contender() -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService

        directory = _store_directory(path)
        errors = ErrorLog()
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            await _checkpoint(sql)
            size = _source_bytes(directory)
            _settle(directory)
            started = time.perf_counter()
            manifest = await sql.backup(path.parent / "backups")
            seconds = time.perf_counter() - started
        if sorted(f.name for f in manifest.files) != sorted(FILES):
            errors.record(LookupError(f"the backup holds {[f.name for f in manifest.files]}"))
        for item in manifest.files:
            if (manifest.directory / item.name).stat().st_size != item.size_bytes:
                errors.record(OSError(f"{item.name}: size differs from the manifest"))
        return Throughput(ops=size / 1e6, seconds=seconds, errors=errors.kinds())

    return Contender(STORE, run, ("async_store",))


def backup(profile: Profile) -> Scenario:
    """One verified backup of a large database against copying its files with cp."""
    size_mb = SIZE_QUICK_MB if profile.quick else SIZE_FULL_MB
    notes: list[str] = []
    return Scenario(
        name="backup",
        summary=f"one backup of a ~{size_mb} MB app_meta.db (+ a small events.db), MB/s",
        kind="throughput",
        unit="MB",
        baseline=CP,
        contenders=[
            _cp_contender(CP, sync=False),
            _cp_contender(CP_SYNC, sync=True),
            _step_contender(VACUUM, _vacuum_into),
            _step_contender(SHA256, _sha256),
            _backup_contender(),
        ],
        prepare=lambda template: _prepare(size_mb, notes, template),
        target=Target(STORE, 0.5),
        notes=(
            "MB = size of the source files (after a TRUNCATE checkpoint), over the time of one "
            "backup() or one cp of both files; the service open, the files warm in the page "
            "cache, nothing left to write back (sync), no warm-up run. backup() = VACUUM INTO "
            "+ integrity_check + foreign_key_check + sha256 + fsync of each copy; cp neither "
            "verifies nor fsyncs."
        ),
        run_notes=notes,
    )


# -- backup-writes -------------------------------------------------------------------------------


@dataclass
class _Duration:
    """The duration of the newest backup a contender timed, for the baseline's window."""

    notes: list[str]
    seconds: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.notes.append(f"backup {len(self.seconds)} took {seconds:.2f} s")


async def _writers(sql: SqlService, until: Callable[[], Awaitable[object]]) -> Throughput:
    """`WRITERS` tasks inserting one row per ``execute`` until `until` returns; counted over the
    time from their start to then."""
    errors = ErrorLog()
    samples: list[int] = []
    stop = asyncio.Event()
    db = sql.app

    async def writer(task: int) -> int:
        done = 0
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter_ns()
            try:
                await db.execute(INSERT_WRITE, (task, n, PAYLOAD))
            except Exception as exc:
                errors.record(exc)
            else:
                samples.append(time.perf_counter_ns() - started)
                done += 1
        return done

    # Warm-up: a few inserts per writer.
    async with asyncio.TaskGroup() as group:
        for task in range(WRITERS):
            for n in range(5):
                group.create_task(db.execute(INSERT_WRITE, (task, -n, PAYLOAD)))
    _settle(sql.app.path.parent)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        handles = [group.create_task(writer(task)) for task in range(WRITERS)]
        try:
            await until()
        finally:
            seconds = time.perf_counter() - started
            stop.set()
    done = sum(handle.result() for handle in handles)
    return Throughput(
        ops=done, seconds=seconds, errors=errors.kinds(), latency=Latency(samples_ns=samples)
    )


def _writes_during(duration: _Duration) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService

        directory = _store_directory(path)
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            await _checkpoint(sql)

            async def take_backup() -> object:
                started = time.perf_counter()
                manifest = await sql.backup(path.parent / "backups")
                duration.add(time.perf_counter() - started)
                return manifest

            return await _writers(sql, take_backup)

    return Contender(WRITES_DURING, run, ("async_store",))


def _writes_alone(duration: _Duration) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService

        directory = _store_directory(path)
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            await _checkpoint(sql)
            if not duration.seconds:  # the other contender failed: time a backup here
                started = time.perf_counter()
                await sql.backup(path.parent / "backups")
                duration.add(time.perf_counter() - started)
                await _checkpoint(sql)
            window = duration.seconds[-1]
            return await _writers(sql, lambda: asyncio.sleep(window))

    return Contender(WRITES_ALONE, run, ("async_store",))


def backup_writes(profile: Profile) -> Scenario:
    """Writer throughput while a backup runs, against the same writers without one."""
    size_mb = SIZE_QUICK_MB if profile.quick else SIZE_FULL_MB
    notes: list[str] = []
    duration = _Duration(notes)
    return Scenario(
        name="backup-writes",
        summary=(
            f"{WRITERS} tasks of one-row sql.app.execute inserts for the duration of a backup of"
            f" a ~{size_mb} MB app_meta.db"
        ),
        kind="throughput",
        unit="inserts",
        baseline=WRITES_ALONE,
        contenders=[_writes_during(duration), _writes_alone(duration)],
        prepare=lambda template: _prepare(size_mb, notes, template),
        target=Target(WRITES_DURING, 0.7),
        notes=(
            "p50/p95/p99 ms: each insert (its own transaction on the writer, app_meta at "
            "synchronous=NORMAL). The baseline runs for as long as the backup of the same round "
            "took, with no backup."
        ),
        run_notes=notes,
    )
