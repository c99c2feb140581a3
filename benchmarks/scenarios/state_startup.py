"""Start-up of a ``StateManager`` on a long log: the newest snapshot, then the events after it.

The log is built once per run of the scenario, in its temporary directory: 1,000,000 changes
``SettingSet(f"k{i % 1000}", i)`` (100,000 with ``--quick``), each turned into the event the
manager would store by ``decide`` and folded into the state by ``apply`` (from
``async_store.state.app_state``), appended to the ``$app`` stream through the event store in
batches of 5,000 with consistent versions. ``decide`` and ``apply`` run in a child process while
this one appends, so the two halves of the build overlap. Snapshots of the state are saved at the
last two multiples of 1,000 (``save_snapshot_json`` with ``STATE_SCHEMA_VERSION``), and the
app_meta tables are projected up to the head, so a manager starting on the files has nothing to
catch up on.

Each timed start runs from constructing ``StateManager(sql, snapshot_every=1000)`` to the body
of its ``async with`` (closing is not timed), on an open ``SqlService`` in production mode on a
copy of the built files. Rows:

- the newest snapshot at the head of the log (nothing to replay after it);
- the newest snapshot 1,000 events behind the head (the worst case of a snapshot every 1,000
  events), the head snapshot deleted from the copy;
- no snapshot at all: a full replay of the log, once, given up after 60 s (reference);
- the baseline, raw sqlite3 doing the floor of that work on an open connection: read the newest
  snapshot row and ``json.loads`` it, read the events after it and ``json.loads`` each one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import queue
import shutil
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Contender,
    ErrorLog,
    Latency,
    LatencyLimit,
    Measurement,
    Profile,
    Scenario,
    Skipped,
)

__all__ = ["startup_1m"]

STREAM = "$app"
FILES = ("app_meta.db", "events.db")
SNAPSHOT_EVERY = 1_000
BATCH = 5_000
"""Events per ``append`` call while building the log."""
EVENTS_FULL = 1_000_000
EVENTS_QUICK = 100_000
STARTS_FULL = 5
STARTS_QUICK = 3
REPLAY_LIMIT_S = 60.0

RAW = "raw sqlite3: snapshot + tail"
AT_HEAD = "async_store, snapshot at head"
BEHIND = "async_store, snapshot 1,000 behind"
NO_SNAPSHOT = "async_store, no snapshot (replay)"


# -- building the log ----------------------------------------------------------------------------

Batch = list[tuple[str, dict[str, Any], dict[str, Any] | None]]
"""Events to append: (type, data, metadata), as the manager would pass them to ``NewEvent``."""


def _produce(count: int, out: Any) -> None:
    """In a child process: decide and apply `count` changes, put each batch of `BATCH` events
    on `out`, then ``("snapshots", {version: state JSON text})`` for the last two multiples of
    `SNAPSHOT_EVERY` and the head, then ``("done", None)``."""
    from async_store.state import Limits, SettingSet
    from async_store.state.app_state import AppState, apply, decide

    limits = Limits()
    state = AppState()
    keep = {count - count % SNAPSHOT_EVERY, count - count % SNAPSHOT_EVERY - SNAPSHOT_EVERY, count}
    snapshots: dict[int, str] = {}
    batch: Batch = []
    for n in range(count):
        change = decide(state, SettingSet(f"k{n % 1000}", n))
        state = apply(state, change, limits)
        batch.append((change.event_type, change.data, change.metadata))
        if state.version in keep:
            snapshots[state.version] = json.dumps(state.to_json(), ensure_ascii=False)
        if len(batch) == BATCH:
            out.put(("batch", batch))
            batch = []
    if batch:
        out.put(("batch", batch))
    out.put(("snapshots", snapshots))
    out.put(("done", None))


def _get(source: Any, child: Any) -> tuple[str, Any]:
    """The next item from the child, failing (not hanging) if it died."""
    while True:
        try:
            item: tuple[str, Any] = source.get(timeout=1.0)
            return item
        except queue.Empty:
            if not child.is_alive():
                raise RuntimeError(
                    f"the log builder process exited with code {child.exitcode}"
                ) from None


async def _build(directory: Path, count: int) -> None:
    from async_store import NewEvent, SqlConfig, SqlService
    from async_store.state.app_state import STATE_SCHEMA_VERSION, AppState
    from async_store.state.projector import Projector

    context = multiprocessing.get_context("spawn")
    source = context.Queue(maxsize=8)
    child = context.Process(target=_produce, args=(count, source), daemon=True)
    child.start()
    try:
        async with SqlService(SqlConfig.in_directory(directory)) as sql:
            store = sql.event_store
            version = 0
            snapshots: dict[int, str] = {}
            while True:
                kind, payload = await asyncio.to_thread(_get, source, child)
                if kind == "done":
                    break
                if kind == "snapshots":
                    snapshots = payload
                    continue
                events = [NewEvent(t, data, metadata) for t, data, metadata in payload]
                result = await store.append(STREAM, events, expected_version=version)
                version = result.last_version
            if version != count:
                raise RuntimeError(f"built {version:,} events, not {count:,}")
            head = AppState.from_json(json.loads(snapshots[count]))
            for at, text in sorted(snapshots.items()):
                if at > 0 and at % SNAPSHOT_EVERY == 0:
                    await store.save_snapshot_json(
                        STREAM, at, text, schema_version=STATE_SCHEMA_VERSION
                    )
            # The app_meta tables as the projector would leave them at the head.
            await Projector(sql.app, store).rebuild(head)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()


@dataclass
class _Log:
    """The built log, shared by the scenario's contenders."""

    count: int
    notes: list[str]
    directory: Path | None = None
    snapshots: list[int] = field(default_factory=list)

    def prepare(self, template: Path) -> None:
        template.touch()
        directory = template.parent / "log"
        started = time.perf_counter()
        asyncio.run(_build(directory, self.count))
        seconds = time.perf_counter() - started
        for name in FILES:
            for suffix in ("-wal", "-shm"):
                if Path(f"{directory / name}{suffix}").exists():
                    raise RuntimeError(f"{name}{suffix} is left behind; a copy would miss it")
        conn = sqlite3.connect(directory / "events.db")
        try:
            rows = conn.execute(
                "SELECT version FROM aggregate_snapshots WHERE stream_id = ? ORDER BY version",
                (STREAM,),
            ).fetchall()
        finally:
            conn.close()
        self.snapshots = [row[0] for row in rows]
        self.directory = directory
        size = (directory / "events.db").stat().st_size
        self.notes.append(
            f"log built in {seconds:.1f} s: {self.count:,} events, events.db {size / 1e6:,.0f} MB,"
            f" snapshots at {', '.join(f'{v:,}' for v in self.snapshots)}"
        )
        _progress(f"  {self.notes[-1]}\n")

    def copy(self, workdir: Path, *, keep_snapshots_up_to: int | None) -> Path:
        """A copy of the built files in ``workdir/store``, with the snapshots after
        `keep_snapshots_up_to` deleted (None: keep all)."""
        if self.directory is None:
            raise RuntimeError("the log was not built")
        target = workdir / "store"
        target.mkdir()
        for name in FILES:
            shutil.copyfile(self.directory / name, target / name)
        if keep_snapshots_up_to is not None:
            conn = sqlite3.connect(target / "events.db", isolation_level=None)
            try:
                conn.execute(
                    "DELETE FROM aggregate_snapshots WHERE stream_id = ? AND version > ?",
                    (STREAM, keep_snapshots_up_to),
                )
            finally:
                conn.close()
        return target


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


