"""``StateManager`` on every backend: the actor, reads, snapshots and replay, undo/redo,
projection, subscribe.

Every test runs on the ``sql`` fixture's store (production mode on SQLite unless a test is
parametrized over both modes), and waits for conditions by polling; nothing here asserts how
long anything took.

The helpers at the top (``projection``, ``assert_projection_equals``, ``until``, ...) are shared
with ``tests/test_state_manager.py`` and ``tests/faults/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import pytest

from async_store import (
    AppState,
    ConcurrencyError,
    InvalidDelta,
    NewEvent,
    SqlConfig,
    SqlService,
    StateManager,
    StateManagerClosed,
    StoreError,
)
from async_store.events.store import RecordedEvent
from async_store.state import (
    Entity,
    ErrorRecord,
    ErrorsClear,
    Flow,
    FlowAdd,
    FlowRemove,
    FlowUpdate,
    KnowledgeBase,
    KnowledgeBaseAdd,
    KnowledgeBaseRemove,
    KnowledgeBaseUpdate,
    Limits,
    LogAppend,
    MetricRecord,
    Pipeline,
    PipelineAdd,
    PipelineRemove,
    PipelineUpdate,
    Schedule,
    ScheduleAdd,
    ScheduleRemove,
    ScheduleUpdate,
    SettingDelete,
    SettingSet,
    StateDelta,
    Tool,
    ToolAdd,
    ToolRemove,
    ToolUpdate,
)
from async_store.state import projector as projector_module

STREAM = "$app"
COLLECTIONS = ("knowledge_bases", "tools", "pipelines", "schedules", "flows")

# -- shared helpers ---------------------------------------------------------------------------


async def until(condition: Callable[[], bool], task: asyncio.Future[Any] | None = None) -> None:
    """Poll ``condition``; fail at once if ``task`` ends first (pytest-timeout catches a hang)."""
    while not condition():
        if task is not None and task.done():
            task.result()
            raise AssertionError("the task ended before the condition held")
        await asyncio.sleep(0.001)


async def events_of(sql: SqlService) -> list[RecordedEvent]:
    """The whole ``$app`` stream."""
    return [event async for event in sql.event_store.read_stream(STREAM)]


async def projection(sql: SqlService) -> dict[str, dict[str, dict[str, Any]]]:
    """The app_meta projection tables as ``table -> id -> column -> value``; ``settings`` as
    ``{"settings": {key: {"value": decoded JSON}}}``."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for table in COLLECTIONS:
        rows = await sql.app.fetch_all(f"SELECT * FROM {table}")
        tables[table] = {row["id"]: {key: row[key] for key in row.keys()} for row in rows}  # noqa: SIM118
    rows = await sql.app.fetch_all("SELECT key, value FROM settings")
    tables["settings"] = {row["key"]: {"value": json.loads(row["value"])} for row in rows}
    return tables


def assert_projection_equals(tables: dict[str, dict[str, dict[str, Any]]], state: AppState) -> None:
    """The tables hold exactly the state's entities and settings, field by field."""
    for table in COLLECTIONS:
        entities = state.collection(table)
        assert set(tables[table]) == set(entities), table
        for entity_id, entity in entities.items():
            row = tables[table][entity_id]
            expected: dict[str, Any] = json.loads(json.dumps(entity.to_json()))
            for name, value in expected.items():
                assert name in row, f"{table} has no column {name}"
                stored = row[name]
                if isinstance(value, dict | list):
                    stored = json.loads(stored)
                elif isinstance(value, bool):
                    assert stored in (0, 1), f"{table}.{entity_id}.{name}"
                    stored = bool(stored)
                assert stored == value, f"{table}.{entity_id}.{name}: {stored!r} != {value!r}"
    settings = {key: row["value"] for key, row in tables["settings"].items()}
    assert settings == dict(state.settings.items())


async def assert_projected(sql: SqlService, state: AppState) -> None:
    assert_projection_equals(await projection(sql), state)


@contextlib.asynccontextmanager
async def running(sql: SqlService, **options: Any) -> AsyncIterator[StateManager]:
    async with StateManager(sql, **options) as manager:
        yield manager


async def load_state(sql: SqlService, **options: Any) -> AppState:
    """The state a fresh manager loads from disk (snapshot plus replay), without projecting."""
    async with StateManager(sql, project=False, **options) as fresh:
        return fresh.read_state()


def kb(index: int | str, name: str = "Docs", **fields: Any) -> KnowledgeBase:
    return KnowledgeBase(f"kb-{index}", name, **fields)


# -- the actor ----------------------------------------------------------------------------


async def test_mutate_returns_strictly_increasing_versions(manager: StateManager) -> None:
    versions = [
        await manager.mutate(KnowledgeBaseAdd(kb(1))),
        await manager.mutate(SettingSet("theme", "dark")),
        await manager.mutate(LogAppend("hello")),
        await manager.mutate(KnowledgeBaseUpdate(kb(1, "Renamed"))),
        await manager.mutate(SettingDelete("theme")),
        await manager.mutate(KnowledgeBaseRemove("kb-1")),
    ]
    assert versions == [1, 2, 3, 4, 5, 6]
    assert manager.read_state().version == 6


async def test_500_concurrent_mutators_get_versions_1_to_500(
    sql: SqlService, manager: StateManager
) -> None:
    async def one(i: int) -> int:
        version = await manager.mutate(KnowledgeBaseAdd(kb(i)))
        # Once mutate returns, readers see at least that version.
        assert manager.read_state().version >= version
        assert f"kb-{i}" in manager.read_state().knowledge_bases
        return version

    versions = await asyncio.gather(*(one(i) for i in range(500)))
    assert sorted(versions) == list(range(1, 501))
    state = manager.read_state()
    assert state.version == 500
    assert set(state.knowledge_bases) == {f"kb-{i}" for i in range(500)}
    events = await events_of(sql)
    assert [e.version for e in events] == list(range(1, 501))
    # Each caller's version is the version of the event recording its delta.
    by_id = {e.data["entity"]["id"]: e.version for e in events}
    assert [by_id[f"kb-{i}"] for i in range(500)] == versions


