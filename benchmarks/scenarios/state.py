"""The state manager: durable mutations from many tasks, reading the state, and what one
mutation costs as the state grows.

``mutate-full`` is ``append-full`` one level up: 100 tasks call ``StateManager.mutate`` (each
call decided, appended to the ``$app`` stream of events.db at ``synchronous=FULL``, applied,
swapped in and, in the background, projected into app_meta). The baseline is what an application
would write with aiosqlite: one connection, an ``asyncio.Lock``, one INSERT of the same event and
one COMMIT per change, at ``synchronous=FULL``, plus a dict of the settings. Each call is timed
on its own, queue or lock wait included.

``read-state`` times ``manager.read_state()`` in a tight loop, against reading a plain attribute
(the floor of any Python call). ``read-state-size`` times the pure state work of one mutation,
``decide`` + ``apply`` of a ``KnowledgeBaseAdd`` for a new id (no I/O), on a state holding 1,000
knowledge bases and on one holding 100,000: the collections are persistent maps, so the cost
should grow with log n at most.

async_store runs in production mode (``SqlConfig.in_directory``: app_meta.db and events.db), on
its own files in the run's directory; the baseline uses the scenario's database file.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
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
from benchmarks.scenarios.event_store import INSERT_EVENT, create_events_table

if TYPE_CHECKING:
    from async_store.state import AppState, StateDelta

__all__ = ["mutate_full", "read_state", "read_state_size"]

STORE = "async_store"
AIOSQLITE = "aiosqlite (1 conn + lock)"
STREAM = "$app"
SETTING_EVENT = "SettingSet.v1"
"""The event type the manager stores for a ``SettingSet`` (checked against it in the run)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- mutate-full ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MutateSizes:
    tasks: int
    calls_per_task: int


MUTATE_FULL = MutateSizes(tasks=100, calls_per_task=50)
MUTATE_QUICK = MutateSizes(tasks=20, calls_per_task=20)

SetOne = Callable[[str, int], Awaitable[None]]
"""One durable change: set the setting ``key`` to ``value``."""


async def _mutations(set_one: SetOne, sizes: MutateSizes, *, calls: int, prefix: str) -> Throughput:
    """`sizes.tasks` concurrent callers, `calls` changes each to the setting ``{prefix}{task}``,
    each call timed on its own."""
    errors = ErrorLog()
    samples: list[int] = []

    async def caller(task: int) -> int:
        key = f"{prefix}{task}"
        done = 0
        for n in range(calls):
            started = time.perf_counter_ns()
            try:
                await set_one(key, n)
            except Exception as exc:
                errors.record(exc)
            else:
                samples.append(time.perf_counter_ns() - started)
                done += 1
        return done

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        handles = [group.create_task(caller(task)) for task in range(sizes.tasks)]
    seconds = time.perf_counter() - started
    done = sum(handle.result() for handle in handles)
    return Throughput(
        ops=done, seconds=seconds, errors=errors.kinds(), latency=Latency(samples_ns=samples)
    )


async def _warm_up_and_time(set_one: SetOne, sizes: MutateSizes) -> Throughput:
    """One change per caller to a setting of its own, then the timed changes."""
    await _mutations(set_one, sizes, calls=1, prefix="warm")
    gc.collect()
    return await _mutations(set_one, sizes, calls=sizes.calls_per_task, prefix="k")


def _check_count(measurement: Throughput, found: int, expected: int, what: str) -> Throughput:
    """Count a difference between acknowledged and stored changes as an error."""
    if found == expected:
        return measurement
    errors = dict(measurement.errors)
    message = f"{expected:,} changes acknowledged but {found:,} {what}"
    errors[message] = errors.get(message, 0) + 1
    return Throughput(
        ops=measurement.ops, seconds=measurement.seconds, errors=errors, latency=measurement.latency
    )


def _store_mutations(sizes: MutateSizes) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService, StateManager
        from async_store.state import SettingSet

        async with SqlService(SqlConfig.in_directory(path.parent / "store")) as sql:
            async with StateManager(sql) as manager:

                async def set_one(key: str, value: int) -> None:
                    await manager.mutate(SettingSet(key, value))

                measured = await _warm_up_and_time(set_one, sizes)
                expected = sizes.tasks * (1 + sizes.calls_per_task)
                measured = _check_count(
                    measured, manager.read_state().version, expected, "state version"
                )
            stored = await sql.events.fetch_val(
                "SELECT count(*) FROM events WHERE stream_id = ? AND type = ?",
                (STREAM, SETTING_EVENT),
            )
        return _check_count(measured, int(stored), expected, f"{SETTING_EVENT} events stored")

    return Contender(STORE, run, ("async_store",))


