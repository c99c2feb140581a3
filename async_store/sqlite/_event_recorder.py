"""Appending on the writer's thread: the stored form of an event, its content hash, and the
append itself (idempotency, then the expected version, then one INSERT per 100 events).

``EventStore.append_many`` prepares events on the event loop (so bad input fails before anything
is queued) and runs ``append_rows`` for each stream as one writer job."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import operator
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from json.encoder import encode_basestring_ascii

from .._checks import check_json_text, check_text
from .._ids import new_id
from .._json import encode_json
from ..errors import ConcurrencyError, QueryError
from ..events.records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EncodedEvent,
    ExpectedVersion,
    NewEvent,
    StreamState,
)
from ._connection import end_savepoint

__all__ = [
    "ROWS_PER_BATCH",
    "ROWS_PER_INSERT",
    "Plan",
    "PreparedEvent",
    "Waiting",
    "append_rows",
    "content_hash",
    "expectation_met",
    "write_plan",
]


Row = tuple[str, str, int, str, str, "str | None", str, str]
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

    def row(self, stream_id: str, version: int) -> Row:
        """The ``events`` row of this event at ``version`` of ``stream_id``: the columns of
        ``_INSERT_EVENTS``, its content hash last."""
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


def _describe(expected: ExpectedVersion) -> str:
    if isinstance(expected, StreamState):
        return expected.value
    return "no stream (version 0)" if expected == 0 else f"version {expected}"


def append_rows(
    conn: sqlite3.Connection,
    stream_id: str,
    events: list[PreparedEvent],
    expected: ExpectedVersion,
) -> AppendResult:
    """Runs on the writer's thread, inside the append's savepoint."""
    ids = [e.event_id for e in events]
    placeholders = ",".join("?" * len(ids))
    current, stored_count = conn.execute(
        f"SELECT coalesce(max(version), 0),"
        f" (SELECT count(*) FROM events WHERE event_id IN ({placeholders}))"
        f" FROM events WHERE stream_id = ?",
        [*ids, stream_id],
    ).fetchone()
    if stored_count:
        stored = conn.execute(
            f"SELECT event_id, stream_id, version, position, type, data, metadata"
            f" FROM events WHERE event_id IN ({placeholders}) ORDER BY position",
            ids,
        ).fetchall()
        return _replayed(stream_id, events, stored)
    if not expectation_met(expected, current):
        raise ConcurrencyError(
            f"stream {stream_id!r}: expected {_describe(expected)}, but it is at version {current}"
        )
    rows = [
        event.row(stream_id, version) for version, event in enumerate(events, start=current + 1)
    ]
    position = 0
    for start in range(0, len(rows), ROWS_PER_INSERT):
        position = _insert_events(conn, rows[start : start + ROWS_PER_INSERT])
    return AppendResult(stream_id, current + 1, current + len(events), position)


def _insert_events(conn: sqlite3.Connection, rows: list[Row]) -> int:
    """``rows`` as one INSERT; returns the position of the last."""
    parameters: Iterable[Sequence[object]] = rows
    values = _EVENT_VALUES
    if list(map(_METADATA, rows)).count(None) == len(rows):
        # No metadata: NULL is written in the statement, not bound (binding None costs
        # sqlite3 a search for an adapter, a tenth of what inserting the row costs).
        parameters, values = map(_WITHOUT_METADATA, rows), _EVENT_VALUES_NO_METADATA
    cursor = conn.execute(
        _INSERT_EVENTS + ", ".join([values] * len(rows)),
        list(itertools.chain.from_iterable(parameters)),
    )
    return cursor.lastrowid or 0


_INSERT_EVENTS = (
    "INSERT INTO events(event_id, stream_id, version, type, data, metadata, recorded_at,"
    " content_hash) VALUES "
)
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?)"
_EVENT_VALUES_NO_METADATA = "(?, ?, ?, ?, ?, NULL, ?, ?)"
_METADATA = operator.itemgetter(5)
_WITHOUT_METADATA = operator.itemgetter(0, 1, 2, 3, 4, 6, 7)
ROWS_PER_INSERT = 100
"""Events written by one multi-row INSERT (8 parameters each: within SQLite's oldest limit of
999 parameters per statement). An append of up to this many events is one statement."""

ROWS_PER_BATCH = 4095 if sqlite3.sqlite_version_info >= (3, 32, 0) else 124
"""Events of the appends coalesced into one INSERT: 8 parameters each, within the 32,766
parameters a statement may have since SQLite 3.32 (999 before)."""


class Waiting:
    """An append of one stream waiting for the next coalesced write (see ``Appends``)."""

    __slots__ = ("events", "expected", "future", "stream_id")

    def __init__(
        self,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        future: asyncio.Future[AppendResult],
    ) -> None:
        self.stream_id = stream_id
        self.events = events
        self.expected = expected
        self.future = future


class Plan:
    """One coalesced write: the rows of the appends whose stream version the store knew, as
    one INSERT, and the appends to make one by one (checked against the database).
    ``write_plan`` only reads it: run again after its transaction was rolled back, it does the
    same."""

    __slots__ = ("current", "direct", "generation", "rows", "size", "slow")

    def __init__(self, size: int, generation: int, current: Callable[[], int]) -> None:
        self.size = size
        self.generation = generation
        """What the store knew when it planned (see ``Appends.forget_versions``)."""
        self.current = current
        """What the store knows now: when it has moved on (the log was replaced, a migration
        ran), the versions planned from are void, and every append is made the careful way."""
        self.rows: list[Row] = []
        self.direct: list[tuple[int, Waiting, int]] = []
        """(index in the batch, the append, its first version), in order."""
        self.slow: list[tuple[int, Waiting]] = []

    def add_direct(self, index: int, append: Waiting, current: int) -> int:
        """Write ``append`` at versions ``current + 1 ...``; returns its last version."""
        stream_id, events = append.stream_id, append.events
        if len(events) == 1:  # most appends: no comprehension to run
            self.rows.append(events[0].row(stream_id, current + 1))
        else:
            self.rows += [
                event.row(stream_id, version)
                for version, event in enumerate(events, start=current + 1)
            ]
        self.direct.append((index, append, current + 1))
        return current + len(events)

    def all_careful(self) -> list[tuple[int, Waiting]]:
        """Every append of the plan, to be made the careful way, in batch order."""
        return sorted([(i, a) for i, a, _ in self.direct] + self.slow, key=lambda item: item[0])


def write_plan(conn: sqlite3.Connection, plan: Plan) -> list[AppendResult | Exception]:
    """Runs on the writer's thread: the direct rows in one INSERT, then the other appends, each
    in a savepoint of its own. Returns each append's result or error, in batch order; raises
    only when something unforeseen fails, and then nothing of the plan stands (a savepoint
    spans the plan whenever more than the one INSERT runs)."""
    outcomes: list[AppendResult | Exception | None] = [None] * plan.size
    direct = bool(plan.rows) and plan.current() == plan.generation
    careful = plan.slow if direct or not plan.rows else plan.all_careful()
    guarded = bool(careful)
    if guarded:
        conn.execute("SAVEPOINT async_store_appends")
    try:
        if direct:
            try:
                last = _insert_events(conn, plan.rows)
            except sqlite3.Error:
                if not conn.in_transaction:
                    raise
                # A version believed current was taken (another process appended) or an
                # event_id is stored already (a retry): the statement left nothing behind;
                # make every append the careful way, in batch order.
                careful = plan.all_careful()
                if not guarded:
                    conn.execute("SAVEPOINT async_store_appends")
                    guarded = True
            else:
                position = last - len(plan.rows)
                for index, append, first in plan.direct:
                    count = len(append.events)
                    position += count
                    outcomes[index] = AppendResult(
                        append.stream_id, first, first + count - 1, position
                    )
        for index, append in careful:
            conn.execute("SAVEPOINT async_store_append")
            try:
                outcomes[index] = append_rows(
                    conn, append.stream_id, append.events, append.expected
                )
            except Exception as exc:  # this append's failure alone: its savepoint undoes it
                if not conn.in_transaction:
                    raise
                end_savepoint(conn, "async_store_append", keep=False)
                outcomes[index] = exc
            else:
                end_savepoint(conn, "async_store_append", keep=True)
    except BaseException:
        if guarded and conn.in_transaction:
            end_savepoint(conn, "async_store_appends", keep=False)
        raise
    if guarded:
        end_savepoint(conn, "async_store_appends", keep=True)
    done = [outcome for outcome in outcomes if outcome is not None]
    if len(done) != plan.size:  # every append of the plan is answered, or its caller hangs
        raise RuntimeError(f"{plan.size - len(done)} append(s) of the batch got no outcome")
    return done


def expectation_met(expected: ExpectedVersion, current: int) -> bool:
    """Whether a stream at version ``current`` is what ``expected`` asks for. Raises
    :class:`QueryError` for an expectation that is not one."""
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return current == 0
    if expected is STREAM_EXISTS:
        return current > 0
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return current == expected
    raise QueryError(f"expected_version must be an int >= 0 or a StreamState, not {expected!r}")


def _same_json(stored: str | None, sent: str | None) -> bool:
    """The same JSON value: key order aside (a retry may order an object's keys differently),
    but ``true``, ``1`` and ``1.0`` stay different (Python's ``==`` would merge them)."""
    if stored is None or sent is None:
        return stored is sent
    try:
        return _canonical(stored) == _canonical(sent)
    except ValueError:  # sent text that is not JSON (an EncodedEvent) is not what was stored
        return False


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _replayed(
    stream_id: str, events: list[PreparedEvent], stored: list[sqlite3.Row]
) -> AppendResult:
    """A retried append: the original result if every event is stored as sent."""
    by_id = {row[0]: row for row in stored}
    if len(by_id) != len(events):
        missing = [e.event_id for e in events if e.event_id not in by_id]
        raise ConcurrencyError(
            f"stream {stream_id!r}: {len(by_id)} of {len(events)} event ids are stored already "
            f"and {len(missing)} are not (first missing: {missing[0]}); a retry must resend "
            "exactly the original events"
        )
    for event in events:
        row = by_id[event.event_id]
        same = (row[1], row[4]) == (stream_id, event.type) and _same_json(row[5], event.data)
        if not same or not _same_json(row[6], event.metadata):
            raise ConcurrencyError(
                f"event_id {event.event_id} is stored already with other content (stream "
                f"{row[1]!r}, type {row[4]!r}); an event_id names one event forever"
            )
    versions = sorted(row[2] for row in stored)
    return AppendResult(stream_id, versions[0], versions[-1], max(row[3] for row in stored))
