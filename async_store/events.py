"""The event store on the events database: durable group-commit appends with optimistic
concurrency and idempotency, paged reads, snapshots, checkpoints and subscriptions.

Appends are jobs of the events database's writer, so concurrent appends share one COMMIT (at
``synchronous=FULL`` in production mode) and each ``await append(...)`` returns once its events
are durable. One append's conflict fails only that append.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, TypeAlias

from ._checks import check_int, check_sequence, check_text
from ._clock import utc_now as _now
from ._ids import new_id
from ._json import JsonInput, encode_json
from .database import Database, Transaction
from .errors import ConcurrencyError, PoolClosed, QueryError

__all__ = [
    "encode_json",
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


_EVENT_COLUMNS = "position, stream_id, version, type, data, metadata, event_id, recorded_at"


class _Prepared:
    """An event encoded on the event loop (so bad input fails before anything is queued)."""

    __slots__ = ("data", "event_id", "metadata", "recorded_at", "type")

    def __init__(self, event: NewEvent | EncodedEvent, recorded_at: str) -> None:
        if not isinstance(event, NewEvent | EncodedEvent):
            raise QueryError(f"an event must be a NewEvent, not a {type(event).__name__}")
        self.type = check_text(event.type, "an event type")
        self.event_id = (
            new_id() if event.event_id is None else check_text(event.event_id, "event_id")
        )
        if isinstance(event, EncodedEvent):
            self.data: str = _check_json_text(event.data_json, "data_json")
            self.metadata: str | None = (
                None
                if event.metadata_json is None
                else _check_json_text(event.metadata_json, "metadata_json")
            )
        else:
            self.data = encode_json(event.data, f"event {self.type!r} data")
            self.metadata = (
                None
                if event.metadata is None
                else encode_json(event.metadata, f"event {self.type!r} metadata")
            )
        self.recorded_at = recorded_at

    def content_hash(self, stream_id: str, version: int) -> str:
        return content_hash(
            self.event_id, stream_id, version, self.type, self.data, self.metadata, self.recorded_at
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
    meta = "null" if metadata is None else _json_text(metadata)
    material = (
        f"[{_json_text(event_id)}, {_json_text(stream_id)}, {int(version)}, {_json_text(type_)},"
        f" {_json_text(data)}, {meta}, {_json_text(recorded_at)}]"
    )
    return hashlib.sha256(material.encode("ascii")).hexdigest()


_json_text = encode_basestring_ascii
"""A str as a JSON string literal, non-ASCII escaped: what ``json.dumps`` writes for it."""


def _describe(expected: ExpectedVersion) -> str:
    if isinstance(expected, StreamState):
        return expected.value
    return "no stream (version 0)" if expected == 0 else f"version {expected}"


class EventStore:
    """The event log of one database (``sql.event_store``)."""

    def __init__(self, database: Database, *, keep_snapshots: int = 3) -> None:
        """``keep_snapshots``: snapshots kept per stream; older ones are pruned when a new one
        is saved (at least 1)."""
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots must be at least 1, not {keep_snapshots}")
        self._db = database
        self._keep_snapshots = keep_snapshots
        self._committed = asyncio.Event()
        self._closed = False

    @property
    def database(self) -> Database:
        """The database holding the log."""
        return self._db

    # -- appending ---------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent | EncodedEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` at versions ``current+1 ...`` and return once
        they are committed (durably at ``synchronous=FULL``).

        Idempotency is checked before the version: when every ``event_id`` is stored already
        (with the same content), the original result is returned and nothing is written.
        Raises :class:`ConcurrencyError` when the stream is not at ``expected_version``, when
        only some of the ids are stored, or when an id is stored with other content; and
        :class:`QueryError` for data that is not JSON. Nothing is written when it raises.
        """
        (result,) = await self.append_many([(stream_id, events, expected_version)])
        return result

    async def append_many(
        self, appends: Sequence[tuple[str, Sequence[NewEvent | EncodedEvent], ExpectedVersion]]
    ) -> list[AppendResult]:
        """Append to several streams atomically: all of them, or (on any error) none."""
        recorded_at = _now()
        checked = [_check_append(append) for append in check_sequence(appends, "appends")]
        prepared = [
            (stream_id, [_Prepared(e, recorded_at) for e in events], expected)
            for stream_id, events, expected in checked
        ]
        for stream_id, events, _ in prepared:
            if not events:
                raise QueryError(f"append to {stream_id!r}: no events given")
        ids = [e.event_id for _, events, _ in prepared for e in events]
        if len(set(ids)) != len(ids):
            raise QueryError("the same event_id appears twice in one append")
        # One stream and few enough events for one INSERT: a failure leaves nothing behind, so
        # the group commit needs no savepoint around it.
        atomic = len(prepared) == 1 and len(ids) <= _ROWS_PER_INSERT
        started = time.perf_counter()
        results = await self._db.run_in_transaction(
            lambda conn: [_append(conn, s, events, expected) for s, events, expected in prepared],
            "append",
            atomic=atomic,
        )
        self._db.metrics.record("append", time.perf_counter() - started)
        self._notify()
        return results

    def _notify(self) -> None:
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()

    # -- reading -----------------------------------------------------------------------------

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        version = await self._db.fetch_val(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?",
            (_check_stream(stream_id),),
        )
        return int(version)

    async def last_position(self) -> int:
        """The position of the newest event in the log (0 when empty)."""
        return int(await self._db.fetch_val("SELECT coalesce(max(position), 0) FROM events"))

    async def read_stream(
        self, stream_id: str, from_version: int = 1, *, batch_size: int = 500
    ) -> AsyncIterator[RecordedEvent]:
        """The stream's events with version >= ``from_version``, ascending, fetched
        ``batch_size`` at a time (memory stays flat on long streams)."""
        _check_stream(stream_id)
        _check_batch(batch_size)
        version = check_int(from_version, "from_version") - 1
        while True:
            rows = await self._db.fetch_all(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version > ?"
                " ORDER BY version LIMIT ?",
                (stream_id, version, batch_size),
            )
            for row in rows:
                yield _recorded(row)
            if len(rows) < batch_size:
                return
            version = rows[-1]["version"]

    async def read_all(
        self, from_position: int = 0, *, batch_size: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        """Every event with a position greater than ``from_position``, ascending, fetched
        ``batch_size`` at a time."""
        _check_batch(batch_size)
        position = check_int(from_position, "from_position")
        while True:
            rows = await self._db.fetch_all(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (position, batch_size),
            )
            for row in rows:
                yield _recorded(row)
            if len(rows) < batch_size:
                return
            position = rows[-1]["position"]

    async def subscribe(
        self, from_position: int = 0, *, poll_interval: float = 0.5, batch_size: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        """Events after ``from_position``: first those stored, then each new one as it
        commits. Appends through this store wake the subscription at once; appends by other
        processes are found by polling every ``poll_interval`` seconds. Ends when the store or
        its database closes."""
        position = check_int(from_position, "from_position")
        _check_batch(batch_size)
        while not self._closed:
            waiter = self._committed
            try:
                async for event in self.read_all(position, batch_size=batch_size):
                    position = event.position
                    yield event
            except PoolClosed:
                return
            if self._closed:
                return
            try:
                async with asyncio.timeout(poll_interval):
                    await waiter.wait()
            except TimeoutError:
                pass

    # -- snapshots ---------------------------------------------------------------------------

    async def save_snapshot(
        self, stream_id: str, version: int, state: JsonInput, schema_version: int = 1
    ) -> None:
        """Store the stream's ``state`` as of ``version`` and prune all but the newest
        ``keep_snapshots`` snapshots of the stream."""
        text = encode_json(state, f"snapshot of {stream_id!r}")
        await self.save_snapshot_json(stream_id, version, text, schema_version)

    async def save_snapshot_json(
        self, stream_id: str, version: int, state_json: str, schema_version: int = 1
    ) -> None:
        """:meth:`save_snapshot` for a state already encoded as JSON text (encoding a large
        state is best done off the event loop)."""
        keep = self._keep_snapshots
        _check_stream(stream_id)
        check_int(version, "a snapshot's version", 0)
        check_int(schema_version, "schema_version", 1)
        if not isinstance(state_json, str):
            raise QueryError(f"state_json must be JSON text, not a {type(state_json).__name__}")

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO aggregate_snapshots(stream_id, version, state,"
                " schema_version, created_at) VALUES (?, ?, ?, ?, ?)",
                (stream_id, version, state_json, schema_version, _now()),
            )
            conn.execute(
                "DELETE FROM aggregate_snapshots WHERE stream_id = ? AND version NOT IN"
                " (SELECT version FROM aggregate_snapshots WHERE stream_id = ?"
                " ORDER BY version DESC LIMIT ?)",
                (stream_id, stream_id, keep),
            )

        await self._db.run_in_transaction(save, "save_snapshot")

    async def load_snapshot(
        self, stream_id: str, *, schema_version: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot of the stream (of ``schema_version`` when given), or None."""
        _check_stream(stream_id)
        if schema_version is None:
            row = await self._db.fetch_one(
                "SELECT stream_id, version, state, schema_version, created_at"
                " FROM aggregate_snapshots WHERE stream_id = ? ORDER BY version DESC LIMIT 1",
                (stream_id,),
            )
        else:
            row = await self._db.fetch_one(
                "SELECT stream_id, version, state, schema_version, created_at"
                " FROM aggregate_snapshots WHERE stream_id = ? AND schema_version = ?"
                " ORDER BY version DESC LIMIT 1",
                (stream_id, schema_version),
            )
        if row is None:
            return None
        return Snapshot(row[0], row[1], json.loads(row[2]), row[3], row[4])

    # -- checkpoints -------------------------------------------------------------------------

    async def get_checkpoint(self, name: str) -> int:
        """The position stored under ``name`` (0 when none)."""
        position = await self._db.fetch_val(
            "SELECT position FROM event_checkpoints WHERE name = ?",
            (check_text(name, "a checkpoint name"),),
        )
        return 0 if position is None else int(position)

    async def set_checkpoint(
        self, name: str, position: int, *, transaction: Transaction | None = None
    ) -> None:
        """Move the checkpoint ``name`` forward to ``position`` (a lower position is ignored).

        With ``transaction`` (a ``transaction()`` of the events database) the checkpoint moves
        in that transaction, together with the consumer's own writes: both commit or neither
        does, so a consumer that resumes from its checkpoint handles each event exactly once.
        """
        check_text(name, "a checkpoint name")
        check_int(position, f"checkpoint {name!r}: position", 0)
        sql = (
            "INSERT INTO event_checkpoints(name, position, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET position = excluded.position,"
            " updated_at = excluded.updated_at WHERE excluded.position > event_checkpoints.position"
        )
        target = self._db if transaction is None else transaction
        await target.execute(sql, (name, position, _now()))

    # -- integrity ---------------------------------------------------------------------------

    async def verify_events(self, *, batch_size: int = 5000) -> VerificationReport:
        """Recompute every event's content hash and check that every stream's versions run
        without gaps: finds values changed on disk that SQLite's own checks cannot see."""
        altered: list[int] = []
        checked = 0
        position = 0
        while True:
            rows = await self._db.fetch_all(
                "SELECT position, event_id, stream_id, version, type, data, metadata,"
                " recorded_at, content_hash FROM events WHERE position > ?"
                " ORDER BY position LIMIT ?",
                (position, batch_size),
            )
            for row in rows:
                expected = content_hash(row[1], row[2], row[3], row[4], row[5], row[6], row[7])
                if expected != row[8]:
                    altered.append(row[0])
            checked += len(rows)
            if len(rows) < batch_size:
                break
            position = rows[-1][0]
        broken = await self._db.fetch_all(
            "SELECT stream_id FROM events GROUP BY stream_id"
            " HAVING min(version) != 1 OR max(version) != count(*) ORDER BY stream_id"
        )
        return VerificationReport(checked, tuple(altered), tuple(row[0] for row in broken))

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """End every subscription (at its next wake-up, at once for waiting ones)."""
        self._closed = True
        self._committed.set()


def _check_stream(stream_id: object) -> str:
    return check_text(stream_id, "stream_id")


def _check_batch(batch_size: object) -> None:
    check_int(batch_size, "batch_size", 1)


def _check_append(append: object) -> tuple[str, Sequence[Any], ExpectedVersion]:
    """One ``(stream_id, events, expected_version)`` of ``append_many``."""
    if not isinstance(append, tuple) or len(append) != 3:
        got = f"{len(append)} items" if isinstance(append, tuple) else type(append).__name__
        raise QueryError(
            f"append_many() takes (stream_id, events, expected_version) tuples, not {got}"
        )
    stream_id, events, expected = append
    return _check_stream(stream_id), check_sequence(events, "events"), expected


def _check_json_text(text: object, what: str) -> str:
    """JSON text of an ``EncodedEvent``: a str (the database refuses text that is not JSON)."""
    if not isinstance(text, str):
        raise QueryError(f"an EncodedEvent's {what} must be JSON text, not a {type(text).__name__}")
    return text


def _recorded(row: sqlite3.Row) -> RecordedEvent:
    metadata = row[5]
    return RecordedEvent(
        row[0],
        row[1],
        row[2],
        row[3],
        json.loads(row[4]),
        None if metadata is None else json.loads(metadata),
        row[6],
        row[7],
    )


def _append(
    conn: sqlite3.Connection,
    stream_id: str,
    events: list[_Prepared],
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
    if not _matches(expected, current):
        raise ConcurrencyError(
            f"stream {stream_id!r}: expected {_describe(expected)}, but it is at version {current}"
        )
    rows = [
        (
            event.event_id,
            stream_id,
            version,
            event.type,
            event.data,
            event.metadata,
            event.recorded_at,
            event.content_hash(stream_id, version),
        )
        for version, event in enumerate(events, start=current + 1)
    ]
    position = 0
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        cursor = conn.execute(
            _INSERT_EVENTS + ", ".join([_EVENT_VALUES] * len(chunk)),
            [value for row in chunk for value in row],
        )
        position = cursor.lastrowid or 0
    return AppendResult(stream_id, current + 1, current + len(events), position)


_INSERT_EVENTS = (
    "INSERT INTO events(event_id, stream_id, version, type, data, metadata, recorded_at,"
    " content_hash) VALUES "
)
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_INSERT = 100
"""Events written by one multi-row INSERT (8 parameters each: within SQLite's oldest limit of
999 parameters per statement). An append of up to this many events is one statement."""


def _matches(expected: ExpectedVersion, current: int) -> bool:
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
    return _canonical(stored) == _canonical(sent)


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _replayed(stream_id: str, events: list[_Prepared], stored: list[sqlite3.Row]) -> AppendResult:
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