SEED: list[StateDelta] = [
    KnowledgeBaseAdd(kb(1)),
    KnowledgeBaseAdd(kb(2)),
    ToolAdd(Tool("t-1", "Search")),
    PipelineAdd(Pipeline("p-1", "Ingest", kb_id="kb-1")),
    FlowAdd(Flow("f-1", "Answer")),
    ScheduleAdd(Schedule("s-1", "Nightly", pipeline_id="p-1", cron="0 3 * * *")),
    ScheduleAdd(Schedule("s-2", "Hourly", flow_id="f-1", interval_seconds=3600)),
    SettingSet("theme", "dark"),
]
"""One of everything, with references: p-1 → kb-1, s-1 → p-1, s-2 → f-1."""

INVALID = [
    pytest.param(
        KnowledgeBaseAdd(kb(1)), "knowledge base 'kb-1' exists already", id="add-kb-twice"
    ),
    pytest.param(ToolAdd(Tool("t-1", "X")), "tool 't-1' exists already", id="add-tool-twice"),
    pytest.param(
        PipelineAdd(Pipeline("p-1", "X")), "pipeline 'p-1' exists already", id="add-pipeline-twice"
    ),
    pytest.param(
        ScheduleAdd(Schedule("s-1", "X", cron="@daily")),
        "schedule 's-1' exists already",
        id="add-schedule-twice",
    ),
    pytest.param(FlowAdd(Flow("f-1", "X")), "flow 'f-1' exists already", id="add-flow-twice"),
    pytest.param(
        KnowledgeBaseUpdate(kb(9)), "knowledge base 'kb-9' does not exist", id="update-missing-kb"
    ),
    pytest.param(
        ToolUpdate(Tool("t-9", "X")), "tool 't-9' does not exist", id="update-missing-tool"
    ),
    pytest.param(
        PipelineUpdate(Pipeline("p-9", "X")),
        "pipeline 'p-9' does not exist",
        id="update-missing-pipeline",
    ),
    pytest.param(
        ScheduleUpdate(Schedule("s-9", "X", cron="@daily")),
        "schedule 's-9' does not exist",
        id="update-missing-schedule",
    ),
    pytest.param(
        FlowUpdate(Flow("f-9", "X")), "flow 'f-9' does not exist", id="update-missing-flow"
    ),
    pytest.param(
        KnowledgeBaseRemove("kb-9"), "knowledge base 'kb-9' does not exist", id="remove-missing-kb"
    ),
    pytest.param(ToolRemove("t-9"), "tool 't-9' does not exist", id="remove-missing-tool"),
    pytest.param(
        PipelineRemove("p-9"), "pipeline 'p-9' does not exist", id="remove-missing-pipeline"
    ),
    pytest.param(
        ScheduleRemove("s-9"), "schedule 's-9' does not exist", id="remove-missing-schedule"
    ),
    pytest.param(FlowRemove("f-9"), "flow 'f-9' does not exist", id="remove-missing-flow"),
    pytest.param(
        PipelineAdd(Pipeline("p-2", "X", kb_id="kb-9")),
        "pipeline 'p-2' refers to knowledge base 'kb-9', which does not exist",
        id="pipeline-with-missing-kb",
    ),
    pytest.param(
        PipelineUpdate(Pipeline("p-1", "X", kb_id="kb-9")),
        "pipeline 'p-1' refers to knowledge base 'kb-9', which does not exist",
        id="pipeline-update-to-missing-kb",
    ),
    pytest.param(
        KnowledgeBaseRemove("kb-1"),
        "knowledge base 'kb-1' is still referred to by 1 other entity",
        id="remove-kb-a-pipeline-uses",
    ),
    pytest.param(
        PipelineRemove("p-1"),
        "pipeline 'p-1' is still referred to by 1 other entity",
        id="remove-pipeline-a-schedule-uses",
    ),
    pytest.param(
        FlowRemove("f-1"),
        "flow 'f-1' is still referred to by 1 other entity",
        id="remove-flow-a-schedule-uses",
    ),
    pytest.param(
        ScheduleAdd(Schedule("s-3", "X", pipeline_id="p-9", cron="@daily")),
        "schedule 's-3' refers to pipeline 'p-9', which does not exist",
        id="schedule-with-missing-pipeline",
    ),
    pytest.param(
        ScheduleAdd(Schedule("s-3", "X", flow_id="f-9", cron="@daily")),
        "schedule 's-3' refers to flow 'f-9', which does not exist",
        id="schedule-with-missing-flow",
    ),
    pytest.param(
        SettingDelete("missing"), "setting 'missing' does not exist", id="delete-missing-setting"
    ),
    pytest.param(
        SettingSet("", 1), "a setting key must be a non-empty string", id="empty-setting-key"
    ),
    pytest.param(SettingSet("k", float("inf")), "setting 'k' is not JSON", id="setting-not-json"),
]


@pytest.mark.parametrize(("delta", "fragment"), INVALID)
async def test_invalid_delta_changes_nothing(
    sql: SqlService, manager: StateManager, delta: StateDelta, fragment: str
) -> None:
    for seed in SEED:
        await manager.mutate(seed)
    before = manager.read_state()
    log = await events_of(sql)
    with pytest.raises(InvalidDelta, match=fragment):
        await manager.mutate(delta)
    assert manager.read_state() is before
    assert await events_of(sql) == log
    # The manager is still serving, and the refused delta took no version.
    assert await manager.mutate(LogAppend("still here")) == before.version + 1


