"""The state manager under faults: cancelled callers, a dead consumer, SIGKILL, lost commits.

* **Cancellation.** 200 concurrent mutations, callers cancelled at seeded random points (before
  their turn, while waiting, while their batch commits). Afterwards the state in memory equals
  the state a fresh manager loads from disk: nothing committed was lost, nothing uncommitted
  applied, and every caller that got a version finds its change in the log at that version.
* **Consumer crash.** The consumer task is cancelled (as if it died), or dies of an exception
  injected into ``apply_in_place``, while callers wait -- in its queue, blocked on a full
  queue, or in the batch it is working on: each pending caller gets ``StateManagerClosed``
  (never a hang: every wait is bounded with ``asyncio.timeout``), except a caller whose append
  was already sent, which gets its version; the manager rebuilds the state from the store on
  its own and serves the calls made meanwhile. A rebuild that fails (the store unreadable,
  injected at ``load_state``) fails those calls and later ones until ``restart()``.
* **SIGKILL mid-projection.** A separate process runs a production-mode manager mutating in a
  loop and prints each acknowledged version; the test kills it with SIGKILL at a seeded random
  point. The projection tables on disk equal the state at their checkpoint (a batch and its
  checkpoint commit together); a new manager's state holds every acknowledged change, and after
  ``flush()`` the tables equal the state.
* **Power loss of app_meta.** At ``synchronous=NORMAL`` app_meta may lose its newest commits;
  rolled back by hand with plain sqlite3, the projector repairs the tables from events.db on the
  next start.

Run ``python -m tests.faults.test_state_faults DIR SEED`` to start the mutating worker by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from async_store import (
    AppState,
    InvalidDelta,
    SqlConfig,
    SqlService,
    StateManager,
    StateManagerClosed,
    StoreError,
)
from async_store.state import (
    Flow,
    FlowAdd,
    FlowRemove,
    KnowledgeBase,
    KnowledgeBaseAdd,
    KnowledgeBaseRemove,
    KnowledgeBaseUpdate,
    LogAppend,
    Pipeline,
    PipelineAdd,
    Schedule,
    ScheduleAdd,
    ScheduleRemove,
    SettingDelete,
    SettingSet,
    StateDelta,
    Tool,
    ToolAdd,
    ToolRemove,
)
from async_store.state import manager as manager_module
from async_store.state._snapshots import load_state as stored_state
from async_store.state.app_state import Change, Limits, apply_event
from async_store.state.app_state import apply_in_place as real_apply_in_place
from tests.contract.test_state_manager import (
    SEED,
    assert_projected,
    assert_projection_equals,
    events_of,
    kb,
    load_state,
    projection,
    until,
)
from tests.faults._kill import kill_after_acks
from tests.test_state_manager import writer_held

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path) -> SqlConfig:
    return SqlConfig.in_directory(tmp_path, readers=2, acquire_timeout=10.0)


@pytest.fixture
async def sql(config: SqlConfig) -> AsyncIterator[SqlService]:
    async with SqlService(config) as service:
        yield service


def state_at(events: list[Any], version: int) -> AppState:
    """The state after the first ``version`` events, folded from empty."""
    state = AppState()
    for event in events[:version]:
        state = apply_event(state, event.type, event.data, event.metadata, Limits())
    return state


# -- cancellation ---------------------------------------------------------------------------


def cancellation_workload(i: int) -> StateDelta | None:
    """The i-th call of the cancellation test (None: an undo)."""
    kind = i % 10
    if kind in (0, 4, 8):
        return KnowledgeBaseAdd(kb(i))
    if kind in (1, 5):
        return SettingSet(f"s{i % 7}", i)
    if kind == 2:
        return KnowledgeBaseUpdate(kb(i - 2, f"Renamed {i}"))  # refused if kb-(i-2) was cancelled
    if kind == 6:
        return KnowledgeBaseRemove(f"kb-{i - 2}")
    if kind == 9:
        return LogAppend(f"log {i}")
    return None


@pytest.mark.parametrize(
    ("seed", "queue_size"),
    [
        pytest.param(1, 1024, id="seed-1"),
        pytest.param(2, 1024, id="seed-2"),
        pytest.param(3, 4, id="seed-3-small-queue"),
        pytest.param(4, 4, id="seed-4-small-queue"),
    ],
)
async def test_cancelled_callers_leave_memory_equal_to_disk(
    sql: SqlService, seed: int, queue_size: int
) -> None:
    rng = random.Random(seed)
    manager = StateManager(sql, queue_size=queue_size, project=False, snapshot_every=50)
    await manager.start()
    calls: dict[int, asyncio.Future[Any]] = {}

    async def call(i: int) -> Any:
        delta = cancellation_workload(i)
        return await (manager.undo() if delta is None else manager.mutate(delta))

    # Launch in waves with real (short) pauses so cancellations land before, during and
    # after group commits; each caller has a seeded chance and moment of being cancelled.
    plan = {i: rng.randrange(0, 40) for i in range(200) if rng.random() < 0.4}
    for wave in range(40):
        for i in range(wave * 5, wave * 5 + 5):
            calls[i] = asyncio.ensure_future(call(i))
        for i, when in plan.items():
            if when == wave and i in calls:
                calls[i].cancel()
        await asyncio.sleep(rng.random() / 1000)
    async with asyncio.timeout(30):
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
    outcomes = dict(zip(calls, results, strict=True))
    cancelled = [i for i, r in outcomes.items() if isinstance(r, asyncio.CancelledError)]
    acknowledged = {
        i: r for i, r in outcomes.items() if isinstance(r, int) and not isinstance(r, bool)
    }
    unexpected = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError | InvalidDelta)
    ]
    assert not unexpected
    assert cancelled, "the plan cancelled nobody: the test proves nothing"
    assert acknowledged

    live = await flush_and_read(manager)
    await manager.close()
    events = await events_of(sql)
    assert [e.version for e in events] == list(range(1, live.version + 1))
    assert len(set(acknowledged.values())) == len(acknowledged)
    for i, version in acknowledged.items():
        delta = cancellation_workload(i)
        assert delta is not None
        assert events[version - 1].type == f"{delta.event_name}.v1", (i, version)
    assert await load_state(sql) == live
    assert state_at(events, live.version).knowledge_bases == live.knowledge_bases


async def flush_and_read(manager: StateManager) -> AppState:
    await manager.flush()
    return manager.read_state()


async def test_a_caller_cancelled_while_its_batch_commits_keeps_its_change(
    sql: SqlService,
) -> None:
    async with StateManager(sql, project=False) as manager:
        async with writer_held(sql.events):
            caller = asyncio.ensure_future(manager.mutate(KnowledgeBaseAdd(kb(1))))
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1, caller)
            caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        # The append was on its way: the change stands, in memory and on disk.
        assert await manager.flush() == 1
        assert "kb-1" in manager.read_state().knowledge_bases
        assert await manager.mutate(SettingSet("next", 1)) == 2
        live = manager.read_state()
    assert await load_state(sql) == live


async def test_a_caller_cancelled_before_its_turn_is_dropped(sql: SqlService) -> None:
    async with StateManager(sql, project=False) as manager:
        async with writer_held(sql.events):
            first = asyncio.ensure_future(manager.mutate(SettingSet("first", 1)))
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1, first)
            queued = asyncio.ensure_future(manager.mutate(KnowledgeBaseAdd(kb(1))))
            behind = asyncio.ensure_future(manager.mutate(SettingSet("behind", 2)))
            await asyncio.sleep(0)  # both are in the manager's queue
            queued.cancel()
        assert await first == 1
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await behind == 2  # the dropped delta took no version
        live = manager.read_state()
        assert "kb-1" not in live.knowledge_bases
    assert await load_state(sql) == live


# -- consumer crash -------------------------------------------------------------------------


def consumer_of(manager: StateManager) -> asyncio.Task[None]:
    consumer = manager._consumer
    assert consumer is not None
    return consumer


async def assert_refused_with_closed(manager: StateManager) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: manager.mutate(SettingSet("late", 1)),
        manager.undo,
        manager.redo,
        manager.flush,
    ]
    async with asyncio.timeout(10):
        for make_call in calls:
            with pytest.raises(StateManagerClosed):
                await make_call()
    with pytest.raises(StateManagerClosed):
        manager.mutate_nowait(SettingSet("late", 1))


async def test_consumer_crash_while_idle_rebuilds_and_serves(sql: SqlService) -> None:
    async with StateManager(sql) as manager:
        for seed in SEED:
            await manager.mutate(seed)
        await manager.mutate(SettingSet("undone", 1))
        await manager.undo()
        before = manager.read_state()

        ended: list[tuple[int, StateDelta]] = []

        async def follow() -> None:
            async for item in manager.subscribe():
                ended.append(item)

        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0)
        dead = consumer_of(manager)
        dead.cancel()
        async with asyncio.timeout(10):
            await until(dead.done)
            # A subscription ends with an error when the consumer dies: the manager serves
            # on, and the reader must know it misses what follows.
            with pytest.raises(StateManagerClosed, match=f"after version {before.version}"):
                await follower
            # The next call waits for the state rebuilt from the store, then is served.
            assert await manager.redo() is True  # the history survived too
        assert consumer_of(manager) is not dead
        assert manager.read_state().settings["undone"] == 1
        assert await manager.mutate(SettingSet("after", 2)) == before.version + 2
        await manager.flush()
        await assert_projected(sql, manager.read_state())
        assert await load_state(sql) == manager.read_state()
    assert ended == []


async def test_consumer_crash_while_callers_wait(sql: SqlService) -> None:
    async with StateManager(sql) as manager:
        await manager.mutate(KnowledgeBaseAdd(kb(1)))
        async with writer_held(sql.events) as release:
            in_flight = manager.mutate_nowait(SettingSet("in-flight", 1))
            # The consumer took it and waits for its append behind the writer.
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
            waiting = [
                asyncio.ensure_future(manager.mutate(SettingSet(f"w{i}", i))) for i in range(5)
            ]
            await asyncio.sleep(0)
            consumer_of(manager).cancel()
            release()
            async with asyncio.timeout(10):
                # The append was already sent: it commits, and its caller gets its version.
                assert await in_flight == 2
                for task in waiting:
                    with pytest.raises(StateManagerClosed):
                        await task
        async with asyncio.timeout(10):
            assert await manager.mutate(SettingSet("after", 3)) == 3
        assert set(manager.read_state().settings) == {"in-flight", "after"}
        assert await load_state(sql) == manager.read_state()


async def test_consumer_crash_with_callers_blocked_on_a_full_queue(sql: SqlService) -> None:
    # One fills the queue and three wait for room: emptying the queue once wakes only one of
    # them, so the others must be released by the queue's abandonment, not by room.
    async with StateManager(sql, queue_size=1) as manager:
        async with writer_held(sql.events) as release:
            in_flight = manager.mutate_nowait(SettingSet("in-flight", 0))
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
            callers = [
                asyncio.ensure_future(manager.mutate(SettingSet(f"w{i}", i))) for i in range(4)
            ]
            await asyncio.sleep(0)
            consumer_of(manager).cancel()
            release()
        try:
            async with asyncio.timeout(3):
                assert await in_flight == 1
                for task in callers:
                    with pytest.raises(StateManagerClosed):
                        await task
        finally:
            for task in callers:
                task.cancel()
            await asyncio.gather(*callers, return_exceptions=True)
        async with asyncio.timeout(10):
            assert await manager.mutate(SettingSet("after", 1)) == 2
        assert dict(manager.read_state().settings.items()) == {"in-flight": 0, "after": 1}


async def test_consumer_dying_of_an_exception_fails_the_callers_of_its_batch(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = True

    def apply_in_place(state: AppState, change: Change, limits: Limits) -> None:
        if broken and isinstance(change.delta, SettingSet) and change.delta.key == "boom":
            raise RuntimeError("injected fault in apply")
        real_apply_in_place(state, change, limits)

    monkeypatch.setattr(manager_module, "apply_in_place", apply_in_place)
    async with StateManager(sql, project=False) as manager:
        await manager.mutate(SettingSet("before", 1))
        before = manager.read_state()
        async with asyncio.timeout(3):
            with pytest.raises(StateManagerClosed) as caught:
                await manager.mutate(SettingSet("boom", 1))
            assert isinstance(caught.value.__cause__, RuntimeError)
            # Nothing of the failed batch was appended: the rebuilt state is the one before.
            assert await manager.mutate(SettingSet("after", 2)) == 2
        assert set(manager.read_state().settings) == {"before", "after"}
        assert manager.read_state().version == before.version + 1


async def test_consumer_cancelled_mid_commit_fails_a_flush_of_the_same_batch(
    sql: SqlService,
) -> None:
    async with StateManager(sql, project=False) as manager:
        async with writer_held(sql.events) as release:
            flushing = asyncio.ensure_future(manager.flush())
            in_flight = manager.mutate_nowait(SettingSet("in-flight", 1))
            # Both were taken in one batch; its append waits behind the writer.
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
            assert manager._mailbox.queue.empty()
            consumer_of(manager).cancel()
            release()
        try:
            async with asyncio.timeout(3):
                assert await in_flight == 1
                with pytest.raises(StateManagerClosed):
                    await flushing
                assert await manager.flush() == 1
        finally:
            flushing.cancel()
        assert manager.read_state().settings["in-flight"] == 1


async def test_close_waiting_for_room_when_the_consumer_dies_returns(sql: SqlService) -> None:
    manager = StateManager(sql, queue_size=1, project=False)
    await manager.start()
    async with writer_held(sql.events) as release:
        in_flight = manager.mutate_nowait(SettingSet("in-flight", 0))
        await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
        queued = manager.mutate_nowait(SettingSet("queued", 1))  # fills the queue
        closing = asyncio.ensure_future(manager.close())  # waits for room for its STOP
        await asyncio.sleep(0)
        consumer_of(manager).cancel()
        release()
        async with asyncio.timeout(10):
            assert await in_flight == 1
            with pytest.raises(StateManagerClosed):
                await queued
            await closing
    await assert_refused_with_closed(manager)
    with pytest.raises(StateManagerClosed, match="closed"):
        await manager.restart()
    assert consumer_of(manager).done()
    assert manager._rebuilding is None


@contextlib.asynccontextmanager
async def rebuild_gate(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """Rebuilds of the state wait for ``gate["open"]`` and raise ``gate["error"]`` if set."""
    gate: dict[str, Any] = {"open": asyncio.Event(), "error": None, "calls": 0}

    async def load_state(store: Any, limits: Limits) -> AppState:
        gate["calls"] += 1
        await gate["open"].wait()
        if gate["error"] is not None:
            raise gate["error"]
        return await stored_state(store, limits)

    monkeypatch.setattr(manager_module, "load_state", load_state)
    yield gate


async def test_calls_made_while_the_state_is_rebuilt_wait_for_it(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StateManager(sql, project=False) as manager:
        await manager.mutate(SettingSet("before", 1))
        async with rebuild_gate(monkeypatch) as gate:
            consumer_of(manager).cancel()
            await until(lambda: gate["calls"] == 1)
            waiting = [
                asyncio.ensure_future(manager.mutate(SettingSet(f"w{i}", i))) for i in range(3)
            ]
            queued = manager.mutate_nowait(SettingSet("nowait", 0))
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in waiting)
            assert not queued.done()
            gate["open"].set()
            async with asyncio.timeout(10):
                versions = sorted([*await asyncio.gather(*waiting), await queued])
        assert versions == [2, 3, 4, 5]
        assert await load_state(sql) == manager.read_state()


async def test_a_failed_rebuild_refuses_calls_until_restart(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with StateManager(sql, project=False) as manager:
        await manager.mutate(SettingSet("before", 1))
        async with rebuild_gate(monkeypatch) as gate:
            gate["error"] = StoreError("injected: the store cannot be read")
            consumer_of(manager).cancel()
            await until(lambda: gate["calls"] == 1)
            waiting = asyncio.ensure_future(manager.mutate(SettingSet("waiting", 1)))
            await asyncio.sleep(0)
            gate["open"].set()
            async with asyncio.timeout(10):
                with pytest.raises(StateManagerClosed) as caught:
                    await waiting  # queued during the rebuild: failed with it, not left hanging
                assert isinstance(caught.value.__cause__, StoreError)
                await assert_refused_with_closed(manager)
                with pytest.raises(StoreError, match="injected"):
                    await manager.restart()  # the store still cannot be read
                gate["error"] = None
                await manager.restart()
                assert await manager.mutate(SettingSet("after", 2)) == 2
        assert "rebuilding the state from the store failed" in caplog.text
        assert set(manager.read_state().settings) == {"before", "after"}


async def test_restart_cancelled_while_it_rebuilds_leaves_the_rebuild_to_finish(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with StateManager(sql, project=False) as manager:
        await manager.mutate(SettingSet("before", 1))
        async with rebuild_gate(monkeypatch) as gate:
            restarting = asyncio.ensure_future(manager.restart())
            await until(lambda: gate["calls"] == 1)
            restarting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await restarting
            waiting = asyncio.ensure_future(manager.mutate(SettingSet("after", 2)))
            gate["open"].set()
            async with asyncio.timeout(10):
                assert await waiting == 2
        assert gate["calls"] == 1


async def test_a_consumer_dying_while_the_manager_closes_is_not_replaced(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = StateManager(sql, project=False)
    await manager.start()
    await manager.mutate(SettingSet("before", 1))
    async with rebuild_gate(monkeypatch) as gate:
        async with writer_held(sql.events) as release:
            in_flight = manager.mutate_nowait(SettingSet("in-flight", 1))
            await until(lambda: sql.events.statistics().writer_queue_depth >= 1)
            closing = asyncio.ensure_future(manager.close())
            await asyncio.sleep(0)
            consumer_of(manager).cancel()
            release()
        async with asyncio.timeout(10):
            assert await in_flight == 2
            await closing
    assert gate["calls"] == 0
    await assert_refused_with_closed(manager)


# -- SIGKILL mid-projection -------------------------------------------------------------------


def worker_round(i: int) -> list[StateDelta]:
    """Round ``i`` of the worker: changes independent of each other (they run concurrently),
    depending only on earlier rounds."""
    deltas: list[StateDelta] = [
        KnowledgeBaseAdd(KnowledgeBase(f"kb-{i}", f"Docs {i}", metadata={"round": i})),
        KnowledgeBaseAdd(KnowledgeBase(f"kb-{i}-tmp", "Temporary")),
        ToolAdd(Tool(f"t-{i}", "Tool", config={"n": i})),
        FlowAdd(Flow(f"f-{i}", "Flow", definition={"steps": [i]})),
        SettingSet(f"key-{i % 5}", {"round": i}),
        LogAppend(f"round {i}"),
    ]
    if i >= 1:
        p = i - 1
        deltas += [
            KnowledgeBaseUpdate(KnowledgeBase(f"kb-{p}", f"Docs {p} v2")),
            KnowledgeBaseRemove(f"kb-{p}-tmp"),
            ToolRemove(f"t-{p}"),
            PipelineAdd(Pipeline(f"p-{p}", "Pipeline", kb_id=f"kb-{p}", steps=({"op": "x"},))),
            ScheduleAdd(Schedule(f"s-{p}", "Schedule", flow_id=f"f-{p}", cron="*/5 * * * *")),
        ]
    if i >= 2:
        deltas += [ScheduleRemove(f"s-{i - 2}"), SettingDelete(f"gone-{i - 2}")]
    if i >= 3:
        deltas.append(FlowRemove(f"f-{i - 3}"))
    deltas.append(SettingSet(f"gone-{i}", i))
    return deltas


def describe(delta: StateDelta) -> tuple[str, str]:
    """The event type and the id or key a delta's event names."""
    target = getattr(delta, "entity", None)
    name = getattr(target, "id", None) or getattr(delta, "id", None) or getattr(delta, "key", "")
    return f"{delta.event_name}.v1", str(name)


