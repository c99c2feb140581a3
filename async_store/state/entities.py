"""The entities the state manager owns; their fields match the app_meta columns.

Each is a frozen dataclass validated on construction with the same rules the schema's CHECK
constraints enforce, so a delta the state accepts can always be projected.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .._json import freeze, thaw
from ..errors import InvalidDelta

__all__ = ["Entity", "Flow", "KnowledgeBase", "Pipeline", "Schedule", "Tool", "check_cron"]


_INT64 = range(-(2**63), 2**63)


def _is_int(value: object) -> bool:
    """An int SQLite can store as an INTEGER (64-bit): a larger one would be accepted by the
    state and then refused by the projection, stopping it for good."""
    return isinstance(value, int) and not isinstance(value, bool) and value in _INT64


def _describe(value: object, declared: str) -> str:
    """What is wrong with a field's value, without quoting it (it may be a secret)."""
    if "int" in declared and isinstance(value, int) and not isinstance(value, bool):
        return "an int outside SQLite's 64-bit range"
    return f"a {type(value).__name__}"


_FIELD_TYPES: dict[str, Callable[[object], bool]] = {
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "int": _is_int,
    "int | None": lambda v: v is None or _is_int(v),
    "bool": lambda v: isinstance(v, bool),
    "Mapping[str, Any]": lambda v: isinstance(v, Mapping),
    "tuple[Any, ...]": lambda v: isinstance(v, tuple),
}
"""Checks for the declared field types (annotations are strings here)."""

E = TypeVar("E", bound="Entity")


@dataclass(frozen=True)
class Entity:
    """Common behaviour: an ``id`` and a non-empty ``name`` (positional or by keyword; every
    other field is keyword-only and optional), JSON round trips."""

    label: ClassVar[str] = "entity"
    id: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or "\x00" in self.id:
            raise InvalidDelta(
                f"{self.label} id must be a non-empty string without NUL, not {self.id!r}"
            )
        if not isinstance(self.name, str) or not self.name or "\x00" in self.name:
            # SQLite's length() stops at NUL, so the schema's CHECK (length(name) > 0) would
            # refuse "\x00abc" at projection time, after the change is in the log.
            raise InvalidDelta(
                f"{self.label} {self.id!r}: name must be a non-empty string without NUL"
            )
        # Every other field by its declared type, so that nothing the schema would refuse
        # (or store as something else) gets into the state.
        for item in dataclasses.fields(self):
            if item.name in ("id", "name"):
                continue
            value = getattr(self, item.name)
            expected = _FIELD_TYPES.get(str(item.type))
            if expected is not None and not expected(value):
                raise InvalidDelta(
                    f"{self.label} {self.id!r}: {item.name} must be {item.type}, not "
                    f"{_describe(value, str(item.type))}"
                )

    def to_json(self) -> dict[str, Any]:
        """A plain JSON object of every field (a fresh copy: tuples become lists)."""
        data = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        return {
            k: [thaw(x) for x in v] if isinstance(v, tuple) else thaw(v) for k, v in data.items()
        }

    @classmethod
    def from_json(cls: type[E], data: Mapping[str, Any]) -> E:
        """The entity a :meth:`to_json` object describes; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InvalidDelta(f"{cls.label}: unknown field(s) {sorted(unknown)}")
        # Nested JSON is frozen: the entity is shared by every reader of the state.
        values: dict[str, Any] = {
            k: tuple(freeze(x) for x in v) if isinstance(v, list) else freeze(v)
            for k, v in data.items()
        }
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidDelta(f"{cls.label}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class KnowledgeBase(Entity):
    """A collection of documents, chunked and embedded the same way."""

    label: ClassVar[str] = "knowledge base"
    description: str = ""
    embedding_model: str = ""
    chunk_size: int = 1000
    """Characters per chunk, > 0."""
    chunk_overlap: int = 100
    """Characters shared by neighbouring chunks, >= 0 and < chunk_size."""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.chunk_size, int) or self.chunk_size <= 0:
            raise InvalidDelta(f"knowledge base {self.id!r}: chunk_size must be > 0")
        if not isinstance(self.chunk_overlap, int) or not 0 <= self.chunk_overlap < self.chunk_size:
            raise InvalidDelta(
                f"knowledge base {self.id!r}: chunk_overlap must be >= 0 and < chunk_size "
                f"({self.chunk_overlap} vs {self.chunk_size})"
            )


@dataclass(frozen=True, kw_only=True)
class Tool(Entity):
    """A tool a pipeline or flow can call."""

    label: ClassVar[str] = "tool"
    kind: str = "function"
    """What sort of tool (``function``, ``http``, ...)."""
    description: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Pipeline(Entity):
    """An ordered list of steps, optionally bound to a knowledge base."""

    label: ClassVar[str] = "pipeline"
    kb_id: str | None = None
    """The knowledge base it feeds; it must exist."""
    description: str = ""
    steps: tuple[Any, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Flow(Entity):
    """A graph of steps described by ``definition``."""

    label: ClassVar[str] = "flow"
    description: str = ""
    definition: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Schedule(Entity):
    """Runs a pipeline or a flow by cron expression or fixed interval (exactly one of each)."""

    label: ClassVar[str] = "schedule"
    pipeline_id: str | None = None
    flow_id: str | None = None
    cron: str | None = None
    """Five fields (minute hour day-of-month month day-of-week) or @hourly/@daily/..."""
    interval_seconds: int | None = None
    """Seconds between runs, > 0."""
    enabled: bool = True
    next_run_at: str | None = None
    last_run_at: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.cron is None) == (self.interval_seconds is None):
            raise InvalidDelta(
                f"schedule {self.id!r}: give exactly one of cron and interval_seconds"
            )
        if self.interval_seconds is not None and (
            not isinstance(self.interval_seconds, int)
            or isinstance(self.interval_seconds, bool)
            or self.interval_seconds <= 0
        ):
            raise InvalidDelta(
                f"schedule {self.id!r}: interval_seconds must be a positive integer, "
                f"not {self.interval_seconds!r}"
            )
        if self.cron is not None:
            problem = check_cron(self.cron)
            if problem:
                raise InvalidDelta(f"schedule {self.id!r}: invalid cron {self.cron!r}: {problem}")


_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_ITEM = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")


def check_cron(expression: str) -> str | None:
    """Why ``expression`` is not a valid cron expression, or None when it is."""
    if not isinstance(expression, str):
        return "not a string"
    text = expression.strip().lower()
    if text in _CRON_MACROS:
        return None
    parts = text.split()
    if len(parts) != 5:
        return f"expected 5 fields, found {len(parts)}"
    for part, (name, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        for item in part.split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                return f"{name}: cannot read {item!r}"
            span, step = match.groups()
            if step is not None and int(step) == 0:
                return f"{name}: step 0"
            if span == "*":
                continue
            bounds = span.split("-")
            values = []
            for bound in bounds:
                if bound.isdigit():
                    values.append(int(bound))
                elif bound in names:
                    values.append(names.index(bound) + (1 if name == "month" else 0))
                else:
                    return f"{name}: {bound!r} is not a number"
            if any(not low <= v <= high for v in values):
                return f"{name}: values must lie in {low}..{high}"
            if len(values) == 2 and values[0] > values[1]:
                return f"{name}: range {span} runs backwards"
    return None
