"""The event store: append-only streams with optimistic concurrency and idempotent appends,
snapshots, checkpoints and subscriptions.

``store`` holds :class:`EventStore`; ``records`` the values it takes and returns; ``_appends``
queues and coalesces appends on the event loop; ``_prepared`` is an event's stored form and
content hash; ``_recorder`` the contract of what a backend writes for the store in its own
dialect (SQLite's recorder is ``async_store.sqlite._event_recorder``).
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