def _aiosqlite_mutations(sizes: MutateSizes) -> Contender:
    async def run(path: Path) -> Measurement:
        async with aiosqlite.connect(path) as conn:
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            lock = asyncio.Lock()
            settings: dict[str, Any] = {}
            version = 0

            async def set_one(key: str, value: int) -> None:
                nonlocal version
                async with lock:
                    # The event the manager stores: the new value and the one it replaced.
                    before = {"value": settings[key]} if key in settings else None
                    data = json.dumps({"key": key, "value": value, "before": before})
                    row = (str(uuid.uuid4()), STREAM, version + 1, SETTING_EVENT, data)
                    try:
                        await conn.execute(INSERT_EVENT, (*row, None, _now()))
                        await conn.commit()
                    except BaseException:
                        await conn.rollback()
                        raise
                    version += 1
                    settings[key] = value

            measured = await _warm_up_and_time(set_one, sizes)
            ((stored,),) = await conn.execute_fetchall("SELECT count(*) FROM events")
        expected = sizes.tasks * (1 + sizes.calls_per_task)
        return _check_count(measured, int(stored), expected, "events stored")

    return Contender(AIOSQLITE, run, ("aiosqlite",))


def mutate_full(profile: Profile) -> Scenario:
    """Concurrent durable mutations through the state manager against one commit each."""
    sizes = MUTATE_QUICK if profile.quick else MUTATE_FULL
    calls = sizes.tasks * sizes.calls_per_task
    return Scenario(
        name="mutate-full",
        summary=(
            f"{sizes.tasks} tasks x {sizes.calls_per_task} StateManager.mutate(SettingSet) calls"
            f" ({calls:,} durable mutations), events database at synchronous=FULL"
        ),
        kind="throughput",
        unit="mutations",
        baseline=AIOSQLITE,
        contenders=[_aiosqlite_mutations(sizes), _store_mutations(sizes)],
        prepare=create_events_table,
        target=Target(STORE, 10.0),
        notes=(
            "p50/p95/p99 ms: each mutate call, waiting included. async_store: StateManager in "
            "production mode, projector on; baseline: the same SettingSet.v1 event, one INSERT + "
            "COMMIT per change under an asyncio.Lock, the settings in a dict. Checked afterwards: "
            "state version and stored events equal the acknowledged changes."
        ),
    )


# -- read-state ----------------------------------------------------------------------------------

READ_CALLS_FULL = 1_000_000
READ_CALLS_QUICK = 100_000
READ_CHUNKS = 100
"""The calls are timed in this many equal chunks; each chunk gives one ns-per-call sample."""

READ_STATE = "manager.read_state()"
ATTRIBUTE = "attribute read (floor)"


