"""Backups: how fast ``sql.backup()`` copies a large database, and what it costs the writers.

The template is an app_meta.db migrated by the service, with a ``bench_filler`` table of random
1,000-byte blobs bringing it to 200 MB (20 MB with ``--quick``) and an empty ``bench_writes``
table. Each run opens the service in production mode on a copy of it (events.db created fresh,
small) and leaves the copy warm in the page cache.

``backup`` times one ``await sql.backup()`` (``VACUUM INTO`` per database from a dedicated
connection, then ``integrity_check`` and ``foreign_key_check`` of each copy, sha256 and fsync,
the manifest, the rename) after a ``PRAGMA wal_checkpoint(TRUNCATE)`` so the files are complete,
against the floor of any backup made that way: a bare ``VACUUM INTO`` of each file followed by
the sha256 of the copy, one after the other, on a thread of its own as the backup's (no checks,
no fsync, no manifest). Both are reported in MB/s of the source files' size. References: ``cp``
of the two files in a subprocess, ``cp`` followed by ``sync`` of the copies, the bare ``VACUUM
INTO`` and the sha256 of both files alone, each on the loop's thread. Every contender times the
median of three runs after an untimed one, each from the same state (see :func:`_settle`); a
``cp`` slower than ``cp`` + ``sync`` or than ``VACUUM INTO`` is flagged under the table.

``backup-writes`` runs 20 tasks doing one-row ``sql.app.execute`` inserts, each its own
transaction, for as long as a backup takes; the baseline runs the same writers for the same
duration without a backup (the duration of the backup measured in the same round).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import shutil
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import (
    Contender,
    ErrorLog,
    Latency,
    Measurement,
    Outcome,
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

FLOOR = "floor: VACUUM INTO + sha256"
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
    from async_store import SqliteDatabase

    for database in sql.databases:
        assert isinstance(database, SqliteDatabase)
        await database.run_on_writer(
            lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        )


def _settle(directory: Path | None = None) -> None:
    """Before timing: no garbage to collect; no dirty pages of earlier work (an earlier
    scenario's files, this run's copy of the template) still being written back, and no blocks
    of deleted files (the run before's output) still to be freed and discarded at the next
    journal commit, either of which slows whatever writes next (``sync`` commits the journal);
    and the source files read once, so that every contender starts with them in the page cache
    (in a full run they were at times not, and ``cp`` read them from the disk at 400-700
    MB/s)."""
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

REPEATS = 3
"""Timed repetitions per contender run, after one untimed: the median is reported."""


async def _median_of_repeats(
    name: str,
    directory: Path,
    scratch: Path,
    operation: Callable[[Path], Awaitable[object]],
    notes: list[str],
) -> float:
    """Seconds of ``operation(output folder)``: the median of `REPEATS` timed runs after an
    untimed one. Every run starts from the same state (:func:`_settle`): its output of the run
    before deleted, nothing left to write back or to discard, the sources in the page cache."""
    times: list[float] = []
    for repeat in range(1 + REPEATS):
        output = scratch / f"output-{repeat}"
        output.mkdir()
        _settle(directory)
        started = time.perf_counter()
        await operation(output)
        times.append(time.perf_counter() - started)
        shutil.rmtree(output)
    shown = ", ".join(f"{t * 1000:,.0f}" for t in times[1:])
    notes.append(f"{name}: {shown} ms (untimed first: {times[0] * 1000:,.0f} ms)")
    return statistics.median(times[1:])


def _contender(
    name: str,
    notes: list[str],
    operation: Callable[[SqlService, Path, Path], Awaitable[object]],
) -> Contender:
    """``operation(service, its directory, output folder)`` timed on the run's copy of the
    template, the service open and its WAL checkpointed, as :func:`_median_of_repeats` says."""

    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService

        directory = _store_directory(path)
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            await _checkpoint(sql)
            size = _source_bytes(directory)
            seconds = await _median_of_repeats(
                name,
                directory,
                path.parent,
                lambda output: operation(sql, directory, output),
                notes,
            )
        return Throughput(ops=size / 1e6, seconds=seconds)

    return Contender(name, run, ("async_store",))


async def _cp(sql: SqlService, directory: Path, output: Path, *, sync: bool = False) -> None:
    sources = [str(directory / name) for name in FILES]
    await _run("cp", *sources, str(output))
    if sync:
        await _run("sync", *(str(output / name) for name in FILES))
    copied = _source_bytes(output)
    if copied != _source_bytes(directory):
        raise OSError(f"cp copied {copied:,} bytes of {_source_bytes(directory):,}")


async def _cp_sync(sql: SqlService, directory: Path, output: Path) -> None:
    await _cp(sql, directory, output, sync=True)


def _on_loop(step: Callable[[Path, Path], object]) -> Callable[..., Awaitable[None]]:
    """One step of a backup alone, ``step(source file, output folder)`` for each file, on the
    loop's thread (nothing else runs meanwhile): what a backup that must take it cannot beat."""

    async def operation(sql: SqlService, directory: Path, output: Path) -> None:
        for name in FILES:
            step(directory / name, output)

    return operation


def _vacuum_into(source: Path, output: Path) -> Path:
    """The copy a backup starts with, as the backup makes it (its page cache, no fsync), not
    checked, hashed or fsynced."""
    from async_store.sqlite.backup._copy import BACKUP_CACHE_KIB

    target = output / source.name
    conn = sqlite3.connect(source, isolation_level=None)
    try:
        conn.execute(f"PRAGMA cache_size = -{BACKUP_CACHE_KIB}")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.close()
    return target


def _sha256(source: Path, output: Path) -> str:
    """The hash a backup's manifest holds for a file, read as the backup reads it."""
    from async_store.sqlite.backup._copy import HASH_CHUNK

    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with source.open("rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def _floor_thread() -> None:
    """The backup's threads run at a lower priority (Linux: a thread's own nice value); the
    floor's thread too, so that work beside the benchmark slows both alike."""
    from async_store.sqlite.backup._copy import BACKUP_NICE

    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), BACKUP_NICE))


