"""``AppState``: the immutable application state, and the pure functions that change it.

The collections are persistent hash maps (``immutables.Map``): a change builds a new state that
shares everything it did not touch, so a mutation costs O(log n) whatever the state's size, and a
reader holding an old state sees it unchanged. ``decide`` validates a delta against a state;
``apply`` folds an accepted change in. The state manager folds a batch into a ``draft``, a copy
nobody else sees until the batch is committed, with ``apply_in_place``; replay uses ``apply``.
Both compute a change's new fields in one place (``_changes``), so a replayed state equals the
live one by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import immutables

from .._clock import utc_now as _now
from .._json import encode_json, freeze, thaw
from ..errors import EntityExists, EntityInUse, EntityNotFound, InvalidDelta, QueryError
from .deltas import (
    EntityAdd,
    EntityRemove,
    EntityUpdate,
    ErrorRecord,
    ErrorsClear,
    LogAppend,
    MetricRecord,
    SettingDelete,
    SettingSet,
    StateDelta,
    delta_from_event,
    event_from_delta,
)
from .entities import Entity, Flow, KnowledgeBase, Pipeline, Schedule, Tool

__all__ = [
    "AppState",
    "Change",
    "Limits",
    "UndoEntry",
    "apply",
    "apply_event",
    "apply_in_place",
    "decide",
    "draft",
]

STATE_SCHEMA_VERSION = 1
"""Shape of a snapshot's JSON; a snapshot of another shape is ignored and the log replayed."""