def describe_event(event_type: str, data: Any) -> tuple[str, str]:
    if "entity" in data:
        return event_type, str(data["entity"]["id"])
    return event_type, str(data.get("id") or data.get("key") or "")


async def worker(directory: Path) -> None:
    """Mutate forever, printing ``{"version", "type", "target"}`` once each change returned."""
    async with (
        SqlService(SqlConfig.in_directory(directory)) as sql,
        StateManager(sql, snapshot_every=25) as manager,
    ):
        print("ready", flush=True)
        i = 0
        while True:
            deltas = worker_round(i)
            versions = await asyncio.gather(*(manager.mutate(d) for d in deltas))
            for delta, version in zip(deltas, versions, strict=True):
                event_type, target = describe(delta)
                line = {"version": version, "type": event_type, "target": target}
                print(json.dumps(line), flush=True)
            i += 1


async def run_worker_until_killed(directory: Path, acks: int) -> list[dict[str, Any]]:
    """Start the worker, SIGKILL it after ``acks`` acknowledgements, return every complete
    acknowledgement it wrote (read before the kill or still in the pipe)."""
    lines = await kill_after_acks(
        [sys.executable, "-m", "tests.faults.test_state_faults", str(directory)], acks, cwd=REPO
    )
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_projection_equals_state_after_sigkill_mid_projection(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    acks = await run_worker_until_killed(tmp_path, rng.randrange(30, 400))
    acknowledged = {ack["version"]: (ack["type"], ack["target"]) for ack in acks}
    assert len(acknowledged) == len(acks), "two callers were given the same version"

    async with SqlService(SqlConfig.in_directory(tmp_path)) as sql:
        events = await events_of(sql)
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        # Every acknowledged change is in the log, at the version its caller was given.
        assert max(acknowledged) <= len(events)
        for version, described in acknowledged.items():
            event = events[version - 1]
            assert describe_event(event.type, event.data) == described, version
        # Before any repair, the tables are exactly the state at their checkpoint: a batch
        # and its checkpoint committed together, whatever moment the kill hit.
        checkpoint = await sql.app.fetch_val(
            "SELECT coalesce(max(position), 0) FROM projection_checkpoints"
        )
        assert 0 <= checkpoint <= len(events)
        assert_projection_equals(await projection(sql), state_at(events, checkpoint))

        async with StateManager(sql, snapshot_every=25) as manager:
            state = manager.read_state()
            assert state.version == len(events)
            assert state == state_at(events, len(events))
            await manager.flush()
            await assert_projected(sql, state)


# -- power loss of app_meta -----------------------------------------------------------------

PROJECTED = ("knowledge_bases", "tools", "flows", "pipelines", "schedules", "settings")


def copy_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    connection = sqlite3.connect(path)
    try:
        return {t: connection.execute(f"SELECT * FROM {t}").fetchall() for t in PROJECTED}
    finally:
        connection.close()


def roll_back_app_meta(
    path: Path, checkpoint: int, tables: dict[str, list[tuple[Any, ...]]] | None, drop: list[str]
) -> None:
    """What a power loss does to app_meta at synchronous=NORMAL: its newest commits vanish.

    With ``tables``, every projected table goes back to that copy; otherwise the rows of
    ``drop`` (``"table:id"``) go. The checkpoint goes back to ``checkpoint`` either way. Plain
    sqlite3 leaves foreign keys off, so nothing cascades (documents stay)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        if tables is not None:
            for table, rows in tables.items():
                connection.execute(f"DELETE FROM {table}")
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    connection.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        for item in drop:
            table, _, key = item.partition(":")
            column = "key" if table == "settings" else "id"
            assert connection.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,)).rowcount
        connection.execute("UPDATE projection_checkpoints SET position = ?", (checkpoint,))
        connection.execute("COMMIT")
    finally:
        connection.close()


LATER: list[StateDelta] = [
    KnowledgeBaseAdd(kb(3)),
    PipelineAdd(Pipeline("p-3", "Later", kb_id="kb-3")),
    KnowledgeBaseUpdate(kb(1, "Renamed")),
    ScheduleRemove("s-2"),
    FlowRemove("f-1"),
    KnowledgeBaseRemove("kb-2"),
    ToolAdd(Tool("t-2", "Later")),
    SettingSet("theme", "light"),
    SettingSet("new", [1, 2]),
]
"""Changes made after the commits app_meta will lose: adds, updates and removes."""


@pytest.mark.parametrize(
    "drop",
    [
        pytest.param(None, id="tables-back-to-an-older-commit"),
        pytest.param(
            ["knowledge_bases:kb-3", "pipelines:p-3", "tools:t-2", "settings:new"],
            id="newest-rows-deleted",
        ),
    ],
)
async def test_projector_repairs_app_meta_after_losing_its_newest_commits(
    config: SqlConfig, drop: list[str] | None
) -> None:
    app_path = config.app.path
    async with SqlService(config) as sql, StateManager(sql) as manager:
        for seed in SEED:
            await manager.mutate(seed)
        older = await manager.flush()
        await sql.app.execute(
            "INSERT INTO documents(id, kb_id, title, content_hash, size_bytes)"
            " VALUES ('doc-1', 'kb-1', 'Guide', ?, 10)",
            ("0" * 64,),
        )
        older_tables = copy_tables(app_path)
        for delta in LATER:
            await manager.mutate(delta)
        await manager.flush()
        final = manager.read_state()

    roll_back_app_meta(app_path, older, older_tables if drop is None else None, drop or [])

    async with SqlService(config) as sql:
        assert await sql.app.fetch_val("SELECT position FROM projection_checkpoints") == older
        async with StateManager(sql) as manager:
            assert manager.read_state() == final
            assert await manager.flush() == final.version
            await assert_projected(sql, final)
        assert await sql.app.fetch_val("SELECT position FROM projection_checkpoints") == (
            final.version
        )
        assert await sql.app.fetch_val("SELECT title FROM documents WHERE id = 'doc-1'") == "Guide"
        assert await sql.app.fetch_val("PRAGMA foreign_key_check") is None


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(worker(Path(sys.argv[1])))
