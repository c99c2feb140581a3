"""The event store: durable one-event appends from many tasks, and reading the whole log.

``append-full`` is where group commit pays off: 100 tasks append one event per call to the
events database at ``synchronous=FULL``, so a store that commits each append alone pays one
fsync per event. The baseline is what an application would write with aiosqlite: one connection,
an ``asyncio.Lock``, one INSERT and one COMMIT per event into an equivalent table. Each append
call is timed on its own (lock or queue wait included), so the table also shows its latency.

``read-all`` iterates a 100k-event log from the start. The store pages through it with
``fetch_all`` on a reader and builds a ``RecordedEvent`` per row; the baselines run the same
query and decode ``data`` and ``metadata`` with ``json.loads`` per row, as the store does.

async_store runs in production mode (``SqlConfig.in_directory``: app_meta.db and events.db), on
its own files in the run's directory; the baselines use the scenario's database file.
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from benchmarks.clients.base import BUSY_TIMEOUT_MS
from benchmarks.harness import (
    Contender,
    ErrorLog,
    Latency,
    LatencyLimit,
    Measurement,
    Profile,
    Scenario,
    Target,
    Throughput,
)

if TYPE_CHECKING:
    from async_store import NewEvent, SqlConfig

__all__ = ["append_full", "create_events_table", "read_all"]

STORE = "async_store"
AIOSQLITE = "aiosqlite (1 conn + lock)"
AIOSQLITE_FETCHALL = "aiosqlite execute_fetchall"
RAW = "raw sqlite3"

EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL UNIQUE,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT,
    recorded_at TEXT    NOT NULL,
    UNIQUE (stream_id, version)
)"""
"""The baselines' events table: the store's columns and constraints, without its content hash,
CHECKs and append-only triggers."""

INSERT_EVENT = (
    "INSERT INTO events(event_id, stream_id, version, type, data, metadata, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SELECT_ALL = (
    "SELECT position, stream_id, version, type, data, metadata, event_id, recorded_at"
    " FROM events ORDER BY position"
)
EVENT_TYPE = "ItemAdded"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _store_config(directory: Path) -> SqlConfig:
    """``SqlConfig.in_directory(directory)``: production mode, events.db at FULL."""
    from async_store import SqlConfig

    return SqlConfig.in_directory(directory)


# -- append-full ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendSizes:
    tasks: int
    calls_per_task: int


APPEND_FULL = AppendSizes(tasks=100, calls_per_task=50)
APPEND_QUICK = AppendSizes(tasks=20, calls_per_task=20)

AppendOne = Callable[[str, int, int], Awaitable[None]]
"""Append one event to a stream: (stream_id, its version, n for the payload ``{"n": n}``)."""


async def _appends(
    append: AppendOne, sizes: AppendSizes, *, calls: int, prefix: str, concurrent: bool
) -> Throughput:
    """`sizes.tasks` appenders on streams ``{prefix}-{task}``, `calls` one-event appends each,
    each call timed on its own; concurrent tasks, or one after another (raw sqlite3)."""
    errors = ErrorLog()
    samples: list[int] = []

    async def appender(task: int) -> int:
        stream = f"{prefix}-{task}"
        done = 0
        for n in range(calls):
            started = time.perf_counter_ns()
            try:
                await append(stream, n + 1, n)
            except Exception as exc:
                errors.record(exc)
            else:
                samples.append(time.perf_counter_ns() - started)
                done += 1
        return done

    started = time.perf_counter()
    if concurrent:
        async with asyncio.TaskGroup() as group:
            handles = [group.create_task(appender(task)) for task in range(sizes.tasks)]
        done = sum(handle.result() for handle in handles)
    else:
        done = sum([await appender(task) for task in range(sizes.tasks)])
    seconds = time.perf_counter() - started
    return Throughput(
        ops=done, seconds=seconds, errors=errors.kinds(), latency=Latency(samples_ns=samples)
    )


def _check_stored(measurement: Throughput, stored: int) -> Throughput:
    """Count a difference between acknowledged and stored appends as an error."""
    if stored == measurement.ops:
        return measurement
    errors = dict(measurement.errors)
    message = f"{measurement.ops:,} appends acknowledged but {stored:,} events stored"
    errors[message] = errors.get(message, 0) + 1
    return Throughput(
        ops=min(stored, measurement.ops),
        seconds=measurement.seconds,
        errors=errors,
        latency=measurement.latency,
    )