COLLECTIONS = ("knowledge_bases", "tools", "pipelines", "schedules", "flows")
_ENTITY_TYPES: dict[str, type[Entity]] = {
    "knowledge_bases": KnowledgeBase,
    "tools": Tool,
    "pipelines": Pipeline,
    "schedules": Schedule,
    "flows": Flow,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of the state's sequences; the oldest entries are dropped first."""

    logs: int = 1000
    metrics: int = 1000
    errors: int = 100
    undo_depth: int = 100
    """Changes ``undo()`` can take back; older ones drop off."""


@dataclass(frozen=True, slots=True)
class UndoEntry:
    """A change on the undo or redo stack: the version of its event, its type and data."""

    version: int
    event_type: str
    data: Mapping[str, Any]


_EMPTY: immutables.Map[str, Any] = immutables.Map()


@dataclass(frozen=True, slots=True)
class AppState:
    """The whole application state at ``version``; read-only, shared without copying."""

    version: int = 0
    """The number of accepted changes (the version of the ``$app`` event stream)."""
    knowledge_bases: immutables.Map[str, KnowledgeBase] = field(default=_EMPTY)
    tools: immutables.Map[str, Tool] = field(default=_EMPTY)
    pipelines: immutables.Map[str, Pipeline] = field(default=_EMPTY)
    schedules: immutables.Map[str, Schedule] = field(default=_EMPTY)
    flows: immutables.Map[str, Flow] = field(default=_EMPTY)
    settings: immutables.Map[str, Any] = field(default=_EMPTY)
    """Key → JSON value."""
    logs: tuple[LogAppend, ...] = ()
    metrics: tuple[MetricRecord, ...] = ()
    errors: tuple[ErrorRecord, ...] = ()
    undo_stack: tuple[UndoEntry, ...] = ()
    redo_stack: tuple[UndoEntry, ...] = ()
    references: immutables.Map[str, int] = field(default=_EMPTY)
    """``"collection:id"`` → how many entities refer to it (kept to refuse removals in O(1))."""

    @property
    def can_undo(self) -> bool:
        """Whether ``undo()`` has a change to take back."""
        return bool(self.undo_stack)

    @property
    def can_redo(self) -> bool:
        """Whether ``redo()`` has a change to re-apply."""
        return bool(self.redo_stack)

    def collection(self, name: str) -> immutables.Map[str, Any]:
        """One of the entity maps by name (``"knowledge_bases"``, ...)."""
        value: immutables.Map[str, Any] = getattr(self, name)
        return value

    # -- snapshots -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything needed to restore this state, as JSON."""
        data: dict[str, Any] = {"version": self.version}
        for name in COLLECTIONS:
            data[name] = [entity.to_json() for entity in self.collection(name).values()]
        data["settings"] = {key: thaw(value) for key, value in self.settings.items()}
        data["logs"] = [event_from_delta(entry, None)[1] for entry in self.logs]
        data["metrics"] = [event_from_delta(entry, None)[1] for entry in self.metrics]
        data["errors"] = [event_from_delta(entry, None)[1] for entry in self.errors]
        data["undo_stack"] = [[e.version, e.event_type, thaw(e.data)] for e in self.undo_stack]
        data["redo_stack"] = [[e.version, e.event_type, thaw(e.data)] for e in self.redo_stack]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppState:
        """The state :meth:`to_json` described."""
        maps: dict[str, immutables.Map[str, Any]] = {}
        for name in COLLECTIONS:
            entity_type = _ENTITY_TYPES[name]
            entities = [entity_type.from_json(item) for item in data[name]]
            maps[name] = immutables.Map({entity.id: entity for entity in entities})
        state = cls(
            version=data["version"],
            knowledge_bases=maps["knowledge_bases"],
            tools=maps["tools"],
            pipelines=maps["pipelines"],
            schedules=maps["schedules"],
            flows=maps["flows"],
            settings=immutables.Map({k: freeze(v) for k, v in data["settings"].items()}),
            logs=tuple(LogAppend(**item) for item in data["logs"]),
            metrics=tuple(MetricRecord(**freeze(item)) for item in data["metrics"]),
            errors=tuple(ErrorRecord(**item) for item in data["errors"]),
            undo_stack=tuple(UndoEntry(v, t, d) for v, t, d in data["undo_stack"]),
            redo_stack=tuple(UndoEntry(v, t, d) for v, t, d in data["redo_stack"]),
        )
        references: dict[str, int] = {}
        for pipeline in state.pipelines.values():
            for key in _refs_of(pipeline):
                references[key] = references.get(key, 0) + 1
        for schedule in state.schedules.values():
            for key in _refs_of(schedule):
                references[key] = references.get(key, 0) + 1
        return replace(state, references=immutables.Map(references))


class Change:
    """An accepted delta, ready to be stored as one event and applied. (A plain class: one is
    made per mutation, and a frozen dataclass's ``__init__`` costs twice as much.)"""

    __slots__ = ("before", "data", "data_json", "delta", "event_type", "metadata")

    def __init__(
        self,
        delta: StateDelta,
        before: Any,
        event_type: str,
        data: dict[str, Any],
        metadata: dict[str, Any] | None,
        data_json: str | None = None,
    ) -> None:
        self.delta = delta
        self.before = before
        self.event_type = event_type
        self.data = data
        self.metadata = metadata
        self.data_json = data_json
        """``data`` encoded (set by ``decide``, so the event store need not encode it again)."""


def _refs_of(entity: Entity) -> list[str]:
    if isinstance(entity, Pipeline) and entity.kb_id is not None:
        return [f"knowledge_bases:{entity.kb_id}"]
    if isinstance(entity, Schedule):
        refs = []
        if entity.pipeline_id is not None:
            refs.append(f"pipelines:{entity.pipeline_id}")
        if entity.flow_id is not None:
            refs.append(f"flows:{entity.flow_id}")
        return refs
    return []


def _check_references(state: AppState, entity: Entity) -> None:
    for key in _refs_of(entity):
        collection, _, target = key.partition(":")
        if target not in state.collection(collection):
            what = collection.removesuffix("s").replace("_", " ")
            raise EntityNotFound(
                f"{entity.label} {entity.id!r} refers to {what} {target!r}, which does not exist"
            )


def decide(state: AppState, delta: StateDelta, metadata: dict[str, Any] | None = None) -> Change:
    """Validate ``delta`` against ``state``; return the change to store, or raise
    :class:`InvalidDelta` saying what is wrong and why. Never changes ``state``."""
    try:
        return _decide(state, delta, metadata)
    except InvalidDelta:
        raise
    except Exception as exc:
        # A delta built from values of the wrong type (an unhashable id, ...) is refused like
        # any other invalid delta: the state manager's consumer must not die of it.
        raise InvalidDelta(
            f"{type(delta).__name__} was refused: {type(exc).__name__}: {exc}"
        ) from exc


def _decide(state: AppState, delta: StateDelta, metadata: dict[str, Any] | None) -> Change:
    before: Any = None
    if isinstance(delta, EntityAdd):
        _check_entity(delta, delta.entity)
        if delta.entity.id in state.collection(delta.collection):
            raise EntityExists(f"{delta.entity.label} {delta.entity.id!r} exists already")
        _check_references(state, delta.entity)
    elif isinstance(delta, EntityUpdate):
        _check_entity(delta, delta.entity)
        before = state.collection(delta.collection).get(delta.entity.id)
        if before is None:
            raise EntityNotFound(f"{delta.entity.label} {delta.entity.id!r} does not exist")
        _check_references(state, delta.entity)
    elif isinstance(delta, EntityRemove):
        if not isinstance(delta.id, str):
            raise InvalidDelta(f"{type(delta).__name__}: an id is a str, not {type(delta.id)}")
        before = state.collection(delta.collection).get(delta.id)
        label = delta.entity_type.label
        if before is None:
            raise EntityNotFound(f"{label} {delta.id!r} does not exist")
        users = state.references.get(f"{delta.collection}:{delta.id}", 0)
        if users:
            raise EntityInUse(
                f"{label} {delta.id!r} is still referred to by {users} other entit"
                f"{'y' if users == 1 else 'ies'}; remove or change those first"
            )
    elif isinstance(delta, SettingSet):
        if not isinstance(delta.key, str) or not delta.key:
            raise InvalidDelta(f"a setting key must be a non-empty string, not {delta.key!r}")
        if delta.key in state.settings:
            before = {"value": state.settings[delta.key]}
    elif isinstance(delta, SettingDelete):
        if not isinstance(delta.key, str) or delta.key not in state.settings:
            raise EntityNotFound(f"setting {delta.key!r} does not exist")
        before = {"value": state.settings[delta.key]}
    elif isinstance(delta, LogAppend | MetricRecord | ErrorRecord):
        delta = _stamped(delta)
    elif not isinstance(delta, ErrorsClear):
        raise InvalidDelta(f"{type(delta).__name__} is not a StateDelta the manager knows")
    event_type, data = event_from_delta(delta, before)
    what = f"setting {delta.key!r}" if isinstance(delta, SettingSet) else event_type
    try:
        text = encode_json(data, what)
    except QueryError as exc:
        raise InvalidDelta(str(exc)) from None
    # Apply what the log will hold, as a replay decodes it: encode_json refused anything that
    # would not read back equal, and delta_from_event freezes copies of every dict and list,
    # so the state shares nothing mutable with the caller and equals a replayed one. (A
    # setting of a plain value has nothing to copy or freeze: it is what a replay rebuilds.)
    if type(delta) is SettingSet and type(delta.value) in _SCALARS:
        before = data.get("before")
    else:
        delta, before = delta_from_event(event_type, data)
    return Change(delta, before, event_type, data, metadata, text)


_SCALARS = (str, int, float, bool, type(None))


def _check_entity(delta: StateDelta, entity: object) -> None:
    expected = delta.entity_type  # type: ignore[attr-defined]
    if type(entity) is not expected:
        raise InvalidDelta(
            f"{type(delta).__name__} takes a {expected.__name__}, not {type(entity).__name__}"
        )


def _stamped(
    delta: LogAppend | MetricRecord | ErrorRecord,
) -> LogAppend | MetricRecord | ErrorRecord:
    if isinstance(delta, LogAppend):
        if not _all_str(delta.message, delta.level, delta.source):
            raise InvalidDelta("a log entry needs a message, a level and a source (strings)")
    elif isinstance(delta, MetricRecord):
        value_ok = isinstance(delta.value, int | float) and not isinstance(delta.value, bool)
        labels_ok = isinstance(delta.labels, Mapping) and _all_str(
            *delta.labels.keys(), *delta.labels.values()
        )
        if not isinstance(delta.name, str) or not delta.name or not value_ok or not labels_ok:
            raise InvalidDelta("a metric needs a name and a number (and labels mapping str to str)")
    elif not _all_str(delta.message, delta.source, delta.kind):
        raise InvalidDelta("an error record needs a message, a source and a kind (strings)")
    if delta.at is not None and not isinstance(delta.at, str):
        raise InvalidDelta(f"{type(delta).__name__}: at is an ISO-8601 str or None")
    return delta if delta.at is not None else replace(delta, at=_now())


def _all_str(*values: object) -> bool:
    return all(isinstance(value, str) for value in values)


def apply(state: AppState, change: Change, limits: Limits) -> AppState:
    """The state after ``change`` (stored as the event of version ``state.version + 1``)."""
    return _evolve(state, _changes(state, change, limits))


def draft(state: AppState) -> AppState:
    """A copy of ``state`` for :func:`apply_in_place` to build on. Nobody else may hold it until
    its last change is applied: it is an ``AppState`` under construction."""
    return _evolve(state, {})


def apply_in_place(state: AppState, change: Change, limits: Limits) -> None:
    """:func:`apply` on a :func:`draft`: the fields ``change`` touches are replaced in place, so
    a batch of changes costs one copy of the state, not one per change."""
    for name, value in _changes(state, change, limits).items():
        object.__setattr__(state, name, value)


def _changes(state: AppState, change: Change, limits: Limits) -> dict[str, Any]:
    """The fields ``change`` gives new values, with those values."""
    version = state.version + 1
    delta = change.delta
    updates: dict[str, Any] = {"version": version}
    if isinstance(delta, EntityAdd | EntityUpdate):
        entity = delta.entity
        updates[delta.collection] = state.collection(delta.collection).set(entity.id, entity)
        refs = _adjust(state.references, _refs_of(change.before) if change.before else [], -1)
        updates["references"] = _adjust(refs, _refs_of(entity), +1)
    elif isinstance(delta, EntityRemove):
        updates[delta.collection] = state.collection(delta.collection).delete(delta.id)
        updates["references"] = _adjust(state.references, _refs_of(change.before), -1)
    elif isinstance(delta, SettingSet):
        updates["settings"] = state.settings.set(delta.key, delta.value)
    elif isinstance(delta, SettingDelete):
        updates["settings"] = state.settings.delete(delta.key)
    elif isinstance(delta, LogAppend):
        updates["logs"] = _bounded(state.logs, delta, limits.logs)
    elif isinstance(delta, MetricRecord):
        updates["metrics"] = _bounded(state.metrics, delta, limits.metrics)
    elif isinstance(delta, ErrorRecord):
        updates["errors"] = _bounded(state.errors, delta, limits.errors)
    elif isinstance(delta, ErrorsClear):
        updates["errors"] = ()
    if delta.undoable:
        updates.update(_history(state, change, version, limits))
    return updates


_STATE_FIELDS = tuple(f.name for f in fields(AppState))


def _evolve(state: AppState, updates: dict[str, Any]) -> AppState:
    """``dataclasses.replace(state, **updates)`` at half the cost (one per mutation)."""
    new = object.__new__(AppState)
    for name in _STATE_FIELDS:
        object.__setattr__(new, name, updates[name] if name in updates else getattr(state, name))
    return new


def apply_event(
    state: AppState,
    event_type: str,
    data: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    limits: Limits,
) -> AppState:
    """Replay: the state after the stored event of version ``state.version + 1``."""
    delta, before = delta_from_event(event_type, data)
    change = Change(delta, before, event_type, dict(data), dict(metadata) if metadata else None)
    return apply(state, change, limits)


def _history(state: AppState, change: Change, version: int, limits: Limits) -> dict[str, Any]:
    """The undo and redo stacks after an undoable change (a plain one, an undo, or a redo)."""
    metadata = change.metadata or {}
    entry = UndoEntry(version, change.event_type, freeze(change.data))
    if "undo" in metadata:
        undone = state.undo_stack[-1]
        return {"undo_stack": state.undo_stack[:-1], "redo_stack": (*state.redo_stack, undone)}
    depth, stack = limits.undo_depth, state.undo_stack
    undo = (*stack[max(0, len(stack) - depth + 1) :], entry) if depth else ()  # one copy
    if "redo" in metadata:
        return {"undo_stack": undo, "redo_stack": state.redo_stack[:-1]}
    return {"undo_stack": undo, "redo_stack": ()}


def _bounded(items: tuple[Any, ...], item: Any, limit: int) -> tuple[Any, ...]:
    return (*items[-(limit - 1) :], item) if limit > 1 else ((item,) if limit == 1 else ())


def _adjust(refs: immutables.Map[str, int], keys: list[str], step: int) -> immutables.Map[str, int]:
    for key in keys:
        count = refs.get(key, 0) + step
        refs = refs.set(key, count) if count > 0 else refs.delete(key) if key in refs else refs
    return refs
