"""An event in its stored form: :class:`PreparedEvent` (checked and encoded on the event loop,
so bad input fails before anything is queued) gives the ``events`` row of each version it is
written at, with its content hash (:func:`content_hash`, which ``verify_events`` recomputes).

Backend-neutral: the event store prepares the events, a backend's recorder
(``events._recorder``) writes the rows."""

from __future__ import annotations

import hashlib
from json.encoder import encode_basestring_ascii

from .._checks import check_json_text, check_text
from .._ids import new_id
from .._json import encode_json
from ..errors import QueryError
from .records import EncodedEvent, NewEvent

__all__ = ["EventRow", "PreparedEvent", "content_hash"]


EventRow = tuple[str, str, int, str, str, "str | None", str, str]
"""An ``events`` row as written: event_id, stream_id, version, type, data, metadata,
recorded_at, content_hash."""


class PreparedEvent:
    """An event encoded on the event loop (so bad input fails before anything is queued)."""

    __slots__ = ("data", "event_id", "id_json", "metadata", "recorded_at", "type")

    def __init__(self, event: NewEvent | EncodedEvent, recorded_at: str) -> None:
        """``recorded_at`` is a timestamp made by ``utc_now``."""
        if not isinstance(event, NewEvent | EncodedEvent):
            raise QueryError(f"an event must be a NewEvent, not a {type(event).__name__}")
        self.type = check_text(event.type, "an event type")
        event_id = event.event_id
        if event_id is None:
            event_id = new_id()
            # Hex digits and dashes: its JSON string is itself in quotes (escaping it, a
            # character at a time, was a tenth of the cost of hashing a row).
            self.id_json = f'"{event_id}"'
        else:
            event_id = check_text(event_id, "event_id")
            self.id_json = _json_text(event_id)
        self.event_id = event_id
        if isinstance(event, EncodedEvent):
            self.data: str = check_json_text(event.data_json, "an EncodedEvent's data_json")
            self.metadata: str | None = (
                None
                if event.metadata_json is None
                else check_json_text(event.metadata_json, "an EncodedEvent's metadata_json")
            )
        else:
            try:
                self.data = encode_json(event.data, "data")
                self.metadata = (
                    None if event.metadata is None else encode_json(event.metadata, "metadata")
                )
            except QueryError as exc:
                # The event's type is named only now: writing it into the text of every
                # event cost half as much as checking a small event's data.
                raise QueryError(f"event {self.type!r} {exc}") from None
        self.recorded_at = recorded_at

    def row(self, stream_id: str, version: int) -> EventRow:
        """The ``events`` row of this event at ``version`` of ``stream_id``: the columns of
        :data:`EventRow`, its content hash last."""
        # utc_now's text (digits, '-', ':', 'T', '.', 'Z') needs no escaping either.
        digest = _digest(
            self.id_json,
            stream_id,
            version,
            self.type,
            self.data,
            self.metadata,
            f'"{self.recorded_at}"',
        )
        return (
            self.event_id,
            stream_id,
            version,
            self.type,
            self.data,
            self.metadata,
            self.recorded_at,
            digest,
        )


def content_hash(
    event_id: str,
    stream_id: str,
    version: int,
    type_: str,
    data: str,
    metadata: str | None,
    recorded_at: str,
) -> str:
    """SHA-256 over every stored column but the position (hex): of the text
    ``json.dumps([event_id, stream_id, version, type, data, metadata, recorded_at])``, written
    out here with the same encoder (every append and every verified row pays for it)."""
    return _digest(
        _json_text(event_id),
        stream_id,
        version,
        type_,
        data,
        metadata,
        _json_text(recorded_at),
    )


def _digest(
    id_json: str,
    stream_id: str,
    version: int,
    type_: str,
    data: str,
    metadata: str | None,
    recorded_at_json: str,
) -> str:
    """``content_hash`` of columns whose event_id and recorded_at are JSON text already."""
    meta = "null" if metadata is None else _json_text(metadata)
    material = (
        f"[{id_json}, {_json_text(stream_id)}, {version}, {_json_text(type_)},"
        f" {_json_text(data)}, {meta}, {recorded_at_json}]"
    )
    return hashlib.sha256(material.encode("ascii")).hexdigest()


_json_text = encode_basestring_ascii
"""A str as a JSON string literal, non-ASCII escaped: what ``json.dumps`` writes for it."""
