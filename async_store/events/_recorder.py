"""The recorder contract: what a backend writes for the event store in its own dialect, and the
rules every recorder follows.

The event store (``events.store``, ``events._appends``) checks, encodes and queues appends on
the event loop, and asks the recorder of its database's backend (``backend_of(db)
.event_recorder(db)``; SQLite's is ``sqlite._event_recorder``) to write them: each adapter owns
every statement of its dialect, as eventsourcing's recorders do. Reads, snapshots and
checkpoints are plain SQL through the ``Database`` contract and stay in the store.

Here too: :class:`Plan` (one coalesced write, planned on the event loop), :class:`Waiting` (an
append waiting for one) and the careful append's rules (:func:`expectation_met`,
:func:`version_conflict`, :func:`replayed`), so that every backend answers alike."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias

from ..errors import ConcurrencyError, QueryError, StoreError
from ._prepared import EventRow, PreparedEvent
from .records import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, ExpectedVersion, StreamState

__all__ = [
    "LAST_POSITION",
    "REPLAY_COLUMNS",
    "EventRecorder",
    "Outcome",
    "Plan",
    "StreamAppend",
    "Waiting",
    "expectation_met",
    "replayed",
    "version_conflict",
]

LAST_POSITION = "SELECT coalesce(max(position), 0) FROM events"
"""The position of the newest event (0 when the log is empty), in SQL both dialects run."""

REPLAY_COLUMNS = "event_id, stream_id, version, position, type, data, metadata"
"""The columns of a stored event that :func:`replayed` reads, in its order."""

StreamAppend: TypeAlias = tuple[str, list[PreparedEvent], ExpectedVersion]
"""One stream's append: its id, its events (prepared), the version it expects."""

Outcome: TypeAlias = AppendResult | StoreError
"""How one append of a coalesced write ended."""


class EventRecorder(Protocol):
    """Writes the event store's appends in one backend's dialect (one recorder per database).

    Positions come from the backend: they strictly increase in commit order, so a reader that
    asks for ``position > last`` never skips an event committed later. Errors come back as the
    :class:`StoreError` tree, never as the driver's."""

    @property
    def rows_per_statement(self) -> int:
        """Events one INSERT takes: an append of at most this many is coalesced with others."""
        ...

    @property
    def rows_per_batch(self) -> int:
        """Events of the appends coalesced into one write, at most (a larger append alone)."""
        ...

    def append(self, appends: Sequence[StreamAppend]) -> Awaitable[list[AppendResult]]:
        """Make ``appends`` the careful way, in order, all or none: for each, idempotency
        (:func:`replayed`), then the expected version (:func:`version_conflict`), then its
        rows. Inside a ``transaction()`` block of the database, as part of it; otherwise as a
        transaction of its own. Raises what the first failing append raises."""
        ...

    def write(self, plan: Plan) -> Awaitable[list[Outcome]]:
        """Make a coalesced write as one transaction: ``plan.rows`` in one statement when the
        store still knows what it planned from (``plan.current() == plan.generation``), the
        other appends of the plan the careful way, each failing alone. When that one
        statement fails, every append of the plan is made the careful way instead. Returns
        each append's outcome in batch order; raises only when something unforeseen fails,
        and then nothing of the plan stands. Run again after its transaction rolled back, it
        does the same."""
        ...


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
    one INSERT, and the appends to make one by one (checked against the database). A recorder
    only reads it: run again after its transaction was rolled back, it does the same."""

    __slots__ = ("current", "direct", "generation", "rows", "size", "slow")

    def __init__(self, size: int, generation: int, current: Callable[[], int]) -> None:
        self.size = size
        self.generation = generation
        """What the store knew when it planned (see ``Appends.forget_versions``)."""
        self.current = current
        """What the store knows now: when it has moved on (the log was replaced, a migration
        ran), the versions planned from are void, and every append is made the careful way."""
        self.rows: list[EventRow] = []
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

    def answer_direct(self, outcomes: list[Outcome | None], last_position: int) -> None:
        """Set the outcome of each direct append (in ``outcomes``, by index in the batch),
        once ``rows`` are written in order at positions ending with ``last_position``."""
        position = last_position - len(self.rows)
        for index, append, first in self.direct:
            count = len(append.events)
            position += count
            outcomes[index] = AppendResult(append.stream_id, first, first + count - 1, position)


# -- the careful append's rules --------------------------------------------------------------


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


def version_conflict(
    stream_id: str, expected: ExpectedVersion, current: int
) -> ConcurrencyError | None:
    """The error for an append to a stream at ``current`` that expects ``expected``, or None
    when the expectation is met."""
    if expectation_met(expected, current):
        return None
    return ConcurrencyError(
        f"stream {stream_id!r}: expected {_describe(expected)}, but it is at version {current}"
    )


def _describe(expected: ExpectedVersion) -> str:
    if isinstance(expected, StreamState):
        return expected.value
    return "no stream (version 0)" if expected == 0 else f"version {expected}"


def replayed(
    stream_id: str, events: list[PreparedEvent], stored: Sequence[Sequence[Any]]
) -> AppendResult:
    """A retried append: the original result if every event is stored as sent. ``stored``:
    the rows of its event ids found, each ``(event_id, stream_id, version, position, type,
    data, metadata)``. Raises :class:`ConcurrencyError` when only some are stored or one is
    stored with other content."""
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
