"""The event store's values: what an append takes (``NewEvent``, ``EncodedEvent``, an
expected version) and what the store gives back (``AppendResult``, ``RecordedEvent``,
``Snapshot``, ``VerificationReport``). Re-exported by ``async_store.events``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypeAlias

from .._json import JsonInput

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "EncodedEvent",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StreamState",
    "VerificationReport",
]


class StreamState(enum.Enum):
    """The expectations of ``append`` other than an exact version."""

    ANY = "any"
    """Append whatever the stream's version."""
    NO_STREAM = "no stream"
    """The stream must not exist yet (the same as ``expected_version=0``)."""
    STREAM_EXISTS = "stream exists"
    """The stream must have at least one event."""


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
STREAM_EXISTS = StreamState.STREAM_EXISTS

ExpectedVersion: TypeAlias = int | StreamState
"""An exact version (``0``: the stream must not exist) or a :class:`StreamState`."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``event_id`` (a UUID string) makes a retried append idempotent;
    one is generated when absent (a time-ordered UUIDv7)."""

    type: str
    data: JsonInput
    metadata: JsonInput = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A :class:`NewEvent` whose data is JSON text already (made by ``encode_json``), for
    storage code that has encoded it once and should not pay for it again. The database
    still refuses text that is not valid JSON."""

    type: str
    data_json: str
    metadata_json: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: ``position`` in the whole log, ``version`` in its stream."""

    position: int
    stream_id: str
    version: int
    type: str
    data: Any
    metadata: Any
    event_id: str
    recorded_at: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed: the stream's new version and the position of its last event."""

    stream_id: str
    first_version: int
    last_version: int
    last_position: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stream's state as of ``version``, in the shape ``schema_version`` describes."""

    stream_id: str
    version: int
    state: Any
    schema_version: int
    created_at: str


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """What :meth:`EventStore.verify_events` found."""

    checked: int
    """Events read."""
    altered: tuple[int, ...]
    """Positions whose stored content no longer matches its hash."""
    broken_streams: tuple[str, ...]
    """Streams whose versions do not run 1, 2, 3, ... without gaps."""

    @property
    def ok(self) -> bool:
        """Nothing altered and no stream with gaps."""
        return not self.altered and not self.broken_streams