_COUNT_TIMED = "SELECT count(*) FROM events WHERE stream_id LIKE 'stream-%'"


async def _warm_up_and_time(append: AppendOne, sizes: AppendSizes, concurrent: bool) -> Throughput:
    """One append per task on streams of their own, then the timed appends."""
    await _appends(append, sizes, calls=1, prefix="warm", concurrent=concurrent)
    gc.collect()
    return await _appends(
        append, sizes, calls=sizes.calls_per_task, prefix="stream", concurrent=concurrent
    )


def _store_appends(sizes: AppendSizes) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import NewEvent, SqlService

        async with SqlService(_store_config(path.parent / "store")) as sql:
            store = sql.event_store

            async def append(stream: str, version: int, n: int) -> None:
                await store.append(stream, [NewEvent(EVENT_TYPE, {"n": n})])

            measured = await _warm_up_and_time(append, sizes, concurrent=True)
            stored = await sql.events.fetch_val(_COUNT_TIMED)
        return _check_stored(measured, int(stored))

    return Contender(STORE, run, ("async_store",))


def _aiosqlite_appends(sizes: AppendSizes) -> Contender:
    async def run(path: Path) -> Measurement:
        async with aiosqlite.connect(path) as conn:
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            lock = asyncio.Lock()

            async def append(stream: str, version: int, n: int) -> None:
                # Encoded before the lock, as the store encodes before queueing.
                row = (str(uuid.uuid4()), stream, version, EVENT_TYPE, json.dumps({"n": n}))
                async with lock:
                    try:
                        await conn.execute(INSERT_EVENT, (*row, None, _now()))
                        await conn.commit()
                    except BaseException:
                        await conn.rollback()
                        raise

            measured = await _warm_up_and_time(append, sizes, concurrent=True)
            ((stored,),) = await conn.execute_fetchall(_COUNT_TIMED)
        return _check_stored(measured, int(stored))

    return Contender(AIOSQLITE, run, ("aiosqlite",))


def _raw_appends(sizes: AppendSizes) -> Contender:
    async def run(path: Path) -> Measurement:
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

            async def append(stream: str, version: int, n: int) -> None:
                row = (str(uuid.uuid4()), stream, version, EVENT_TYPE, json.dumps({"n": n}))
                with conn:  # commits, or rolls back on error
                    conn.execute(INSERT_EVENT, (*row, None, _now()))

            measured = await _warm_up_and_time(append, sizes, concurrent=False)
            stored = conn.execute(_COUNT_TIMED).fetchone()[0]
        finally:
            conn.close()
        return _check_stored(measured, int(stored))

    return Contender(RAW, run, ("sqlite3",))


