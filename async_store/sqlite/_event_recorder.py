"""The event store's recorder on SQLite (``events._recorder.EventRecorder``): the appends
written on the writer's thread, every statement of them in SQLite's dialect.

A coalesced write (``write_plan``) is one multi-row INSERT of the appends whose stream version
the store knew, positions read from ``lastrowid`` (``AUTOINCREMENT`` hands them out in commit
order: there is one writer); the careful append (``append_rows``) checks idempotency, then the
expected version, then inserts 100 events per statement. Both run as jobs of the database's
writer (``SqliteDatabase.run_in_transaction``), so they share its group commit."""

from __future__ import annotations

import functools
import itertools
import operator
import sqlite3
from collections.abc import Awaitable, Iterable, Sequence

from ..events._prepared import EventRow, PreparedEvent
from ..events._recorder import (
    REPLAY_COLUMNS,
    Outcome,
    Plan,
    StreamAppend,
    replayed,
    version_conflict,
)
from ..events.records import AppendResult, ExpectedVersion
from ._connection import end_savepoint
from ._errors import translate
from .database import SqliteDatabase

__all__ = [
    "ROWS_PER_BATCH",
    "ROWS_PER_INSERT",
    "SqliteEventRecorder",
    "append_rows",
    "write_plan",
]


ROWS_PER_INSERT = 100
"""Events written by one multi-row INSERT (8 parameters each: within SQLite's oldest limit of
999 parameters per statement). An append of up to this many events is one statement."""

ROWS_PER_BATCH = 4095 if sqlite3.sqlite_version_info >= (3, 32, 0) else 124
"""Events of the appends coalesced into one INSERT: 8 parameters each, within the 32,766
parameters a statement may have since SQLite 3.32 (999 before)."""


class SqliteEventRecorder:
    """The appends of one SQLite database's event store, as jobs of its writer. (Its methods
    return the writer's job itself, not a coroutine of their own: one frame less per write.)"""

    __slots__ = ("_db",)

    rows_per_statement = ROWS_PER_INSERT
    rows_per_batch = ROWS_PER_BATCH

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database

    def append(self, appends: Sequence[StreamAppend]) -> Awaitable[list[AppendResult]]:
        return self._db.run_in_transaction(
            lambda conn: [
                append_rows(conn, s, events, expected) for s, events, expected in appends
            ],
            "append",
        )

    def write(self, plan: Plan) -> Awaitable[list[Outcome]]:
        return self._db.run_in_transaction(
            functools.partial(write_plan, plan=plan, database=self._db.name), "append", atomic=True
        )


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
            f"SELECT {REPLAY_COLUMNS} FROM events WHERE event_id IN ({placeholders})"
            " ORDER BY position",
            ids,
        ).fetchall()
        return replayed(stream_id, events, stored)
    conflict = version_conflict(stream_id, expected, current)
    if conflict is not None:
        raise conflict
    rows = [
        event.row(stream_id, version) for version, event in enumerate(events, start=current + 1)
    ]
    position = 0
    for start in range(0, len(rows), ROWS_PER_INSERT):
        position = _insert_events(conn, rows[start : start + ROWS_PER_INSERT])
    return AppendResult(stream_id, current + 1, current + len(events), position)


def _insert_events(conn: sqlite3.Connection, rows: list[EventRow]) -> int:
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


def write_plan(conn: sqlite3.Connection, plan: Plan, database: str) -> list[Outcome]:
    """Runs on the writer's thread: the direct rows in one INSERT, then the other appends, each
    in a savepoint of its own. Returns each append's result or error (translated; ``database``
    names the database in its message), in batch order; raises only when something unforeseen
    fails, and then nothing of the plan stands (a savepoint spans the plan whenever more than
    the one INSERT runs)."""
    outcomes: list[Outcome | None] = [None] * plan.size
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
                plan.answer_direct(outcomes, last)
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
                error = translate(exc, database=database, sql="append")
                if error is not exc:
                    error.__cause__ = exc
                outcomes[index] = error
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