def _per_call_samples(loop: Callable[[int], object], calls: int) -> list[int]:
    """Run ``loop(n)`` (n calls in a tight loop) in `READ_CHUNKS` chunks; ns per call of each."""
    per_chunk = max(1, calls // READ_CHUNKS)
    loop(per_chunk)  # warm-up
    gc.collect()
    samples: list[int] = []
    for _ in range(READ_CHUNKS):
        started = time.perf_counter_ns()
        loop(per_chunk)
        samples.append(round((time.perf_counter_ns() - started) / per_chunk))
    return samples


class _Holder:
    """An object with a plain attribute, for the floor."""

    __slots__ = ("state",)

    def __init__(self, state: object) -> None:
        self.state = state


def _read_state_store(calls: int) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store import SqlConfig, SqlService, StateManager
        from async_store.state import SettingSet

        errors = ErrorLog()
        config = SqlConfig.in_directory(path.parent / "store")
        async with SqlService(config) as sql, StateManager(sql) as manager:
            for n in range(100):
                await manager.mutate(SettingSet(f"k{n}", n))
            read = manager.read_state

            def loop(n: int) -> object:
                state = None
                for _ in range(n):
                    state = read()
                return state

            samples = _per_call_samples(loop, calls)
            if manager.read_state().version != 100:
                errors.record(LookupError(f"version {manager.read_state().version}, not 100"))
        return Latency(samples_ns=samples, errors=errors.kinds())

    return Contender(READ_STATE, run, ("async_store",))


def _read_attribute(calls: int) -> Contender:
    async def run(path: Path) -> Measurement:
        holder = _Holder(object())

        def loop(n: int) -> object:
            state = None
            for _ in range(n):
                state = holder.state
            return state

        return Latency(samples_ns=_per_call_samples(loop, calls))

    return Contender(ATTRIBUTE, run)


def read_state(profile: Profile) -> Scenario:
    """``read_state()`` in a tight loop: no await, no lock, no copy."""
    calls = READ_CALLS_QUICK if profile.quick else READ_CALLS_FULL
    return Scenario(
        name="read-state",
        summary=(
            f"{calls:,} calls of manager.read_state() in a tight loop, ns per call"
            f" ({READ_CHUNKS} timed chunks)"
        ),
        kind="latency",
        unit="ns",
        baseline=ATTRIBUTE,
        contenders=[_read_attribute(calls), _read_state_store(calls)],
        prepare=lambda template: template.touch(),
        latency_limit=LatencyLimit(READ_STATE, 50, 0.001),
        notes=(
            "each sample: one chunk's time / its calls, the for loop included (both rows); the "
            "floor reads a plain attribute of an object in the same loop. Started manager in "
            "production mode, 100 settings in the state."
        ),
    )


# -- read-state-size -----------------------------------------------------------------------------

SIZE_SMALL = 1_000
SIZE_LARGE_FULL = 100_000
SIZE_LARGE_QUICK = 10_000
MUTATIONS_FULL = 5_000
MUTATIONS_QUICK = 1_000
WARM_UP_SETTINGS = 100
"""Changes folded into each base state before timing: fills the undo stack (bounded at 100)
as in a running application, without adding knowledge bases."""


def _state_with(knowledge_bases: int) -> AppState:
    """A state holding `knowledge_bases` knowledge bases, built from JSON, then
    `WARM_UP_SETTINGS` setting changes folded in with ``decide`` + ``apply``."""
    from async_store.state import AppState, KnowledgeBase, Limits, SettingSet
    from async_store.state.app_state import apply, decide

    data = AppState().to_json()
    data["version"] = knowledge_bases
    data["knowledge_bases"] = [
        KnowledgeBase(id=f"kb-{n:06d}", name=f"Knowledge base {n}").to_json()
        for n in range(knowledge_bases)
    ]
    state = AppState.from_json(data)
    limits = Limits()
    for n in range(WARM_UP_SETTINGS):
        state = apply(state, decide(state, SettingSet(f"s{n}", n)), limits)
    return state


def _mutation_cost(name: str, knowledge_bases: int, mutations: int) -> Contender:
    async def run(path: Path) -> Measurement:
        from async_store.state import KnowledgeBase, KnowledgeBaseAdd, Limits
        from async_store.state.app_state import apply, decide

        errors = ErrorLog()
        base = _state_with(knowledge_bases)
        if len(base.knowledge_bases) != knowledge_bases:
            errors.record(LookupError(f"{len(base.knowledge_bases):,} knowledge bases in state"))
        limits = Limits()
        deltas: list[StateDelta] = [
            KnowledgeBaseAdd(KnowledgeBase(id=f"new-{n:06d}", name=f"New {n}"))
            for n in range(mutations + mutations // 10)
        ]
        warm, timed = deltas[: mutations // 10], deltas[mutations // 10 :]
        for delta in warm:
            apply(base, decide(base, delta), limits)
        gc.collect()
        samples: list[int] = []
        clock = time.perf_counter_ns
        for delta in timed:
            # Each on the same base state, so its size stays exactly `knowledge_bases`.
            started = clock()
            after = apply(base, decide(base, delta), limits)
            samples.append(clock() - started)
            if len(after.knowledge_bases) != knowledge_bases + 1:
                errors.record(LookupError("the mutation did not add one knowledge base"))
        return Latency(samples_ns=samples, errors=errors.kinds())

    return Contender(name, run, ("async_store",))


def read_state_size(profile: Profile) -> Scenario:
    """CPU cost of one mutation's state work (decide + apply) on a small and a large state."""
    large = SIZE_LARGE_QUICK if profile.quick else SIZE_LARGE_FULL
    mutations = MUTATIONS_QUICK if profile.quick else MUTATIONS_FULL
    small_name = f"decide+apply, {SIZE_SMALL:,} KBs"
    large_name = f"decide+apply, {large:,} KBs"
    return Scenario(
        name="read-state-size",
        summary=(
            f"{mutations:,} KnowledgeBaseAdd (new id) through decide + apply, no I/O, on states of"
            f" {SIZE_SMALL:,} and {large:,} knowledge bases; us per mutation"
        ),
        kind="latency",
        unit="us",
        baseline=small_name,
        contenders=[
            _mutation_cost(small_name, SIZE_SMALL, mutations),
            _mutation_cost(large_name, large, mutations),
        ],
        prepare=lambda template: template.touch(),
        target=Target(large_name, 2.0),
        notes=(
            "each sample: decide(state, delta) + apply(...) from async_store.state.app_state, "
            "each on the same base state (built with AppState.from_json, then 100 settings "
            "folded in to fill the undo stack); ratio = large / small p50 (target: O(log n))."
        ),
    )
