"""Start-up: how long ``async with SqlService(...)`` takes before the first query can run.

Each timed start runs from constructing the config and the service to the body of the ``async
with`` (closing is not timed), in production mode: two databases, each with one writer and
``readers`` reader connections, every PRAGMA set and read back, then the migrations checked
(and on fresh files created and applied). The baseline is the floor under that work: raw sqlite3
opening the same connections one after another on the loop thread, setting the same PRAGMAs and
reading each back. A second raw row opens one connection per database, for reference.

Every contender starts 20 times in a run (5 with ``--quick``), after 2 warm-up starts; the table
shows the median and p95 in milliseconds, lower is better.
"""

from __future__ import annotations

import gc
import itertools
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.harness import (
    Contender,
    ErrorLog,
    Latency,
    Measurement,
    Profile,
    Scenario,
    Target,
)

__all__ = ["startup"]

FULL_STARTS = 20
QUICK_STARTS = 5
WARM_UP_STARTS = 2

STORE_FRESH = "async_store, fresh files"
STORE_MIGRATED = "async_store, migrated files"
RAW_ALL = "raw sqlite3, 10 conns + PRAGMAs"
RAW_TWO = "raw sqlite3, 2 conns + PRAGMAs (ref.)"


@dataclass(frozen=True)
class RawDatabase:
    """One database as the service opens it with its default configuration."""

    file: str
    synchronous: Literal["NORMAL", "FULL"]


DATABASES = (RawDatabase("app_meta.db", "NORMAL"), RawDatabase("events.db", "FULL"))
_SYNCHRONOUS_CODES = {"NORMAL": 1, "FULL": 2}
READERS = 4
"""``DatabaseConfig.readers`` default: with the writer, 5 connections per database."""

# The service's PRAGMAs with DatabaseConfig's defaults, in the order it sets them
# (async_store/sqlite/_connection.py). trusted_schema is among them: OFF from SQLite 3.41, ON
# before, where OFF would forbid the json_valid() CHECKs of the schema.
_TRUSTED_SCHEMA = 0 if sqlite3.sqlite_version_info >= (3, 41, 0) else 1


def _pragmas(database: RawDatabase, *, reader: bool) -> dict[str, int | str]:
    return {
        "busy_timeout": 5000,
        "journal_mode": "wal",
        "synchronous": _SYNCHRONOUS_CODES[database.synchronous],
        "foreign_keys": 1,
        "cache_size": -65536,
        "temp_store": 2,
        "mmap_size": 0,
        "wal_autocheckpoint": 1000,
        "journal_size_limit": 64 * 1024 * 1024,
        "trusted_schema": _TRUSTED_SCHEMA,
        "query_only": 1 if reader else 0,
    }


def _open_raw(path: Path, database: RawDatabase, *, reader: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    try:
        wanted = _pragmas(database, reader=reader)
        for name, value in wanted.items():
            conn.execute(f"PRAGMA {name} = {value}").fetchall()
        for name, value in wanted.items():
            actual = conn.execute(f"PRAGMA {name}").fetchone()[0]
            if (actual.lower() if isinstance(actual, str) else actual) != value:
                raise RuntimeError(f"{path}: PRAGMA {name} reads back {actual!r}, not {value!r}")
    except BaseException:
        conn.close()
        raise
    return conn


async def _migrated_directory(directory: Path) -> None:
    """Create and migrate both databases with the service, and check that the raw contenders
    open what it opens: its readers and PRAGMA values must be the defaults written here."""
    from async_store import SqlConfig, SqlService

    config = SqlConfig.in_directory(directory)
    async with SqlService(config):
        pass
    for raw, db in zip(DATABASES, config.databases, strict=True):
        found = (
            db.path.name,
            db.synchronous,
            db.readers,
            db.busy_timeout,
            db.cache_size_kib,
            db.mmap_size,
            db.wal_autocheckpoint,
            db.journal_size_limit,
        )
        expected = (raw.file, raw.synchronous, READERS, 5.0, 65536, 0, 1000, 64 * 1024 * 1024)
        if found != expected:
            raise RuntimeError(f"the service's defaults changed, update {__name__}: {found}")


Start = Callable[[], Awaitable[int]]
"""One start, closed again afterwards; returns the time of the start alone, in nanoseconds."""


async def _timed_starts(starts: int, start: Start, errors: ErrorLog) -> list[int]:
    samples: list[int] = []
    for _ in range(starts):
        try:
            samples.append(await start())
        except Exception as exc:
            errors.record(exc)
    return samples


def _contender(
    name: str,
    starts: int,
    set_up: Callable[[Path], Awaitable[Start]],
) -> Contender:
    """`set_up` prepares the run's directory and returns one timed start."""

    async def run(path: Path) -> Measurement:
        start = await set_up(path.parent)
        errors = ErrorLog()
        await _timed_starts(WARM_UP_STARTS, start, errors)
        gc.collect()
        samples = await _timed_starts(starts, start, errors)
        return Latency(samples_ns=samples, errors=errors.kinds())

    return Contender(name, run, ("async_store",))


async def _store_fresh(root: Path) -> Start:
    from async_store import SqlConfig, SqlService

    numbers = itertools.count()

    async def start() -> int:
        directory = root / f"fresh-{next(numbers)}"
        started = time.perf_counter_ns()
        async with SqlService(SqlConfig.in_directory(directory)):
            return time.perf_counter_ns() - started

    return start


async def _store_migrated(root: Path) -> Start:
    from async_store import SqlConfig, SqlService

    directory = root / "migrated"
    await _migrated_directory(directory)

    async def start() -> int:
        started = time.perf_counter_ns()
        async with SqlService(SqlConfig.in_directory(directory)):
            return time.perf_counter_ns() - started

    return start


def _raw(readers: int) -> Callable[[Path], Awaitable[Start]]:
    async def set_up(root: Path) -> Start:
        directory = root / "migrated"
        await _migrated_directory(directory)
        plan = [
            (directory / database.file, database, reader)
            for database in DATABASES
            for reader in [False] + [True] * readers
        ]

        async def start() -> int:
            opened: list[sqlite3.Connection] = []
            try:
                started = time.perf_counter_ns()
                for path, database, reader in plan:
                    opened.append(_open_raw(path, database, reader=reader))
                return time.perf_counter_ns() - started
            finally:
                for conn in opened:
                    conn.close()

        return start

    return set_up


def startup(profile: Profile) -> Scenario:
    """Start-up time of the service, fresh and already migrated, against raw opens."""
    starts = QUICK_STARTS if profile.quick else FULL_STARTS
    connections = len(DATABASES) * (1 + READERS)
    return Scenario(
        name="startup",
        summary=(
            f"{starts} starts of SqlService in production mode ({connections} connections),"
            " constructed to entered"
        ),
        kind="latency",
        unit="ms",
        baseline=RAW_ALL,
        contenders=[
            _contender(STORE_FRESH, starts, _store_fresh),
            _contender(STORE_MIGRATED, starts, _store_migrated),
            _contender(RAW_ALL, starts, _raw(READERS)),
            _contender(RAW_TWO, starts, _raw(0)),
        ],
        prepare=lambda template: template.touch(),
        target=Target(STORE_MIGRATED, 2.0),
        notes=(
            "fresh files: both databases created and every migration applied; raw sqlite3: the "
            f"same {connections} connections opened in turn on the loop thread, each PRAGMA set "
            "and read back; the 2-connection row (one writer per database) has no target."
        ),
    )
