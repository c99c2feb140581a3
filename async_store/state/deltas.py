"""``StateDelta``: the messages that change the state, and their mapping to versioned events.

Every delta is a frozen dataclass. Each maps to one event type (``KnowledgeBaseAdded.v1``, ...)
whose data also records what the change replaced (``before``), so an undo can be computed from
the log alone and survives a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._json import freeze, thaw
from ..errors import InvalidDelta
from .entities import Entity, Flow, KnowledgeBase, Pipeline, Schedule, Tool

__all__ = [
    "ENTITY_DELTAS",
    "EntityAdd",
    "EntityRemove",
    "EntityUpdate",
    "ErrorRecord",
    "ErrorsClear",
    "FlowAdd",
    "FlowRemove",
    "FlowUpdate",
    "KnowledgeBaseAdd",
    "KnowledgeBaseRemove",
    "KnowledgeBaseUpdate",
    "LogAppend",
    "MetricRecord",
    "PipelineAdd",
    "PipelineRemove",
    "PipelineUpdate",
    "ScheduleAdd",
    "ScheduleRemove",
    "ScheduleUpdate",
    "SettingDelete",
    "SettingSet",
    "StateDelta",
    "ToolAdd",
    "ToolRemove",
    "ToolUpdate",
    "delta_from_event",
    "event_from_delta",
    "inverse",
]


@dataclass(frozen=True)
class StateDelta:
    """A change to the application state, sent to ``StateManager.mutate``."""

    event_name: ClassVar[str] = ""
    """The event type, without its ``.v1`` suffix."""
    undoable: ClassVar[bool] = True
    """Whether ``undo()`` can take it back (logs, metrics and errors cannot)."""


# -- entities ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityAdd(StateDelta):
    """Adds an entity whose id does not exist yet."""

    collection: ClassVar[str] = ""
    entity_type: ClassVar[type[Entity]] = Entity

    @property
    def entity(self) -> Entity:
        raise NotImplementedError


@dataclass(frozen=True)
class EntityUpdate(StateDelta):
    """Replaces the entity with the same id, which must exist."""

    collection: ClassVar[str] = ""
    entity_type: ClassVar[type[Entity]] = Entity

    @property
    def entity(self) -> Entity:
        raise NotImplementedError


@dataclass(frozen=True)
class EntityRemove(StateDelta):
    """Removes the entity with this id, which must exist."""

    collection: ClassVar[str] = ""
    entity_type: ClassVar[type[Entity]] = Entity
    id: str


@dataclass(frozen=True)
class KnowledgeBaseAdd(EntityAdd):
    """Adds a knowledge base whose id does not exist yet."""

    event_name = "KnowledgeBaseAdded"
    collection = "knowledge_bases"
    entity_type = KnowledgeBase
    kb: KnowledgeBase

    @property
    def entity(self) -> KnowledgeBase:
        return self.kb


@dataclass(frozen=True)
class KnowledgeBaseUpdate(EntityUpdate):
    """Replaces the knowledge base with the same id."""

    event_name = "KnowledgeBaseUpdated"
    collection = "knowledge_bases"
    entity_type = KnowledgeBase
    kb: KnowledgeBase

    @property
    def entity(self) -> KnowledgeBase:
        return self.kb


@dataclass(frozen=True)
class KnowledgeBaseRemove(EntityRemove):
    """Removes the knowledge base with this id."""

    event_name = "KnowledgeBaseRemoved"
    collection = "knowledge_bases"
    entity_type = KnowledgeBase


@dataclass(frozen=True)
class ToolAdd(EntityAdd):
    """Adds a tool whose id does not exist yet."""

    event_name = "ToolAdded"
    collection = "tools"
    entity_type = Tool
    tool: Tool

    @property
    def entity(self) -> Tool:
        return self.tool


@dataclass(frozen=True)
class ToolUpdate(EntityUpdate):
    """Replaces the tool with the same id."""

    event_name = "ToolUpdated"
    collection = "tools"
    entity_type = Tool
    tool: Tool

    @property
    def entity(self) -> Tool:
        return self.tool


@dataclass(frozen=True)
class ToolRemove(EntityRemove):
    """Removes the tool with this id."""

    event_name = "ToolRemoved"
    collection = "tools"
    entity_type = Tool


@dataclass(frozen=True)
class PipelineAdd(EntityAdd):
    """Adds a pipeline whose id does not exist yet."""

    event_name = "PipelineAdded"
    collection = "pipelines"
    entity_type = Pipeline
    pipeline: Pipeline

    @property
    def entity(self) -> Pipeline:
        return self.pipeline


@dataclass(frozen=True)
class PipelineUpdate(EntityUpdate):
    """Replaces the pipeline with the same id."""

    event_name = "PipelineUpdated"
    collection = "pipelines"
    entity_type = Pipeline
    pipeline: Pipeline

    @property
    def entity(self) -> Pipeline:
        return self.pipeline


@dataclass(frozen=True)
class PipelineRemove(EntityRemove):
    """Removes the pipeline with this id."""

    event_name = "PipelineRemoved"
    collection = "pipelines"
    entity_type = Pipeline


@dataclass(frozen=True)
class ScheduleAdd(EntityAdd):
    """Adds a schedule whose id does not exist yet."""

    event_name = "ScheduleAdded"
    collection = "schedules"
    entity_type = Schedule
    schedule: Schedule

    @property
    def entity(self) -> Schedule:
        return self.schedule


@dataclass(frozen=True)
class ScheduleUpdate(EntityUpdate):
    """Replaces the schedule with the same id."""

    event_name = "ScheduleUpdated"
    collection = "schedules"
    entity_type = Schedule
    schedule: Schedule

    @property
    def entity(self) -> Schedule:
        return self.schedule


@dataclass(frozen=True)
class ScheduleRemove(EntityRemove):
    """Removes the schedule with this id."""

    event_name = "ScheduleRemoved"
    collection = "schedules"
    entity_type = Schedule


@dataclass(frozen=True)
class FlowAdd(EntityAdd):
    """Adds a flow whose id does not exist yet."""

    event_name = "FlowAdded"
    collection = "flows"
    entity_type = Flow
    flow: Flow

    @property
    def entity(self) -> Flow:
        return self.flow


@dataclass(frozen=True)
class FlowUpdate(EntityUpdate):
    """Replaces the flow with the same id."""

    event_name = "FlowUpdated"
    collection = "flows"
    entity_type = Flow
    flow: Flow

    @property
    def entity(self) -> Flow:
        return self.flow


@dataclass(frozen=True)
class FlowRemove(EntityRemove):
    """Removes the flow with this id."""

    event_name = "FlowRemoved"
    collection = "flows"
    entity_type = Flow


ENTITY_DELTAS: dict[str, tuple[type[EntityAdd], type[EntityUpdate], type[EntityRemove]]] = {
    "knowledge_bases": (KnowledgeBaseAdd, KnowledgeBaseUpdate, KnowledgeBaseRemove),
    "tools": (ToolAdd, ToolUpdate, ToolRemove),
    "pipelines": (PipelineAdd, PipelineUpdate, PipelineRemove),
    "schedules": (ScheduleAdd, ScheduleUpdate, ScheduleRemove),
    "flows": (FlowAdd, FlowUpdate, FlowRemove),
}
"""Collection name → its (add, update, remove) delta classes."""


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingSet(StateDelta):
    """Sets a setting to a JSON value (adding it if absent)."""

    event_name = "SettingSet"
    key: str
    value: Any


@dataclass(frozen=True)
class SettingDelete(StateDelta):
    """Deletes a setting, which must exist."""

    event_name = "SettingDeleted"
    key: str


# -- logs, metrics, errors: bounded, not undoable -----------------------------------------------


@dataclass(frozen=True)
class LogAppend(StateDelta):
    """Appends a log line to the state's bounded log."""

    event_name = "LogAppended"
    undoable = False
    message: str
    level: str = "info"
    source: str = ""
    at: str | None = None
    """ISO-8601 UTC; filled in when the delta is accepted."""


