"""The event store on the events database: durable group-commit appends with optimistic
concurrency and idempotency, paged reads, snapshots, checkpoints and subscriptions.

Appends are queued and coalesced by ``_appends`` and written by the recorder of the database's
backend (``events._recorder``; on SQLite, jobs of the writer, so concurrent appends share one
COMMIT, at ``synchronous=FULL`` in production mode). Each ``await append(...)`` returns once
its events are durable; one append's conflict fails only that append. Reads, snapshots and
checkpoints are plain SQL through the ``Database`` contract.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .._checks import check_int, check_json_text, check_sequence, check_text
from .._clock import utc_now as _now
from .._json import JsonInput, encode_json
from ..database import Database, Row, Transaction, backend_of
from ..errors import ConfigError, PoolClosed, QueryError
from ._appends import Appends
from ._prepared import PreparedEvent, content_hash
from ._recorder import LAST_POSITION, EventRecorder
from .records import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    EncodedEvent,
    ExpectedVersion,
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


_EVENT_COLUMNS = "position, stream_id, version, type, data, metadata, event_id, recorded_at"


class EventStore:
    """The event log of one database (``sql.event_store``)."""

    def __init__(self, database: Database, *, keep_snapshots: int = 3) -> None:
        """``keep_snapshots``: snapshots kept per stream; older ones are pruned when a new one
        is saved (at least 1). Raises :class:`ConfigError` (also a ``ValueError``) below 1."""
        if keep_snapshots < 1:
            raise ConfigError(f"keep_snapshots must be at least 1, not {keep_snapshots}")
        self._db = database
        self._keep_snapshots = keep_snapshots
        self._committed = asyncio.Event()
        self._closed = False
        recorder: EventRecorder = backend_of(database).event_recorder(database)
        self._coalesce_up_to = recorder.rows_per_statement
        """Appends of at most this many events are coalesced with others."""
        self._appends = Appends(database, recorder, self._notify)

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
        stream_id = check_text(stream_id, "stream_id")
        prepared = _prepared(stream_id, events, _now())
        started = time.perf_counter()
        if len(prepared) <= self._coalesce_up_to and not self._db.in_transaction:
            result = await self._appends.coalesced(stream_id, prepared, expected_version)
        else:
            (result,) = await self._appends.apart([(stream_id, prepared, expected_version)])
        self._db.metrics.record("append", time.perf_counter() - started)
        return result

    async def append_many(
        self, appends: Sequence[tuple[str, Sequence[NewEvent | EncodedEvent], ExpectedVersion]]
    ) -> list[AppendResult]:
        """Append to several streams atomically: all of them, or (on any error) none."""
        recorded_at = _now()
        checked = [_check_append(append) for append in check_sequence(appends, "appends")]
        prepared = [
            (stream_id, _prepared(stream_id, events, recorded_at), expected)
            for stream_id, events, expected in checked
        ]
        ids = [e.event_id for _, events, _ in prepared for e in events]
        if len(set(ids)) != len(ids):
            raise QueryError("the same event_id appears twice in one append")
        started = time.perf_counter()
        if len(prepared) == 1 and len(ids) <= self._coalesce_up_to and not self._db.in_transaction:
            results = [await self._appends.coalesced(*prepared[0])]
        else:
            results = await self._appends.apart(prepared)
        self._db.metrics.record("append", time.perf_counter() - started)
        return results

    def _notify(self) -> None:
        """Wake the subscriptions waiting for new events (``Appends`` calls it after a write)."""
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()

    def forget_versions(self) -> None:
        """Forget the stream versions this store learnt from its own appends (it writes a
        coalesced append at the version it learnt, without asking the database). Call it
        before the log is replaced under the store (a restore) or its schema moves (a
        migration): batches planned earlier but written later are then made the careful way,
        and what they commit is not learnt. ``SqlService`` does so itself."""
        self._appends.forget_versions()

    async def drain(self) -> None:
        """Return once every append made so far is written (or has failed): before closing
        the database, so that no accepted append is cut off. Cancelling it does not stop the
        writes. Raises nothing."""
        await self._appends.drain()

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
        return int(await self._db.fetch_val(LAST_POSITION))

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
        check_json_text(state_json, "state_json")
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO aggregate_snapshots(stream_id, version, state, schema_version,"
                " created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(stream_id, version) DO UPDATE"
                " SET state = excluded.state, schema_version = excluded.schema_version,"
                " created_at = excluded.created_at",
                (stream_id, version, state_json, schema_version, _now()),
            )
            await tx.execute(
                "DELETE FROM aggregate_snapshots WHERE stream_id = ? AND version NOT IN"
                " (SELECT version FROM aggregate_snapshots WHERE stream_id = ?"
                " ORDER BY version DESC LIMIT ?)",
                (stream_id, stream_id, keep),
            )

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


def _prepared(
    stream_id: str, events: Sequence[NewEvent | EncodedEvent], recorded_at: str
) -> list[PreparedEvent]:
    """The events of one stream's append, encoded (bad input fails here, before queueing)."""
    if len(check_sequence(events, "events")) == 1:  # most appends: no comprehension to run
        return [PreparedEvent(events[0], recorded_at)]
    prepared = [PreparedEvent(event, recorded_at) for event in events]
    if not prepared:
        raise QueryError(f"append to {stream_id!r}: no events given")
    if len(prepared) > 1 and len({e.event_id for e in prepared}) != len(prepared):
        raise QueryError("the same event_id appears twice in one append")
    return prepared


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


def _recorded(row: Row) -> RecordedEvent:
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