@pytest.mark.parametrize("thing", [None, "KnowledgeBaseAdd", 5, {"key": "k"}])
async def test_what_is_not_a_delta_is_refused_before_it_is_queued(
    manager: StateManager, thing: Any
) -> None:
    before = manager.read_state()
    with pytest.raises(InvalidDelta, match="takes a StateDelta"):
        await manager.mutate(thing)
    with pytest.raises(InvalidDelta, match="takes a StateDelta"):
        manager.mutate_nowait(thing)
    assert manager.read_state() is before
    assert await manager.mutate(LogAppend("still here")) == before.version + 1


async def test_a_flaw_in_validation_fails_its_caller_and_spares_the_actor(
    manager: StateManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import async_store.state.manager as manager_module

    real = manager_module.decide  # type: ignore[attr-defined]

    def flawed(state: AppState, delta: StateDelta, metadata: Any = None) -> Any:
        if isinstance(delta, SettingSet) and delta.key == "trips-a-bug":
            raise RuntimeError("a flaw in validation")
        return real(state, delta, metadata)

    monkeypatch.setattr(manager_module, "decide", flawed)
    before = manager.read_state()
    outcomes = await asyncio.gather(
        manager.mutate(SettingSet("fine", 1)),
        manager.mutate(SettingSet("trips-a-bug", 2)),
        manager.mutate(SettingSet("also fine", 3)),
        return_exceptions=True,
    )
    assert outcomes[0] == before.version + 1
    assert isinstance(outcomes[1], InvalidDelta)
    assert "could not be validated (RuntimeError)" in str(outcomes[1])
    assert isinstance(outcomes[1].__cause__, RuntimeError)
    assert outcomes[2] == before.version + 2
    assert set(manager.read_state().settings) == {*before.settings, "fine", "also fine"}
    assert "validating a SettingSet failed" in caplog.text


async def test_valid_and_invalid_deltas_interleaved_concurrently(
    sql: SqlService, manager: StateManager
) -> None:
    await manager.mutate(KnowledgeBaseAdd(kb("existing")))
    deltas: list[StateDelta] = []
    for i in range(300):
        if i % 5 == 2:
            deltas.append(KnowledgeBaseAdd(kb("existing")))  # refused: exists already
        elif i % 5 == 4:
            deltas.append(SettingDelete(f"never-{i}"))  # refused: no such setting
        else:
            deltas.append(SettingSet(f"key-{i}", i))
    results = await asyncio.gather(*(manager.mutate(d) for d in deltas), return_exceptions=True)
    valid = [r for d, r in zip(deltas, results, strict=True) if isinstance(d, SettingSet)]
    refused = [r for d, r in zip(deltas, results, strict=True) if not isinstance(d, SettingSet)]
    assert all(isinstance(r, int) for r in valid), valid
    assert all(isinstance(r, InvalidDelta) for r in refused), refused
    assert sorted(r for r in valid if isinstance(r, int)) == list(range(2, 2 + len(valid)))
    state = manager.read_state()
    assert dict(state.settings.items()) == {
        d.key: d.value for d in deltas if isinstance(d, SettingSet)
    }
    assert set(state.knowledge_bases) == {"kb-existing"}
    assert len(await events_of(sql)) == 1 + len(valid)


async def test_calls_before_start_are_refused(sql: SqlService) -> None:
    manager = StateManager(sql, project=False)
    with pytest.raises(StateManagerClosed, match="not started"):
        await manager.mutate(SettingSet("x", 1))


@pytest.mark.parametrize(
    "option", ["queue_size", "snapshot_every", "batch_size"], ids=lambda o: f"{o}-0"
)
def test_bounds_must_be_positive(sql: SqlService, option: str) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        StateManager(sql, **cast(dict[str, Any], {option: 0}))


# -- reads --------------------------------------------------------------------------------


async def test_read_state_returns_the_same_object_until_a_mutation(
    manager: StateManager,
) -> None:
    await manager.mutate(KnowledgeBaseAdd(kb(1)))
    first = manager.read_state()
    assert manager.read_state() is first
    await asyncio.sleep(0)
    assert manager.read_state() is first
    await manager.flush()  # nothing new: still the same object
    assert manager.read_state() is first
    with pytest.raises(InvalidDelta):
        await manager.mutate(KnowledgeBaseAdd(kb(1)))
    assert manager.read_state() is first
    await manager.mutate(SettingSet("k", 1))
    assert manager.read_state() is not first


async def test_an_old_state_is_unchanged_by_later_mutations(manager: StateManager) -> None:
    for seed in SEED:
        await manager.mutate(seed)
    old = manager.read_state()
    frozen = json.dumps(old.to_json(), sort_keys=True)
    await manager.mutate(KnowledgeBaseUpdate(kb(2, "Renamed")))
    await manager.mutate(ScheduleRemove("s-2"))
    await manager.mutate(SettingSet("theme", "light"))
    await manager.mutate(LogAppend("later"))
    await manager.undo()
    assert json.dumps(old.to_json(), sort_keys=True) == frozen
    assert old.knowledge_bases["kb-2"].name == "Docs"
    assert "s-2" in old.schedules
    assert old.settings["theme"] == "dark"
    assert old.logs == ()
    assert manager.read_state().version == old.version + 5
    # A batch builds its state on a copy of its own: neither the state before it nor the one
    # after it moves when the next batch is applied.
    middle = manager.read_state()
    middle_text = json.dumps(middle.to_json(), sort_keys=True)
    await asyncio.gather(*(manager.mutate(SettingSet(f"batch-{n}", n)) for n in range(20)))
    after = manager.read_state()
    after_text = json.dumps(after.to_json(), sort_keys=True)
    await asyncio.gather(*(manager.mutate(SettingSet(f"batch-{n}", -n)) for n in range(20)))
    assert json.dumps(middle.to_json(), sort_keys=True) == middle_text
    assert json.dumps(after.to_json(), sort_keys=True) == after_text
    assert (after.version - middle.version, after.settings["batch-7"]) == (20, 7)
    assert json.dumps(old.to_json(), sort_keys=True) == frozen


async def test_state_does_not_alias_a_callers_mutable_value(
    sql: SqlService, manager: StateManager
) -> None:
    value = {"mode": "dark"}
    await manager.mutate(SettingSet("theme", value))
    value["mode"] = "light"  # the caller reuses its dict
    assert manager.read_state().settings["theme"] == {"mode": "dark"}
    metadata: dict[str, Any] = {"tags": ["a"]}
    await manager.mutate(KnowledgeBaseAdd(kb(1, metadata=metadata)))
    metadata["tags"].append("b")
    assert plain(manager.read_state().knowledge_bases["kb-1"].metadata) == {"tags": ["a"]}
    assert manager.read_state() == await load_state(sql)


def plain(value: Any) -> Any:
    """``value`` with every mapping as a dict and every sequence but str as a list."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


async def test_a_reader_cannot_change_nested_values_of_the_state(
    sql: SqlService, manager: StateManager
) -> None:
    await manager.mutate(SettingSet("theme", {"mode": "dark", "sizes": [1]}))
    await manager.mutate(KnowledgeBaseAdd(kb(1, metadata={"tags": ["a"]})))
    state = manager.read_state()
    theme: Any = state.settings["theme"]
    metadata: Any = state.knowledge_bases["kb-1"].metadata
    attempts: list[Callable[[], object]] = [
        lambda: theme.__setitem__("mode", "light"),
        lambda: theme["sizes"].append(2),
        lambda: metadata.__setitem__("tags", []),
    ]
    for attempt in attempts:
        with contextlib.suppress(TypeError, AttributeError):
            attempt()
    assert plain(state.settings["theme"]) == {"mode": "dark", "sizes": [1]}
    assert plain(state.knowledge_bases["kb-1"].metadata) == {"tags": ["a"]}


# -- snapshots and replay ---------------------------------------------------------------------


def spy_on_reads(sql: SqlService, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[int]]]:
    """Record each ``read_stream`` of ``$app``: its ``from_version`` and the versions read."""
    calls: list[tuple[int, list[int]]] = []
    original = sql.event_store.read_stream

    async def read_stream(
        stream_id: str, from_version: int = 1, *, batch_size: int = 500
    ) -> AsyncIterator[RecordedEvent]:
        seen: list[int] = []
        calls.append((from_version, seen))
        async for event in original(stream_id, from_version, batch_size=batch_size):
            seen.append(event.version)
            yield event

    monkeypatch.setattr(sql.event_store, "read_stream", read_stream)
    return calls


async def test_restart_loads_the_snapshot_and_replays_only_the_tail(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    states: dict[int, AppState] = {}
    async with running(sql, snapshot_every=10) as manager:
        for i in range(95):
            delta: StateDelta
            if i % 7 == 3:
                delta = LogAppend(f"log {i}")
            elif i % 5 == 4:
                delta = KnowledgeBaseUpdate(kb(0, f"Renamed {i}"))
            else:
                delta = KnowledgeBaseAdd(kb(i))
            version = await manager.mutate(delta)
            states[version] = manager.read_state()
            if i == 50:
                await manager.undo()
                states[manager.read_state().version] = manager.read_state()
        live = manager.read_state()
    snapshot = await sql.event_store.load_snapshot(STREAM)
    assert snapshot is not None
    assert 10 <= snapshot.version < live.version
    assert AppState.from_json(snapshot.state) == states[snapshot.version]

    calls = spy_on_reads(sql, monkeypatch)
    restored = await load_state(sql, snapshot_every=10)
    assert restored == live
    assert calls == [(snapshot.version + 1, list(range(snapshot.version + 1, live.version + 1)))]


async def test_replay_without_a_snapshot_equals_the_live_state(sql: SqlService) -> None:
    async with running(sql) as manager:
        for seed in SEED:
            await manager.mutate(seed)
        await manager.mutate(MetricRecord("latency", 1.5, labels={"op": "read"}))
        await manager.mutate(ErrorRecord("boom", source="ingest"))
        await manager.undo()
        live = manager.read_state()
    assert await sql.event_store.load_snapshot(STREAM) is None
    assert await load_state(sql) == live


# -- undo / redo --------------------------------------------------------------------------


async def test_undo_and_redo_return_false_when_there_is_nothing_to_do(
    sql: SqlService, manager: StateManager
) -> None:
    assert await manager.undo() is False
    assert await manager.redo() is False
    await manager.mutate(SettingSet("a", 1))
    assert await manager.redo() is False
    assert await manager.undo() is True
    assert await manager.undo() is False
    assert await manager.redo() is True
    assert await manager.redo() is False
    assert dict(manager.read_state().settings.items()) == {"a": 1}
    # Undo and redo are compensating events: the log only grows.
    assert [e.version for e in await events_of(sql)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("change", "check"),
    [
        pytest.param(
            KnowledgeBaseAdd(kb(2)),
            lambda s: "kb-2" not in s.knowledge_bases,
            id="undo-add",
        ),
        pytest.param(
            KnowledgeBaseUpdate(kb(1, "Renamed")),
            lambda s: s.knowledge_bases["kb-1"].name == "Docs",
            id="undo-update",
        ),
        pytest.param(
            KnowledgeBaseRemove("kb-1"),
            lambda s: s.knowledge_bases["kb-1"] == kb(1),
            id="undo-remove",
        ),
        pytest.param(
            SettingSet("theme", "light"),
            lambda s: s.settings["theme"] == "dark",
            id="undo-setting-replace",
        ),
        pytest.param(
            SettingSet("new", 1), lambda s: "new" not in s.settings, id="undo-setting-add"
        ),
        pytest.param(
            SettingDelete("theme"),
            lambda s: s.settings["theme"] == "dark",
            id="undo-setting-delete",
        ),
    ],
)
async def test_undo_takes_back_the_change_and_redo_restores_it(
    manager: StateManager, change: StateDelta, check: Callable[[AppState], bool]
) -> None:
    await manager.mutate(KnowledgeBaseAdd(kb(1)))
    await manager.mutate(SettingSet("theme", "dark"))
    before = manager.read_state()
    await manager.mutate(change)
    after = manager.read_state()
    assert await manager.undo() is True
    undone = manager.read_state()
    assert check(undone)
    assert undone.knowledge_bases == before.knowledge_bases
    assert undone.settings == before.settings
    assert await manager.redo() is True
    redone = manager.read_state()
    assert redone.knowledge_bases == after.knowledge_bases
    assert redone.settings == after.settings


async def test_a_new_mutation_clears_redo(manager: StateManager) -> None:
    await manager.mutate(KnowledgeBaseAdd(kb(1)))
    await manager.mutate(KnowledgeBaseAdd(kb(2)))
    assert await manager.undo() is True
    assert manager.read_state().can_redo
    await manager.mutate(KnowledgeBaseAdd(kb(3)))
    assert await manager.redo() is False
    assert set(manager.read_state().knowledge_bases) == {"kb-1", "kb-3"}


@pytest.mark.parametrize(
    "not_undoable",
    [
        pytest.param(LogAppend("a log line"), id="log"),
        pytest.param(MetricRecord("latency", 3.0), id="metric"),
        pytest.param(ErrorRecord("boom"), id="error"),
        pytest.param(ErrorsClear(), id="errors-clear"),
    ],
)
async def test_undo_skips_logs_metrics_and_errors(
    manager: StateManager, not_undoable: StateDelta
) -> None:
    await manager.mutate(ErrorRecord("earlier error"))
    await manager.mutate(KnowledgeBaseAdd(kb(1)))
    await manager.mutate(SettingSet("theme", "dark"))
    await manager.mutate(not_undoable)
    recorded = manager.read_state()
    assert await manager.undo() is True
    state = manager.read_state()
    assert "theme" not in state.settings  # the previous undoable change was taken back
    assert "kb-1" in state.knowledge_bases
    # ... and the log, metric or error entry stays.
    assert (state.logs, state.metrics, state.errors) == (
        recorded.logs,
        recorded.metrics,
        recorded.errors,
    )
    assert await manager.undo() is True
    assert "kb-1" not in manager.read_state().knowledge_bases
    assert await manager.undo() is False


async def test_undo_depth_bounds_what_can_be_undone(sql: SqlService) -> None:
    async with running(sql, limits=Limits(undo_depth=3)) as manager:
        for i in range(1, 6):
            await manager.mutate(SettingSet(f"s{i}", i))
        assert [await manager.undo() for _ in range(4)] == [True, True, True, False]
        assert dict(manager.read_state().settings.items()) == {"s1": 1, "s2": 2}
        assert [await manager.redo() for _ in range(4)] == [True, True, True, False]
        assert len(manager.read_state().settings) == 5


@pytest.mark.parametrize(
    "snapshot_every",
    [pytest.param(1000, id="replayed-from-the-log"), pytest.param(1, id="from-a-snapshot")],
)
async def test_undo_history_survives_a_restart(sql: SqlService, snapshot_every: int) -> None:
    async with running(sql, snapshot_every=snapshot_every) as manager:
        await manager.mutate(KnowledgeBaseAdd(kb(1)))
        await manager.mutate(KnowledgeBaseAdd(kb(2)))
        await manager.mutate(KnowledgeBaseAdd(kb(3)))
        assert await manager.undo() is True  # kb-3 goes; it can be redone
    async with running(sql, snapshot_every=snapshot_every) as manager:
        assert set(manager.read_state().knowledge_bases) == {"kb-1", "kb-2"}
        assert await manager.redo() is True
        assert set(manager.read_state().knowledge_bases) == {"kb-1", "kb-2", "kb-3"}
        assert await manager.undo() is True
        assert await manager.undo() is True  # takes back kb-2, made before the restart
    async with running(sql, snapshot_every=snapshot_every) as manager:
        assert set(manager.read_state().knowledge_bases) == {"kb-1"}
        assert await manager.redo() is True
        assert set(manager.read_state().knowledge_bases) == {"kb-1", "kb-2"}
        assert await manager.undo() is True
        assert await manager.undo() is True
        assert await manager.undo() is False
        assert len(manager.read_state().knowledge_bases) == 0


# -- projection -----------------------------------------------------------------------------


async def everything(manager: StateManager) -> None:
    """Changes touching every projected table, including JSON columns and removals."""
    for seed in SEED:
        await manager.mutate(seed)
    await manager.mutate(
        KnowledgeBaseUpdate(
            kb(1, "Docs v2", description="d", embedding_model="e5", metadata={"tags": ["a"]})
        )
    )
    await manager.mutate(
        ToolUpdate(Tool("t-1", "Search", kind="http", config={"n": 1}, enabled=False))
    )
    await manager.mutate(ToolAdd(Tool("t-2", "Gone")))
    await manager.mutate(ToolRemove("t-2"))
    await manager.mutate(
        PipelineUpdate(
            Pipeline(
                "p-1", "Ingest", kb_id="kb-1", steps=({"op": "split"}, "embed"), config={"x": [1]}
            )
        )
    )
    await manager.mutate(
        FlowUpdate(Flow("f-1", "Answer", definition={"nodes": [{"id": "a"}]}, enabled=False))
    )
    await manager.mutate(
        ScheduleUpdate(
            Schedule(
                "s-1",
                "Nightly",
                pipeline_id="p-1",
                cron="0 4 * * *",
                next_run_at="2030-01-01T04:00:00Z",
            )
        )
    )
    await manager.mutate(SettingSet("limits", {"max": 3, "nested": [1, 2.5, None, True]}))
    await manager.mutate(SettingSet("count", 7))
    await manager.mutate(SettingSet("gone", "x"))
    await manager.mutate(SettingDelete("gone"))
    await manager.mutate(LogAppend("not projected"))


@pytest.mark.parametrize(
    "mvp", [pytest.param(False, id="production"), pytest.param(True, id="mvp")]
)
async def test_projection_equals_the_state_after_flush(
    sql_config: Callable[..., SqlConfig], mvp: bool
) -> None:
    async with SqlService(sql_config(mvp=mvp)) as sql, running(sql) as manager:
        await everything(manager)
        version = await manager.flush()
        assert manager.projected_version == version
        await assert_projected(sql, manager.read_state())
        # Settings are stored as JSON text.
        raw = await sql.app.fetch_val("SELECT value FROM settings WHERE key = 'theme'")
        assert raw == '"dark"'
        assert await manager.undo() is True
        await manager.flush()
        await assert_projected(sql, manager.read_state())


async def test_changes_another_writer_appended_to_the_log_are_projected(sql: SqlService) -> None:
    """The projector takes the manager's own changes from memory; a change that reached the
    log another way (here: appended directly, as a second process would) leaves a gap in
    that feed, and is read from the log, in order with the rest."""
    async with running(sql) as manager:
        await manager.mutate(SettingSet("theme", "dark"))
        await manager.flush()
        await sql.event_store.append(
            STREAM,
            [NewEvent("SettingSet.v1", {"key": "outside", "value": 1})],
            expected_version=1,
        )
        with pytest.raises(ConcurrencyError):  # the manager learns of it, and reloads
            await manager.mutate(SettingSet("theme", "light"))
        assert manager.read_state().settings["outside"] == 1
        version = await manager.mutate(SettingSet("theme", "light"))
        assert version == 3
        assert await manager.flush() == 3
        await assert_projected(sql, manager.read_state())
        assert set(manager.read_state().settings) == {"theme", "outside"}


async def test_the_projector_takes_the_managers_changes_from_memory(sql: SqlService) -> None:
    """While it keeps up with the feed, the projector reads nothing back from the log."""
    async with running(sql) as manager:
        await manager.mutate(SettingSet("warm", 0))
        await manager.flush()
        reads = sql.events.metrics.latency["read"].count
        for n in range(20):
            await asyncio.gather(*(manager.mutate(SettingSet(f"k{i}", n)) for i in range(10)))
        await manager.flush()
        assert sql.events.metrics.latency["read"].count == reads
        await assert_projected(sql, manager.read_state())


async def test_a_backlog_longer_than_a_batch_is_projected_without_waiting_for_a_poll(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started behind the log (here: changes made without projecting), the projector reads
    batch after batch until it has caught up, on its own: no flush(), no poll."""
    monkeypatch.setattr(projector_module, "_POLL", 3600.0)
    async with running(sql, project=False) as manager:
        await asyncio.gather(*(manager.mutate(SettingSet(f"k{n}", n)) for n in range(1_200)))
    async with running(sql) as manager:
        async with asyncio.timeout(30):  # a bound against a stall, not a measure of speed
            await until(lambda: manager.projection_lag == 0)
        assert manager.projected_version == manager.read_state().version == 1_200
        await assert_projected(sql, manager.read_state())


async def test_a_burst_of_sets_and_deletes_of_one_key_is_projected_in_order(
    sql: SqlService,
) -> None:
    """One projection batch writes runs of the same statement together; the order of the
    changes still decides what the table holds."""
    async with running(sql) as manager:
        pending = []
        for n in range(30):
            pending.append(manager.mutate_nowait(SettingSet("k", n)))
            if n % 7 == 3:
                pending.append(manager.mutate_nowait(SettingDelete("k")))
        pending.append(manager.mutate_nowait(SettingSet("other", "x")))
        pending.append(manager.mutate_nowait(SettingDelete("other")))
        await asyncio.gather(*pending)
        await manager.flush()
        await assert_projected(sql, manager.read_state())
        rows = await sql.app.fetch_all("SELECT key, value FROM settings")
        assert [tuple(row) for row in rows] == [("k", "29")]


async def test_long_runs_of_one_kind_of_change_are_projected_in_order(sql: SqlService) -> None:
    """Runs longer than one multi-row statement: a later change of a key in the same run, or
    in the next statement of it, wins; deletes run in chunks too."""
    async with running(sql) as manager:
        pending = [manager.mutate_nowait(SettingSet(f"k{n % 5}", n)) for n in range(70)]
        pending += [manager.mutate_nowait(SettingDelete(f"k{n}")) for n in range(3)]
        pending += [manager.mutate_nowait(KnowledgeBaseAdd(kb(n))) for n in range(40)]
        pending += [manager.mutate_nowait(KnowledgeBaseRemove(f"kb-{n}")) for n in range(35)]
        await asyncio.gather(*pending)
        await manager.flush()
        await assert_projected(sql, manager.read_state())
        rows = await sql.app.fetch_all("SELECT key, value FROM settings ORDER BY key")
        assert [tuple(row) for row in rows] == [("k3", "68"), ("k4", "69")]
        kbs = await sql.app.fetch_all("SELECT id FROM knowledge_bases ORDER BY id")
        assert sorted(row[0] for row in kbs) == sorted(f"kb-{n}" for n in range(35, 40))


async def test_a_manager_started_inside_a_transaction_block_works_outside_it(
    sql: SqlService,
) -> None:
    """The manager's consumer and projector are tasks of their own: started inside a caller's
    ``transaction()`` block, they do not run their writes in it (to be rolled back with it)."""
    async with running(sql, project=False) as manager:
        for n in range(5):
            await manager.mutate(SettingSet(f"key-{n}", n))

    class Undo(Exception):
        pass

    manager = StateManager(sql)
    with pytest.raises(Undo):
        async with sql.app.transaction():
            await manager.__aenter__()  # the projector starts here, with 5 changes to project
            await asyncio.sleep(0.05)
            raise Undo
    try:
        version = await manager.mutate(SettingSet("after", 1))
        assert await manager.flush() == version == 6
        await assert_projected(sql, manager.read_state())
    finally:
        await manager.close()


DOC_HASH = "0" * 64

TAMPERING = [
    pytest.param(["DELETE FROM knowledge_bases WHERE id = 'kb-2'"], id="delete-a-row"),
    pytest.param(["UPDATE knowledge_bases SET name = 'Tampered' WHERE id = 'kb-1'"], id="rename"),
    pytest.param(
        ["UPDATE tools SET config = '{\"evil\":1}', enabled = 0"], id="change-json-column"
    ),
    pytest.param(
        ["INSERT INTO knowledge_bases(id, name) VALUES ('stray', 'Stray')"], id="stray-row"
    ),
    pytest.param(["INSERT INTO tools(id, name) VALUES ('stray', 'Stray')"], id="stray-tool"),
    pytest.param(
        ["DELETE FROM pipelines WHERE id = 'p-1'"], id="delete-pipeline-cascades-schedule"
    ),
    pytest.param(["DELETE FROM settings WHERE key = 'theme'"], id="delete-setting"),
    pytest.param(["UPDATE settings SET value = '\"light\"'"], id="change-setting"),
    pytest.param(["INSERT INTO settings(key, value) VALUES ('stray', '1')"], id="stray-setting"),
    pytest.param(["UPDATE projection_checkpoints SET position = 0"], id="reset-checkpoint"),
    pytest.param(["DELETE FROM flows WHERE id = 'f-1'"], id="delete-flow-cascades-schedule"),
    pytest.param(
        [
            "INSERT INTO knowledge_bases(id, name) VALUES ('stray', 'Stray')",
            "INSERT INTO pipelines(id, name, kb_id) VALUES ('stray-p', 'Stray', 'stray')",
        ],
        id="stray-pipeline-on-stray-kb",
    ),
]


@pytest.mark.parametrize("tampering", TAMPERING)
async def test_rebuild_projections_repairs_tampered_tables(
    sql: SqlService, tampering: list[str]
) -> None:
    async with running(sql) as manager:
        await tamper_and_rebuild(sql, manager, tampering)


async def tamper_and_rebuild(sql: SqlService, manager: StateManager, tampering: list[str]) -> None:
    for seed in SEED:
        await manager.mutate(seed)
    await manager.flush()
    await sql.app.execute(
        "INSERT INTO documents(id, kb_id, title, content_hash, size_bytes)"
        " VALUES ('doc-1', 'kb-1', 'Guide', ?, 10)",
        (DOC_HASH,),
    )
    for statement in tampering:
        await sql.app.execute(statement)
    await manager.rebuild_projections()
    await assert_projected(sql, manager.read_state())
    checkpoint = await sql.app.fetch_val("SELECT position FROM projection_checkpoints")
    assert checkpoint == manager.read_state().version
    # The documents of a knowledge base that still exists survive the rebuild.
    assert await sql.app.fetch_val("SELECT title FROM documents WHERE id = 'doc-1'") == "Guide"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a\x00b", id="nul-inside"),
        pytest.param(
            "\x00abc",
            id="nul-first",
        ),
    ],
)
@pytest.mark.parametrize("entity_type", [KnowledgeBase, Tool, Flow], ids=lambda t: t.__name__)
async def test_every_accepted_entity_can_be_projected(
    sql: SqlService, manager: StateManager, name: str, entity_type: type[Entity]
) -> None:
    """A delta the state accepts can always be projected (the schema's comment asks the state
    to refuse whatever its CHECKs refuse)."""
    add = {KnowledgeBase: KnowledgeBaseAdd, Tool: ToolAdd, Flow: FlowAdd}[entity_type]
    try:
        entity = entity_type("e-1", name)
    except InvalidDelta:
        return  # refused up front: as good as projectable
    await manager.mutate(cast(Any, add)(entity))
    await manager.flush()
    await assert_projected(sql, manager.read_state())