@dataclass(frozen=True)
class MetricRecord(StateDelta):
    """Records a metric sample."""

    event_name = "MetricRecorded"
    undoable = False
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    at: str | None = None


@dataclass(frozen=True)
class ErrorRecord(StateDelta):
    """Records an error for the UI to show."""

    event_name = "ErrorRecorded"
    undoable = False
    message: str
    source: str = ""
    kind: str = ""
    at: str | None = None


@dataclass(frozen=True)
class ErrorsClear(StateDelta):
    """Clears the recorded errors."""

    event_name = "ErrorsCleared"
    undoable = False


_SIMPLE: dict[str, type[StateDelta]] = {
    cls.event_name: cls
    for cls in (SettingSet, SettingDelete, LogAppend, MetricRecord, ErrorRecord, ErrorsClear)
}
_BY_EVENT: dict[str, type[StateDelta]] = {
    **_SIMPLE,
    **{cls.event_name: cls for classes in ENTITY_DELTAS.values() for cls in classes},
}

EVENT_VERSION = 1


def event_from_delta(delta: StateDelta, before: Any) -> tuple[str, dict[str, Any]]:
    """The event type and data for ``delta``; ``before`` is what it replaced (an entity, a
    ``{"value": ...}`` wrapper for a setting, or None when there was nothing)."""
    name = f"{delta.event_name}.v{EVENT_VERSION}"
    if isinstance(delta, EntityAdd | EntityUpdate):
        data: dict[str, Any] = {"entity": delta.entity.to_json()}
    elif isinstance(delta, EntityRemove):
        data = {"id": delta.id}
    elif isinstance(delta, SettingSet):
        data = {"key": delta.key, "value": thaw(delta.value)}
    elif isinstance(delta, SettingDelete):
        data = {"key": delta.key}
    elif isinstance(delta, LogAppend):
        data = {"message": delta.message, "level": delta.level, "source": delta.source}
        data["at"] = delta.at
    elif isinstance(delta, MetricRecord):
        data = {"name": delta.name, "value": delta.value, "labels": thaw(delta.labels)}
        data["at"] = delta.at
    elif isinstance(delta, ErrorRecord):
        data = {"message": delta.message, "source": delta.source, "kind": delta.kind}
        data["at"] = delta.at
    elif isinstance(delta, ErrorsClear):
        data = {}
    else:
        raise InvalidDelta(f"{type(delta).__name__} is not a delta the state manager knows")
    if delta.undoable:
        data["before"] = before.to_json() if isinstance(before, Entity) else thaw(before)
    return name, data