async def _floor(sql: SqlService, directory: Path, output: Path) -> None:
    """A bare ``VACUUM INTO`` of each file followed by the sha256 of the copy, one after the
    other, on a thread of its own (the loop stays free, as during a backup): what any backup
    with a manifest of its copies' hashes must do, without checks, fsync or manifest."""

    def copy_and_hash() -> None:
        _floor_thread()
        for name in FILES:
            _sha256(_vacuum_into(directory / name, output), output)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-floor") as pool:
        await asyncio.get_running_loop().run_in_executor(pool, copy_and_hash)


async def _store(sql: SqlService, directory: Path, output: Path) -> None:
    manifest = await sql.backup(output)
    if sorted(f.name for f in manifest.files) != sorted(FILES):
        raise LookupError(f"the backup holds {[f.name for f in manifest.files]}")
    for item in manifest.files:
        if (manifest.directory / item.name).stat().st_size != item.size_bytes:
            raise OSError(f"{item.name}: size differs from the manifest")


def _check_references(outcomes: Sequence[Outcome]) -> list[str]:
    """``cp`` reads and writes the bytes and nothing else: slower than ``cp`` + ``sync`` or
    than a bare ``VACUUM INTO`` (which rebuilds every page), it measured the machine's state,
    not the copy, and the ratios against it are not to be believed."""
    speeds = {
        o.contender: o.measurement.ops_per_s
        for o in outcomes
        if isinstance(o.measurement, Throughput)
    }
    cp = speeds.get(CP)
    if cp is None:
        return []
    return [
        f"{CP} ({cp:,.0f} MB/s) ran slower than {other} ({speeds[other]:,.0f} MB/s), which does"
        " more: the cp reference of this run is not to be trusted"
        for other in (CP_SYNC, VACUUM)
        if other in speeds and cp < speeds[other]
    ]


def backup(profile: Profile) -> Scenario:
    """One verified backup of a large database against the floor of any backup made with
    ``VACUUM INTO`` and a manifest of hashes, with cp and the floor's steps as references."""
    size_mb = SIZE_QUICK_MB if profile.quick else SIZE_FULL_MB
    notes: list[str] = []
    return Scenario(
        name="backup",
        summary=f"one backup of a ~{size_mb} MB app_meta.db (+ a small events.db), MB/s",
        kind="throughput",
        unit="MB",
        baseline=FLOOR,
        contenders=[
            _contender(FLOOR, notes, _floor),
            _contender(CP, notes, _cp),
            _contender(CP_SYNC, notes, _cp_sync),
            _contender(VACUUM, notes, _on_loop(_vacuum_into)),
            _contender(SHA256, notes, _on_loop(_sha256)),
            _contender(STORE, notes, _store),
        ],
        prepare=lambda template: _prepare(size_mb, notes, template),
        target=Target(STORE, 0.8),
        notes=(
            "MB = size of the source files (after a TRUNCATE checkpoint), over the median time "
            f"of {REPEATS} runs after an untimed one, each on the open service, the sources in "
            "the page cache, nothing left to write back or discard. backup() = VACUUM INTO + "
            "integrity_check + foreign_key_check + sha256 + fsync of each copy + the manifest; "
            "the floor = VACUUM INTO then sha256 of the copy, on a thread; cp neither verifies "
            "nor fsyncs. Per-run times below (ms)."
        ),
        run_notes=notes,
        check=_check_references,
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
