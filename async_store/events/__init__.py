"""The event store: append-only streams with optimistic concurrency and idempotent appends,
snapshots, checkpoints and subscriptions.

``store`` holds :class:`EventStore`; ``records`` the values it takes and returns; ``_appends``
queues and coalesces appends on the event loop.
"""

from .store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EncodedEvent,
    EventStore,
    ExpectedVersion,
    JsonInput,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamState,
    VerificationReport,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "EncodedEvent",
    "EventStore",
    "ExpectedVersion",
    "JsonInput",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StreamState",
    "VerificationReport",
]