# -- contenders ----------------------------------------------------------------------------------

Start = Callable[[], Awaitable[int]]
"""One timed start (closed again afterwards); returns its time in nanoseconds."""


async def _starts(start: Start, warm_up: int, timed: int) -> Latency:
    errors = ErrorLog()
    samples: list[int] = []
    for n in range(warm_up + timed):
        if n == warm_up:
            gc.collect()
        try:
            elapsed = await start()
        except Exception as exc:
            errors.record(exc)
        else:
            if n >= warm_up:
                samples.append(elapsed)
    return Latency(samples_ns=samples, errors=errors.kinds())


def _store_contender(
    name: str, log: _Log, starts: int, *, behind: int | None, replay_limit_s: float | None = None
) -> Contender:
    """Start managers on a copy of the log whose newest snapshot is `behind` events before the
    head (None: no snapshot at all). With `replay_limit_s`: one start, no warm-up, skipped if
    it takes longer."""

    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService, StateManager

        keep = None if behind == 0 else (log.count - behind if behind is not None else 0)
        directory = log.copy(path.parent, keep_snapshots_up_to=keep)
        async with SqlService(SqlConfig.in_directory(directory)) as sql:

            async def start() -> int:
                started = time.perf_counter_ns()
                async with StateManager(sql, snapshot_every=SNAPSHOT_EVERY) as manager:
                    elapsed = time.perf_counter_ns() - started
                    version = manager.read_state().version
                if version != log.count:
                    raise LookupError(f"started at version {version:,}, not {log.count:,}")
                return elapsed

            if replay_limit_s is None:
                return await _starts(start, 1, starts)
            try:
                async with asyncio.timeout(replay_limit_s):
                    return await _starts(start, 0, 1)
            except TimeoutError:
                raise Skipped(
                    f"a full replay of {log.count:,} events takes more than {replay_limit_s:g} s"
                ) from None

    return Contender(name, run, ("async_store",))