async def test_projector_resumes_from_its_checkpoint_after_a_restart(sql: SqlService) -> None:
    async with running(sql) as manager:
        await manager.mutate(KnowledgeBaseAdd(kb(1)))
        await manager.mutate(SettingSet("theme", "dark"))
        version = await manager.flush()
    assert await sql.app.fetch_val("SELECT position FROM projection_checkpoints") == version
    # A mark only a replay from zero would overwrite.
    await sql.app.execute("UPDATE knowledge_bases SET description = 'marked' WHERE id = 'kb-1'")
    async with running(sql) as manager:
        assert manager.projected_version == version
        await manager.mutate(KnowledgeBaseAdd(kb(2)))
        await manager.mutate(SettingDelete("theme"))
        assert await manager.flush() == version + 2
        tables = await projection(sql)
        state = manager.read_state()
    assert tables["knowledge_bases"]["kb-1"]["description"] == "marked"
    assert set(tables["knowledge_bases"]) == {"kb-1", "kb-2"}
    assert tables["settings"] == {}
    assert await sql.app.fetch_val("SELECT position FROM projection_checkpoints") == state.version


async def test_a_close_during_an_empty_projector_read_is_not_lost(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = StateManager(sql)
    await manager.start()
    await manager.mutate(SettingSet("a", 1))
    await manager.flush()

    in_empty_read, release = asyncio.Event(), asyncio.Event()
    original = sql.event_store.read_stream

    async def gated(
        stream_id: str, from_version: int = 1, *, batch_size: int = 500
    ) -> AsyncIterator[RecordedEvent]:
        found = 0
        async for event in original(stream_id, from_version, batch_size=batch_size):
            found += 1
            yield event
        if not found:  # the read saw nothing new: hold it here, as a slow read would be
            in_empty_read.set()
            await release.wait()

    monkeypatch.setattr(sql.event_store, "read_stream", gated)
    await manager.mutate(SettingSet("b", 2))  # projected, then an empty read follows
    await until(in_empty_read.is_set)
    closing = asyncio.ensure_future(manager.close())
    projector = manager._projector
    assert projector is not None
    await until(lambda: projector._closed, closing)  # close() asked the projector to stop
    release.set()
    try:
        # No I/O is left: the projector and close() end within a few turns of the loop.
        for _ in range(100):
            if closing.done():
                break
            await asyncio.sleep(0)
        assert closing.done(), "the projector slept through close()"
    finally:
        await closing


# -- subscribe --------------------------------------------------------------------------------


async def test_subscribe_yields_each_accepted_change_in_order_and_ends_on_close(
    sql: SqlService,
) -> None:
    manager = StateManager(sql)
    await manager.start()
    received: list[tuple[int, StateDelta]] = []

    async def collect() -> None:
        async for item in manager.subscribe():
            received.append(item)

    reader = asyncio.ensure_future(collect())
    await asyncio.sleep(0)  # the subscription starts with the generator's first step
    try:
        await manager.mutate(KnowledgeBaseAdd(kb(1)))
        with pytest.raises(InvalidDelta):
            await manager.mutate(KnowledgeBaseAdd(kb(1)))
        await manager.mutate(SettingSet("theme", "dark"))
        await manager.mutate(LogAppend("hello"))
        await manager.undo()
        await asyncio.gather(*(manager.mutate(SettingSet(f"k{i}", i)) for i in range(20)))
    finally:
        await manager.close()
    async with asyncio.timeout(10):
        await reader
    versions = [version for version, _ in received]
    assert versions == list(range(1, 25))
    assert received[0] == (1, KnowledgeBaseAdd(kb(1)))
    assert received[1] == (2, SettingSet("theme", "dark"))
    log = received[2][1]
    assert isinstance(log, LogAppend)
    assert log.message == "hello"
    assert log == manager.read_state().logs[-1]
    assert received[3] == (4, SettingDelete("theme"))  # the undo's compensating change
    assert {d for _, d in received[4:]} == {SettingSet(f"k{i}", i) for i in range(20)}
    # The deltas are those the log records, version by version.
    events = await events_of(sql)
    assert [e.version for e in events] == versions


async def test_a_subscriber_that_falls_behind_gets_an_error(sql: SqlService) -> None:
    async with running(sql, subscriber_buffer=3) as manager:
        subscription = manager.subscribe()
        first = asyncio.ensure_future(anext(subscription))
        await asyncio.sleep(0)  # subscribed
        for i in range(10):
            await manager.mutate(SettingSet(f"k{i}", i))
        assert await first == (1, SettingSet("k0", 0))
        # Three buffered, then the overflow ends the subscription with an error.
        assert [await anext(subscription) for _ in range(3)] == [
            (v, SettingSet(f"k{v - 1}", v - 1)) for v in (2, 3, 4)
        ]
        with pytest.raises(StoreError, match="fell more than 3 changes behind"):
            await anext(subscription)


# -- references -----------------------------------------------------------------------------


async def test_references_follow_updates_undo_and_restart(sql: SqlService) -> None:
    async with running(sql, snapshot_every=3) as manager:
        await manager.mutate(KnowledgeBaseAdd(kb(1)))
        await manager.mutate(KnowledgeBaseAdd(kb(2)))
        await manager.mutate(PipelineAdd(Pipeline("p-1", "P", kb_id="kb-1")))
        await manager.mutate(PipelineUpdate(Pipeline("p-1", "P", kb_id="kb-2")))
        with pytest.raises(InvalidDelta, match="still referred to"):
            await manager.mutate(KnowledgeBaseRemove("kb-2"))
        await manager.mutate(KnowledgeBaseRemove("kb-1"))  # no longer used
        await manager.undo()  # kb-1 back
        await manager.undo()  # p-1 points at kb-1 again
        with pytest.raises(InvalidDelta, match="still referred to"):
            await manager.mutate(KnowledgeBaseRemove("kb-1"))
        live = manager.read_state()
    async with running(sql, snapshot_every=3) as manager:
        assert manager.read_state() == live
        assert manager.read_state().references == live.references
        await manager.mutate(KnowledgeBaseRemove("kb-2"))
        with pytest.raises(InvalidDelta, match="still referred to"):
            await manager.mutate(KnowledgeBaseRemove("kb-1"))
        await manager.mutate(PipelineRemove("p-1"))
        await manager.mutate(KnowledgeBaseRemove("kb-1"))
        assert len(manager.read_state().references) == 0