def delta_from_event(event_type: str, data: Mapping[str, Any]) -> tuple[StateDelta, Any]:
    """The delta an event records and what it replaced (see :func:`event_from_delta`)."""
    name, _, version = event_type.rpartition(".v")
    cls = _BY_EVENT.get(name)
    if cls is None or version != str(EVENT_VERSION):
        raise InvalidDelta(f"unknown state event type {event_type!r}")
    before: Any = data.get("before")
    delta: StateDelta
    if issubclass(cls, EntityAdd | EntityUpdate):
        entity = cls.entity_type.from_json(data["entity"])
        delta = cls(entity)  # type: ignore[call-arg]
    elif issubclass(cls, EntityRemove):
        delta = cls(data["id"])
    else:
        fields = {k: freeze(v) for k, v in data.items() if k != "before"}
        delta = cls(**fields)
    if before is not None and issubclass(cls, EntityUpdate | EntityRemove):
        before = cls.entity_type.from_json(before)
    return delta, before


def inverse(delta: StateDelta, before: Any) -> StateDelta:
    """The delta that takes ``delta`` back, given what it replaced."""
    if isinstance(delta, EntityAdd):
        return ENTITY_DELTAS[delta.collection][2](delta.entity.id)
    if isinstance(delta, EntityUpdate):
        return ENTITY_DELTAS[delta.collection][1](before)  # type: ignore[call-arg]
    if isinstance(delta, EntityRemove):
        return ENTITY_DELTAS[delta.collection][0](before)  # type: ignore[call-arg]
    if isinstance(delta, SettingSet):
        if before is None:
            return SettingDelete(delta.key)
        return SettingSet(delta.key, before["value"])
    if isinstance(delta, SettingDelete):
        return SettingSet(delta.key, before["value"])
    raise InvalidDelta(f"{type(delta).__name__} cannot be undone")
