"""Entities, deltas and ``AppState`` without a database.

Entities validate themselves on construction (the same rules as the app_meta CHECK constraints)
and raise :class:`InvalidDelta` saying what is wrong and why; every delta maps to a versioned event
type and back; ``AppState`` is read-only all the way down.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, cast

import pytest

from async_store import AppState, InvalidDelta
from async_store._json import encode_json
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
from async_store.state import deltas as deltas_module
from async_store.state.app_state import Limits, apply, decide
from async_store.state.deltas import delta_from_event, event_from_delta, inverse
from async_store.state.entities import check_cron

ENTITY_TYPES: list[type[Entity]] = [KnowledgeBase, Tool, Pipeline, Schedule, Flow]


def make(entity_type: type[Entity], entity_id: str = "e-1", name: str = "Name") -> Entity:
    """A valid entity of ``entity_type`` (schedules need a cron or an interval)."""
    if entity_type is Schedule:
        return Schedule(entity_id, name, interval_seconds=60)
    return entity_type(entity_id, name)


# -- entity validation ------------------------------------------------------------------------


@pytest.mark.parametrize("entity_type", ENTITY_TYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize(
    ("entity_id", "name", "fragment"),
    [
        pytest.param("", "Name", "id must be a non-empty string", id="empty-id"),
        pytest.param("e-1", "", "name must be a non-empty string", id="empty-name"),
        pytest.param(5, "Name", "id must be a non-empty string", id="int-id"),
        pytest.param("e-1", None, "name must be a non-empty string", id="none-name"),
    ],
)
def test_entity_needs_an_id_and_a_name(
    entity_type: type[Entity], entity_id: Any, name: Any, fragment: str
) -> None:
    extra: dict[str, Any] = {"interval_seconds": 60} if entity_type is Schedule else {}
    with pytest.raises(InvalidDelta, match=fragment) as caught:
        entity_type(entity_id, name, **extra)
    assert entity_type.label in str(caught.value)


@pytest.mark.parametrize(
    ("chunk_size", "chunk_overlap", "fragment"),
    [
        pytest.param(100, 100, "chunk_overlap must be >= 0 and < chunk_size", id="overlap-equal"),
        pytest.param(100, 250, "chunk_overlap must be >= 0 and < chunk_size", id="overlap-larger"),
        pytest.param(100, -1, "chunk_overlap must be >= 0", id="overlap-negative"),
        pytest.param(0, 0, "chunk_size must be > 0", id="size-zero"),
        pytest.param(-10, 0, "chunk_size must be > 0", id="size-negative"),
        pytest.param("100", 10, "chunk_size must be", id="size-string"),
    ],
)
def test_knowledge_base_chunking_is_checked(
    chunk_size: Any, chunk_overlap: Any, fragment: str
) -> None:
    with pytest.raises(InvalidDelta, match=fragment) as caught:
        KnowledgeBase("kb-1", "Docs", chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    assert "'kb-1'" in str(caught.value)


def test_knowledge_base_overlap_message_gives_both_numbers() -> None:
    with pytest.raises(InvalidDelta, match=r"\(300 vs 200\)"):
        KnowledgeBase("kb-1", "Docs", chunk_size=200, chunk_overlap=300)


@pytest.mark.parametrize(
    ("chunk_size", "chunk_overlap"),
    [pytest.param(1, 0, id="smallest"), pytest.param(1000, 999, id="overlap-just-below")],
)
def test_knowledge_base_chunking_bounds_are_accepted(chunk_size: int, chunk_overlap: int) -> None:
    kb = KnowledgeBase("kb-1", "Docs", chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    assert (kb.chunk_size, kb.chunk_overlap) == (chunk_size, chunk_overlap)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        pytest.param(
            {"cron": "@daily", "interval_seconds": 60},
            "give exactly one of cron and interval_seconds",
            id="both",
        ),
        pytest.param({}, "give exactly one of cron and interval_seconds", id="neither"),
        pytest.param({"interval_seconds": 0}, "must be a positive integer", id="interval-zero"),
        pytest.param(
            {"interval_seconds": -5}, "must be a positive integer", id="interval-negative"
        ),
        pytest.param({"interval_seconds": 1.5}, "interval_seconds must be", id="interval-float"),
        pytest.param({"interval_seconds": True}, "interval_seconds must be", id="interval-bool"),
        pytest.param({"cron": "61 * * * *"}, "invalid cron '61 \\* \\* \\* \\*'", id="bad-cron"),
    ],
)
def test_schedule_timing_is_checked(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidDelta, match=fragment) as caught:
        Schedule("s-1", "Nightly", **options)
    assert "schedule 's-1'" in str(caught.value)


GOOD_CRON = [
    pytest.param("* * * * *", id="every-minute"),
    pytest.param("*/5 * * * *", id="step"),
    pytest.param("0 0 * * 0", id="sunday-as-0"),
    pytest.param("0 0 * * 7", id="sunday-as-7"),
    pytest.param("0 9-17 * * mon-fri", id="day-names"),
    pytest.param("15,45 * * * *", id="list"),
    pytest.param("0 0 1 jan *", id="month-name"),
    pytest.param("0 12 * JAN-MAR *", id="upper-case-names"),
    pytest.param("1-5/2,10 * * * *", id="range-step-and-list"),
    pytest.param("0 0 1-31/2 * *", id="day-of-month-step"),
    pytest.param("59 23 31 12 6", id="upper-bounds"),
    pytest.param("0\t0 * * *", id="tab-separated"),
    pytest.param("@daily", id="macro-daily"),
    pytest.param("@hourly", id="macro-hourly"),
    pytest.param("@yearly", id="macro-yearly"),
    pytest.param(" @weekly ", id="macro-padded"),
    pytest.param("@MONTHLY", id="macro-upper-case"),
]

BAD_CRON = [
    pytest.param("", "expected 5 fields, found 0", id="empty"),
    pytest.param("* * * *", "expected 5 fields, found 4", id="four-fields"),
    pytest.param("* * * * * *", "expected 5 fields, found 6", id="six-fields"),
    pytest.param("60 * * * *", "minute: values must lie in 0..59", id="minute-60"),
    pytest.param("* 24 * * *", "hour: values must lie in 0..23", id="hour-24"),
    pytest.param("* * 0 * *", "day of month: values must lie in 1..31", id="day-0"),
    pytest.param("* * 32 * *", "day of month: values must lie in 1..31", id="day-32"),
    pytest.param("* * * 0 *", "month: values must lie in 1..12", id="month-0"),
    pytest.param("* * * 13 *", "month: values must lie in 1..12", id="month-13"),
    pytest.param("* * * * 8", "day of week: values must lie in 0..7", id="weekday-8"),
    pytest.param("*/0 * * * *", "minute: step 0", id="step-zero"),
    pytest.param("5-1 * * * *", "minute: range 5-1 runs backwards", id="backwards-range"),
    pytest.param("foo * * * *", "minute: 'foo' is not a number", id="word"),
    pytest.param("mon * * * *", "minute: 'mon' is not a number", id="day-name-as-minute"),
    pytest.param("* * * xyz *", "month: 'xyz' is not a number", id="unknown-month-name"),
    pytest.param("1,,2 * * * *", "minute: cannot read ''", id="empty-list-item"),
    pytest.param("-1 * * * *", "minute: cannot read '-1'", id="negative"),
    pytest.param("*-5 * * * *", "minute: cannot read '\\*-5'", id="star-range"),
    pytest.param("@reboot", "expected 5 fields, found 1", id="macro-reboot"),
    pytest.param("@every_minute", "expected 5 fields, found 1", id="unknown-macro"),
]


@pytest.mark.parametrize("expression", GOOD_CRON)
def test_good_cron_expressions_are_accepted(expression: str) -> None:
    assert check_cron(expression) is None
    assert Schedule("s-1", "S", cron=expression).cron == expression


@pytest.mark.parametrize(("expression", "fragment"), BAD_CRON)
def test_bad_cron_expressions_are_refused_with_the_reason(expression: str, fragment: str) -> None:
    assert check_cron(expression) is not None
    with pytest.raises(InvalidDelta, match=fragment) as caught:
        Schedule("s-1", "S", cron=expression)
    assert f"invalid cron {expression!r}" in str(caught.value)


TYPE_ERRORS = [
    pytest.param(Tool, {"enabled": "yes"}, "enabled must be bool", id="enabled-str"),
    pytest.param(Tool, {"enabled": 1}, "enabled must be bool", id="enabled-int"),
    pytest.param(Tool, {"kind": 5}, "kind must be str", id="kind-int"),
    pytest.param(KnowledgeBase, {"description": None}, "description must be str", id="desc-none"),
    pytest.param(KnowledgeBase, {"metadata": [1]}, "metadata must be", id="metadata-list"),
    pytest.param(Pipeline, {"kb_id": 5}, "kb_id must be", id="kb-id-int"),
    pytest.param(Pipeline, {"steps": {"a": 1}}, "steps must be", id="steps-dict"),
    pytest.param(
        Schedule, {"cron": "@daily", "next_run_at": 5}, "next_run_at must be", id="next-run-int"
    ),
    pytest.param(Flow, {"definition": None}, "definition must be", id="definition-none"),
]


@pytest.mark.parametrize(("entity_type", "fields", "fragment"), TYPE_ERRORS)
def test_entity_fields_are_type_checked(
    entity_type: type[Entity], fields: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidDelta, match=fragment) as caught:
        entity_type("x-1", "Name", **fields)
    assert f"{entity_type.label} 'x-1'" in str(caught.value)


def test_entities_are_frozen() -> None:
    kb = KnowledgeBase("kb-1", "Docs")
    with pytest.raises(dataclasses.FrozenInstanceError):
        kb.name = "Other"  # type: ignore[misc]


@pytest.mark.parametrize("entity_type", ENTITY_TYPES, ids=lambda t: t.__name__)
def test_entity_json_round_trip(entity_type: type[Entity]) -> None:
    entity = make(entity_type)
    text = encode_json(entity.to_json(), "entity")
    assert entity_type.from_json(json.loads(text)) == entity


def test_entity_json_round_trip_keeps_nested_values() -> None:
    pipeline = Pipeline(
        "p-1",
        "Ingest",
        kb_id="kb-1",
        steps=({"op": "split", "sizes": [1, 2]}, "embed"),
        config={"retries": 3, "nested": {"list": [1, "a", None]}},
        enabled=False,
    )
    data = json.loads(encode_json(pipeline.to_json(), "pipeline"))
    assert Pipeline.from_json(data) == pipeline


def test_entity_from_json_refuses_unknown_fields() -> None:
    with pytest.raises(InvalidDelta, match=r"knowledge base: unknown field\(s\) \['colour'\]"):
        KnowledgeBase.from_json({"id": "kb-1", "name": "Docs", "colour": "red"})


# -- deltas and events ------------------------------------------------------------------------

KB = KnowledgeBase("kb-1", "Docs", description="d", chunk_size=500, chunk_overlap=50)
KB_V2 = KnowledgeBase("kb-1", "Docs v2", metadata={"tags": ["a", "b"]})
TOOL = Tool("t-1", "Search", kind="http", config={"url": "https://example.org"})
TOOL_V2 = Tool("t-1", "Search", enabled=False)
PIPELINE = Pipeline("p-1", "Ingest", kb_id="kb-1", steps=({"op": "split"}, {"op": "embed"}))
PIPELINE_V2 = Pipeline("p-1", "Ingest", kb_id=None)
SCHEDULE = Schedule("s-1", "Nightly", pipeline_id="p-1", cron="0 3 * * *")
SCHEDULE_V2 = Schedule("s-1", "Hourly", flow_id="f-1", interval_seconds=3600, enabled=False)
FLOW = Flow("f-1", "Answer", definition={"nodes": [{"id": "a"}], "edges": []})
FLOW_V2 = Flow("f-1", "Answer v2")

ROUND_TRIPS = [
    pytest.param(KnowledgeBaseAdd(KB), None, id="KnowledgeBaseAdd"),
    pytest.param(KnowledgeBaseUpdate(KB_V2), KB, id="KnowledgeBaseUpdate"),
    pytest.param(KnowledgeBaseRemove("kb-1"), KB, id="KnowledgeBaseRemove"),
    pytest.param(ToolAdd(TOOL), None, id="ToolAdd"),
    pytest.param(ToolUpdate(TOOL_V2), TOOL, id="ToolUpdate"),
    pytest.param(ToolRemove("t-1"), TOOL, id="ToolRemove"),
    pytest.param(PipelineAdd(PIPELINE), None, id="PipelineAdd"),
    pytest.param(PipelineUpdate(PIPELINE_V2), PIPELINE, id="PipelineUpdate"),
    pytest.param(PipelineRemove("p-1"), PIPELINE, id="PipelineRemove"),
    pytest.param(ScheduleAdd(SCHEDULE), None, id="ScheduleAdd"),
    pytest.param(ScheduleUpdate(SCHEDULE_V2), SCHEDULE, id="ScheduleUpdate"),
    pytest.param(ScheduleRemove("s-1"), SCHEDULE, id="ScheduleRemove"),
    pytest.param(FlowAdd(FLOW), None, id="FlowAdd"),
    pytest.param(FlowUpdate(FLOW_V2), FLOW, id="FlowUpdate"),
    pytest.param(FlowRemove("f-1"), FLOW, id="FlowRemove"),
    pytest.param(SettingSet("theme", {"mode": "dark", "size": 12}), None, id="SettingSet-new"),
    pytest.param(SettingSet("theme", "light"), {"value": "dark"}, id="SettingSet-replace"),
    pytest.param(SettingDelete("theme"), {"value": [1, 2.5, None]}, id="SettingDelete"),
    pytest.param(
        LogAppend("started", level="warning", source="ui", at="2025-01-01T00:00:00.000000Z"),
        None,
        id="LogAppend",
    ),
    pytest.param(
        MetricRecord("latency", 1.5, labels={"op": "read"}, at="2025-01-01T00:00:00.000000Z"),
        None,
        id="MetricRecord",
    ),
    pytest.param(
        ErrorRecord("boom", source="ingest", kind="IOError", at="2025-01-01T00:00:00.000000Z"),
        None,
        id="ErrorRecord",
    ),
    pytest.param(ErrorsClear(), None, id="ErrorsClear"),
]


def _delta_classes() -> set[type[StateDelta]]:
    """Every concrete delta class the deltas module exports (those with an event name)."""
    found: set[type[StateDelta]] = set()
    for name in deltas_module.__all__:
        value = getattr(deltas_module, name)
        if isinstance(value, type) and issubclass(value, StateDelta) and value.event_name:
            found.add(value)
    return found


def test_round_trip_table_covers_every_delta_class() -> None:
    covered = {type(param.values[0]) for param in ROUND_TRIPS}
    assert covered == _delta_classes()


@pytest.mark.parametrize(("delta", "before"), ROUND_TRIPS)
def test_every_delta_maps_to_a_versioned_event_and_back(delta: StateDelta, before: Any) -> None:
    event_type, data = event_from_delta(delta, before)
    assert event_type == f"{delta.event_name}.v1"
    # What is stored is JSON text: the round trip must survive encoding.
    stored = json.loads(encode_json(data, event_type))
    back, back_before = delta_from_event(event_type, stored)
    assert type(back) is type(delta)
    assert back == delta
    if delta.undoable:
        assert back_before == before
    else:
        assert "before" not in data
        assert back_before is None


def test_event_types_are_distinct() -> None:
    names = [cls.event_name for cls in _delta_classes()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("KnowledgeBaseAdded.v2", id="future-version"),
        pytest.param("KnowledgeBaseAdded", id="no-version"),
        pytest.param("KbCreated.v1", id="unknown-name"),
        pytest.param("", id="empty"),
    ],
)
def test_unknown_event_types_are_refused(event_type: str) -> None:
    with pytest.raises(InvalidDelta, match="unknown state event type"):
        delta_from_event(event_type, {"entity": KB.to_json()})


def test_event_from_delta_refuses_a_foreign_delta() -> None:
    @dataclasses.dataclass(frozen=True)
    class Foreign(StateDelta):
        event_name = "Foreign"

    with pytest.raises(InvalidDelta, match="Foreign is not a delta"):
        event_from_delta(Foreign(), None)


@pytest.mark.parametrize(
    ("delta", "before", "expected"),
    [
        pytest.param(KnowledgeBaseAdd(KB), None, KnowledgeBaseRemove("kb-1"), id="add"),
        pytest.param(KnowledgeBaseUpdate(KB_V2), KB, KnowledgeBaseUpdate(KB), id="update"),
        pytest.param(KnowledgeBaseRemove("kb-1"), KB, KnowledgeBaseAdd(KB), id="remove"),
        pytest.param(SettingSet("k", 1), None, SettingDelete("k"), id="set-new"),
        pytest.param(SettingSet("k", 1), {"value": 0}, SettingSet("k", 0), id="set-replace"),
        pytest.param(SettingDelete("k"), {"value": 0}, SettingSet("k", 0), id="delete"),
    ],
)
def test_inverse_takes_a_change_back(delta: StateDelta, before: Any, expected: StateDelta) -> None:
    assert inverse(delta, before) == expected


@pytest.mark.parametrize(
    "delta",
    [
        pytest.param(LogAppend("x"), id="log"),
        pytest.param(MetricRecord("m", 1), id="metric"),
        pytest.param(ErrorRecord("e"), id="error"),
        pytest.param(ErrorsClear(), id="errors-clear"),
    ],
)
def test_logs_metrics_and_errors_have_no_inverse(delta: StateDelta) -> None:
    assert not delta.undoable
    with pytest.raises(InvalidDelta, match="cannot be undone"):
        inverse(delta, None)


def test_deltas_are_frozen() -> None:
    delta = SettingSet("k", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delta.key = "other"  # type: ignore[misc]


# -- AppState -------------------------------------------------------------------------------


def populated_state() -> AppState:
    """A state holding one of everything, built with the pure decide/apply functions."""
    limits = Limits()
    state = AppState()
    for delta in (
        KnowledgeBaseAdd(KB),
        ToolAdd(TOOL),
        PipelineAdd(PIPELINE),
        FlowAdd(FLOW),
        ScheduleAdd(SCHEDULE),
        SettingSet("theme", "dark"),
        LogAppend("hello"),
        MetricRecord("m", 1.0),
        ErrorRecord("e"),
    ):
        state = apply(state, decide(state, delta), limits)
    return state


MAPPINGS = ["knowledge_bases", "tools", "pipelines", "schedules", "flows", "settings"]
SEQUENCES = ["logs", "metrics", "errors"]


@pytest.mark.parametrize("attribute", MAPPINGS)
def test_app_state_mappings_are_read_only(attribute: str) -> None:
    state = populated_state()
    mapping = cast(Any, getattr(state, attribute))
    key = next(iter(mapping))
    before = dict(mapping.items())
    with pytest.raises(TypeError):
        mapping[key] = "replaced"
    with pytest.raises(TypeError):
        mapping["new-key"] = "added"
    with pytest.raises(TypeError):
        del mapping[key]
    for method in ("clear", "pop", "setdefault", "popitem"):
        assert not hasattr(mapping, method), method
    # The persistent map's "changes" build new maps: the state's own map stays as it was.
    assert mapping.update({"new-key": "added"}) is not mapping
    assert mapping.set(key, "replaced") is not mapping
    assert mapping.delete(key) is not mapping
    assert dict(getattr(state, attribute).items()) == before


@pytest.mark.parametrize("attribute", SEQUENCES)
def test_app_state_sequences_are_read_only(attribute: str) -> None:
    state = populated_state()
    sequence = cast(Any, getattr(state, attribute))
    assert len(sequence) == 1
    with pytest.raises(TypeError):
        sequence[0] = "replaced"
    assert not hasattr(sequence, "append")


@pytest.mark.parametrize("attribute", ["version", *MAPPINGS, *SEQUENCES])
def test_app_state_attributes_cannot_be_rebound(attribute: str) -> None:
    state = populated_state()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(state, attribute, getattr(state, attribute))


def test_apply_builds_a_new_state_and_leaves_the_old_one_alone() -> None:
    state = populated_state()
    snapshot = state.to_json()
    after = apply(state, decide(state, ToolRemove("t-1")), Limits())
    assert after is not state
    assert "t-1" not in after.tools
    assert "t-1" in state.tools
    assert state.to_json() == snapshot
    assert after.version == state.version + 1


def test_app_state_json_round_trip() -> None:
    state = populated_state()
    text = encode_json(state.to_json(), "state")
    assert AppState.from_json(json.loads(text)) == state


BOUNDED = [
    pytest.param(lambda i: LogAppend(f"entry {i}"), "logs", id="logs"),
    pytest.param(lambda i: MetricRecord(f"entry {i}", i), "metrics", id="metrics"),
    pytest.param(lambda i: ErrorRecord(f"entry {i}"), "errors", id="errors"),
]


@pytest.mark.parametrize(("factory", "attribute"), BOUNDED)
def test_bounded_sequences_drop_the_oldest_first(
    factory: Callable[[int], StateDelta], attribute: str
) -> None:
    limits = Limits(**{attribute: 3})
    state = AppState()
    for i in range(5):
        state = apply(state, decide(state, factory(i)), limits)
    kept: tuple[LogAppend | MetricRecord | ErrorRecord, ...] = getattr(state, attribute)
    labels = [entry.name if isinstance(entry, MetricRecord) else entry.message for entry in kept]
    assert labels == ["entry 2", "entry 3", "entry 4"]


# -- decide: what the state refuses without looking at a database -------------------------------


@pytest.mark.parametrize(
    ("delta", "fragment"),
    [
        pytest.param(
            KnowledgeBaseAdd(cast(Any, TOOL)),
            "KnowledgeBaseAdd takes a KnowledgeBase, not Tool",
            id="add-wrong-entity-type",
        ),
        pytest.param(
            ToolUpdate(cast(Any, KB)),
            "ToolUpdate takes a Tool, not KnowledgeBase",
            id="update-wrong-entity-type",
        ),
        pytest.param(SettingSet("", 1), "a setting key must be a non-empty string", id="empty-key"),
        pytest.param(SettingSet("k", (1, 2)), "setting 'k' is not JSON", id="tuple-value"),
        pytest.param(SettingSet("k", {1, 2}), "setting 'k' is not JSON", id="set-value"),
        pytest.param(SettingSet("k", float("nan")), "setting 'k' is not JSON", id="nan-value"),
        pytest.param(SettingSet("k", {1: "a"}), "non-string key", id="int-key-in-value"),
        pytest.param(
            SettingSet("k", "\ud800"),
            "surrogate",
            id="lone-surrogate",
        ),
        pytest.param(
            MetricRecord("", 1.0), "a metric needs a name and a number", id="metric-no-name"
        ),
        pytest.param(
            MetricRecord("m", cast(Any, "fast")),
            "a metric needs a name and a number",
            id="metric-not-a-number",
        ),
        pytest.param(
            MetricRecord("m", cast(Any, True)),
            "a metric needs a name and a number",
            id="metric-bool",
        ),
    ],
)
def test_decide_refuses_malformed_deltas(delta: StateDelta, fragment: str) -> None:
    state = AppState()
    with pytest.raises(InvalidDelta, match=fragment):
        decide(state, delta)


def test_decide_stamps_logs_with_the_time() -> None:
    change = decide(AppState(), LogAppend("hello"))
    stamped = cast(LogAppend, change.delta)
    assert stamped.at is not None
    assert stamped.at.endswith("Z")
    assert change.data["at"] == stamped.at