def _raw_contender(log: _Log, starts: int) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store.state.app_state import STATE_SCHEMA_VERSION

        directory = log.copy(path.parent, keep_snapshots_up_to=None)
        conn = sqlite3.connect(directory / "events.db")
        try:
            conn.execute("PRAGMA cache_size=-65536")

            async def start() -> int:
                started = time.perf_counter_ns()
                snapshot = conn.execute(
                    "SELECT version, state FROM aggregate_snapshots WHERE stream_id = ?"
                    " AND schema_version = ? ORDER BY version DESC LIMIT 1",
                    (STREAM, STATE_SCHEMA_VERSION),
                ).fetchone()
                version = 0 if snapshot is None else int(snapshot[0])
                if snapshot is not None:
                    json.loads(snapshot[1])
                rows = conn.execute(
                    "SELECT version, data, metadata FROM events WHERE stream_id = ?"
                    " AND version > ? ORDER BY version",
                    (STREAM, version),
                )
                for row in rows:
                    version = int(row[0])
                    json.loads(row[1])
                    if row[2] is not None:
                        json.loads(row[2])
                elapsed = time.perf_counter_ns() - started
                if version != log.count:
                    raise LookupError(f"read up to version {version:,}, not {log.count:,}")
                return elapsed

            return await _starts(start, 1, starts)
        finally:
            conn.close()

    return Contender(RAW, run, ("sqlite3",))


def startup_1m(profile: Profile) -> Scenario:
    """Start-up of a StateManager on a long log with a snapshot every 1,000 events."""
    count = EVENTS_QUICK if profile.quick else EVENTS_FULL
    starts = STARTS_QUICK if profile.quick else STARTS_FULL
    notes: list[str] = []
    log = _Log(count, notes)
    return Scenario(
        name="startup-1m",
        summary=(
            f"StateManager(sql, snapshot_every=1000) constructed to entered, {count:,} events in"
            f" the $app log; {starts} timed starts per run after 1 warm-up"
        ),
        kind="latency",
        unit="ms",
        baseline=RAW,
        contenders=[
            _raw_contender(log, starts),
            _store_contender(AT_HEAD, log, starts, behind=0),
            _store_contender(BEHIND, log, starts, behind=SNAPSHOT_EVERY),
            _store_contender(NO_SNAPSHOT, log, 1, behind=None, replay_limit_s=REPLAY_LIMIT_S),
        ],
        prepare=log.prepare,
        latency_limit=LatencyLimit(AT_HEAD, 50, 1000.0),
        notes=(
            "SqlService already open (production mode, a fresh copy of the built files, warm in "
            "the page cache); projections already at the head. Raw: on an open connection, the "
            "newest snapshot row and the events after it, json.loads of each. The replay row "
            f"starts once and is skipped past {REPLAY_LIMIT_S:g} s; the same 1 s limit applies "
            "to the 1,000-behind row, read it off the table."
        ),
        run_notes=notes,
    )