def create_events_table(path: Path) -> None:
    """A WAL database holding the baselines' events table."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{path}: journal_mode is {mode!r}, expected 'wal'")
        conn.execute(EVENTS_TABLE)
    finally:
        conn.close()


def append_full(profile: Profile) -> Scenario:
    """Concurrent one-event appends at synchronous=FULL: group commit against one fsync each."""
    sizes = APPEND_QUICK if profile.quick else APPEND_FULL
    appends = sizes.tasks * sizes.calls_per_task
    return Scenario(
        name="append-full",
        summary=(
            f"{sizes.tasks} tasks x {sizes.calls_per_task} one-event appends ({appends:,} appends),"
            " events database at synchronous=FULL"
        ),
        kind="throughput",
        unit="appends",
        baseline=AIOSQLITE,
        contenders=[_raw_appends(sizes), _aiosqlite_appends(sizes), _store_appends(sizes)],
        prepare=create_events_table,
        target=Target(STORE, 15.0),
        latency_limit=LatencyLimit(STORE, 99, 20.0),
        notes=(
            "p50/p95/p99 ms: each append call, waiting included. async_store: "
            "sql.event_store.append in production mode; baseline: one INSERT + COMMIT per event "
            "under an asyncio.Lock; raw sqlite3 appends sequentially on the loop thread."
        ),
    )


# -- read-all ------------------------------------------------------------------------------------

READ_FULL = 100_000
READ_QUICK = 10_000
EVENTS_PER_APPEND = 1_000


def _read_event(n: int) -> NewEvent:
    from async_store import NewEvent

    data: dict[str, int | str] = {"n": n, "sku": f"sku-{n % 5000:05d}", "qty": n % 7 + 1}
    return NewEvent(EVENT_TYPE, data, metadata={"source": "bench", "batch": n // 1000})


async def _fill_log(app_path: Path, events_path: Path, count: int) -> None:
    """Append `count` events through the store, 1,000 per call."""
    from async_store import SqlConfig, SqlService

    async with SqlService(SqlConfig.production(app_path, events_path)) as sql:
        for start in range(0, count, EVENTS_PER_APPEND):
            batch = range(start, min(count, start + EVENTS_PER_APPEND))
            stream = f"stream-{start // EVENTS_PER_APPEND}"
            await sql.event_store.append(stream, [_read_event(n) for n in batch])


def _prepare_log(count: int, template: Path) -> None:
    """The template is a migrated events.db holding `count` events."""
    app_path = template.with_name("fill-app_meta.db")
    asyncio.run(_fill_log(app_path, template, count))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{app_path}{suffix}").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            raise RuntimeError(f"{template}{suffix} is left behind; the copy would miss it")


def _decode(rows: Iterable[tuple[Any, ...] | sqlite3.Row]) -> int:
    """Decode data and metadata of each row, as the store does; return the row count."""
    count = 0
    loads = json.loads
    for row in rows:
        loads(row[4])
        metadata = row[5]
        if metadata is not None:
            loads(metadata)
        count += 1
    return count


Pass = Callable[[], Awaitable[int]]
"""One full pass over the log; returns the number of events read."""


def _reader_contender(
    name: str,
    requires: tuple[str, ...],
    count: int,
    open_pass: Callable[[Path], AbstractAsyncContextManager[Pass]],
) -> Contender:
    """Open with `open_pass`, warm up with one full pass, then time one."""

    async def run(path: Path) -> Measurement:
        errors = ErrorLog()
        async with open_pass(path) as one_pass:
            await one_pass()
            gc.collect()
            started = time.perf_counter()
            read = await one_pass()
            seconds = time.perf_counter() - started
        if read != count:
            errors.record(LookupError(f"read {read:,} events, expected {count:,}"))
        return Throughput(ops=read, seconds=seconds, errors=errors.kinds())

    return Contender(name, run, requires)


@asynccontextmanager
async def _raw_pass(path: Path) -> AsyncIterator[Pass]:
    conn = sqlite3.connect(path)
    try:
        # The store's page cache size and busy timeout, so both read with the same cache.
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

        async def one_pass() -> int:
            return _decode(conn.execute(SELECT_ALL))

        yield one_pass
    finally:
        conn.close()


@asynccontextmanager
async def _aiosqlite_pass(path: Path) -> AsyncIterator[Pass]:
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA cache_size=-65536")
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

        async def one_pass() -> int:
            return _decode(await conn.execute_fetchall(SELECT_ALL))

        yield one_pass


@asynccontextmanager
async def _store_pass(path: Path) -> AsyncIterator[Pass]:
    from async_store import SqlService

    # The run's copy of the log becomes the events.db of a production-mode directory.
    directory = path.parent / "store"
    directory.mkdir()
    shutil.move(path, directory / "events.db")
    async with SqlService(_store_config(directory)) as sql:
        store = sql.event_store

        async def one_pass() -> int:
            count = 0
            async for _ in store.read_all():
                count += 1
            return count

        yield one_pass


def read_all(profile: Profile) -> Scenario:
    """Iterate the whole event log from position 0."""
    count = READ_QUICK if profile.quick else READ_FULL
    return Scenario(
        name="read-all",
        summary=f"iterate all {count:,} events of the log from the start, JSON decoded",
        kind="throughput",
        unit="events",
        baseline=RAW,
        contenders=[
            _reader_contender(RAW, ("sqlite3",), count, _raw_pass),
            _reader_contender(AIOSQLITE_FETCHALL, ("aiosqlite",), count, _aiosqlite_pass),
            _reader_contender(STORE, ("async_store",), count, _store_pass),
        ],
        prepare=partial(_prepare_log, count),
        target=Target(STORE, 0.5),
        notes=(
            "async_store: async for e in sql.event_store.read_all(); baselines: one SELECT ..."
            " ORDER BY position, json.loads of data and metadata per row (raw: a cursor on the"
            " loop thread; aiosqlite: one execute_fetchall). Log filled through append, 1,000"
            " events per call."
        ),
    )
