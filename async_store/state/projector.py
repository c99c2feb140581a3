"""The projector: keeps the app_meta tables (knowledge_bases, tools, pipelines, schedules, flows,
settings) equal to the state, by applying the ``$app`` events in order.

Each batch of events and the projector's checkpoint commit in one app_meta transaction, so after
a crash (or a power loss that drops app_meta's newest commits at ``synchronous=NORMAL``) it
resumes exactly where the table rows stopped. Projection writes are idempotent upserts and
deletes, so a batch applied twice leaves the same rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import operator
from collections.abc import Mapping
from typing import Any

from .._json import dumps
from .._tasks import start_background
from ..database import Database, Transaction
from ..errors import PoolClosed, StoreError
from ..events.store import EventStore
from .app_state import COLLECTIONS, AppState
from .deltas import (
    EntityAdd,
    EntityRemove,
    EntityUpdate,
    SettingDelete,
    SettingSet,
    StateDelta,
    delta_from_event,
)
from .entities import Entity

__all__ = ["Projector"]

log = logging.getLogger("async_store.state.projector")

CHECKPOINT = "app_state"
"""The projector's row in ``projection_checkpoints``."""

STREAM = "$app"

_POLL = 1.0
"""Seconds between looks at the log for other processes' appends, when nothing wakes the
projector sooner."""

_FEED_LIMIT = 10_000
"""Committed changes kept in memory for the projector; past this it reads the log instead."""

# Entity field → app_meta column, where they differ; JSON-typed fields are stored as JSON text.
_JSON_FIELDS = {"metadata", "config", "definition", "steps"}
_TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "knowledge_bases": (
        "id",
        "name",
        "description",
        "embedding_model",
        "chunk_size",
        "chunk_overlap",
        "metadata",
    ),
    "tools": ("id", "name", "kind", "description", "config", "enabled"),
    "pipelines": ("id", "name", "kb_id", "description", "steps", "config", "enabled"),
    "schedules": (
        "id",
        "name",
        "pipeline_id",
        "flow_id",
        "cron",
        "interval_seconds",
        "enabled",
        "next_run_at",
        "last_run_at",
    ),
    "flows": ("id", "name", "description", "definition", "enabled"),
}


_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _upsert_sql(table: str, columns: tuple[str, ...], key: str, rows: int = 1) -> str:
    """Insert ``rows`` rows, or update those whose ``key`` exists (in order: within one
    statement a later row of the same key updates the earlier one)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    values = ", ".join([f"({', '.join('?' * len(columns))}, {_NOW})"] * rows)
    return (
        f"INSERT INTO {table}({', '.join(columns)}, updated_at) VALUES {values}"
        f" ON CONFLICT({key}) DO UPDATE SET {updates}, updated_at = excluded.updated_at"
    )


def _delete_sql(table: str, key: str, rows: int = 1) -> str:
    if rows == 1:
        return f"DELETE FROM {table} WHERE {key} = ?"
    return f"DELETE FROM {table} WHERE {key} IN ({', '.join('?' * rows)})"


_UPSERT = {table: _upsert_sql(table, _TABLE_COLUMNS[table], "id") for table in COLLECTIONS}
_CHILDREN_FIRST = ("schedules", "pipelines", "flows", "tools", "knowledge_bases")
assert set(_CHILDREN_FIRST) == set(COLLECTIONS)
_DELETE = {table: _delete_sql(table, "id") for table in COLLECTIONS}
_SET_SETTING = _upsert_sql("settings", ("key", "value"), "key")
_DELETE_SETTING = _delete_sql("settings", "key")
_SET_CHECKPOINT = _upsert_sql("projection_checkpoints", ("name", "position"), "name")

_ROWS_PER_STATEMENT = 32
"""Rows of a run of the same projection statement written by one statement (at most 9
parameters each: within SQLite's oldest limit of 999 per statement)."""

_MANY_ROWS: dict[str, str] = {
    **{
        _UPSERT[table]: _upsert_sql(table, _TABLE_COLUMNS[table], "id", _ROWS_PER_STATEMENT)
        for table in COLLECTIONS
    },
    **{_DELETE[table]: _delete_sql(table, "id", _ROWS_PER_STATEMENT) for table in COLLECTIONS},
    _SET_SETTING: _upsert_sql("settings", ("key", "value"), "key", _ROWS_PER_STATEMENT),
    _DELETE_SETTING: _delete_sql("settings", "key", _ROWS_PER_STATEMENT),
}
"""Each statement, for ``_ROWS_PER_STATEMENT`` rows at once."""


def _row(table: str, entity: Entity) -> tuple[Any, ...]:
    values = entity.to_json()
    row = []
    for column in _TABLE_COLUMNS[table]:
        value = values[column]
        if column in _JSON_FIELDS:
            value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(value, bool):
            value = int(value)
        row.append(value)
    return tuple(row)


def projection_ops(delta: StateDelta) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements that write what ``delta`` changes into the app_meta tables (idempotent
    upserts and deletes). Logs, metrics and errors live in the state only: none."""
    if isinstance(delta, EntityAdd | EntityUpdate):
        return [(_UPSERT[delta.collection], _row(delta.collection, delta.entity))]
    if isinstance(delta, EntityRemove):
        return [(_DELETE[delta.collection], (delta.id,))]
    if isinstance(delta, SettingSet):
        return [(_SET_SETTING, (delta.key, dumps(delta.value)))]
    if isinstance(delta, SettingDelete):
        return [(_DELETE_SETTING, (delta.key,))]
    return []


async def _run_ops(tx: Transaction, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Run ``ops`` in ``tx``, in order. A run of the same statement (a batch of settings, say)
    goes ``_ROWS_PER_STATEMENT`` rows per statement, the rest by ``execute_many``: on SQLite
    each statement lets the GIL go once, where a statement per row takes it back for every row,
    and waits each time for the event loop to let go of it. Two calls per run, whatever its
    length. (A multi-row upsert that names one key twice is SQLite's to take in order; other
    databases refuse it.)"""
    per = _ROWS_PER_STATEMENT
    for sql, run in itertools.groupby(ops, key=operator.itemgetter(0)):
        rows = [parameters for _, parameters in run]
        many = _MANY_ROWS.get(sql)
        whole = 0 if many is None else len(rows) - len(rows) % per
        if many is not None and whole:
            await tx.execute_many(
                many,
                [
                    list(itertools.chain.from_iterable(rows[i : i + per]))
                    for i in range(0, whole, per)
                ],
            )
        if whole < len(rows):
            await tx.execute_many(sql, rows[whole:])


class Projector:
    """Runs in the background of a ``StateManager``."""

    def __init__(
        self, app: Database, store: EventStore, *, batch_size: int = 500, retry_delay: float = 1.0
    ) -> None:
        self._app = app
        self._store = store
        self._batch_size = batch_size
        self._retry_delay = retry_delay
        self._position = 0
        self._fed: collections.deque[tuple[int, StateDelta]] = collections.deque()
        self._fed_through = 0
        """The newest version fed."""
        self._look_in_log = True
        """Whether the log may hold changes the feed did not bring: at start (the checkpoint
        may be behind), after a read of the log that came back full (there may be more), when
        polled for other processes' appends, when a waiter asks. Not after a batch taken from
        the feed: reading the log then raced the feed and decoded from disk what memory
        held."""
        self._wake = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0
        """Batches that failed and were retried."""
        self.last_error: str | None = None

    @property
    def position(self) -> int:
        """The ``$app`` version the tables reflect."""
        return self._position

    async def start(self) -> None:
        self._position = await self.checkpoint()
        self._task = start_background(self._run(), name="async_store.state.projector")

    async def checkpoint(self) -> int:
        value = await self._app.fetch_val(
            "SELECT position FROM projection_checkpoints WHERE name = ?", (CHECKPOINT,)
        )
        return 0 if value is None else int(value)

    def wake(self) -> None:
        """New events may be waiting in the log."""
        self._look_in_log = True
        self._wake.set()

    def feed(self, version: int, delta: StateDelta) -> None:
        """The change of ``version`` is committed to the log: project it from memory instead of
        reading it back. Changes must come in version order; anything the feed misses (another
        process's appends, a feed that overflowed while the projector was stuck) is read from
        the log."""
        fed = self._fed
        if (fed and fed[-1][0] + 1 != version) or len(fed) >= _FEED_LIMIT:
            fed.clear()
        fed.append((version, delta))
        self._fed_through = version
        self._wake.set()

    async def wait_for(self, version: int) -> None:
        """Return once the tables reflect ``version``. A projector waiting to retry a failed
        batch retries at once; raises if that attempt fails too (the error says why) or if the
        projector stopped."""
        failures: int | None = None
        while self._position < version:
            if self._task is None or self._task.done():
                raise PoolClosed(f"the projector stopped at version {self._position}")
            if self.last_error is not None:
                if failures is not None and self.failures > failures:
                    raise StoreError(
                        f"projection is stuck at version {self._position}: {self.last_error}"
                    )
                if failures is None:
                    failures = self.failures
                self._retry_now.set()
            progress = self._progress
            if self._fed_through < version:
                self._look_in_log = True  # the feed will not bring it; the log may
            self._wake.set()
            await progress.wait()

    async def _run(self) -> None:
        while not self._closed:
            # Cleared before looking, so a wake-up that arrives while a batch is read is kept.
            self._wake.clear()
            try:
                moved = await self._project_batch()
            except PoolClosed:
                return
            except StoreError as exc:
                self._look_in_log = True  # what the failed batch took from the feed is gone
                self.failures += 1
                self.last_error = str(exc)
                log.error("projection of %s stopped at version %d: %s", STREAM, self._position, exc)
                self._signal_progress()  # waiters see the error instead of waiting on
                with contextlib.suppress(TimeoutError):
                    # Until the retry is due, or a flush() asks for it now.
                    async with asyncio.timeout(self._retry_delay):
                        await self._retry_now.wait()
                self._retry_now.clear()
                continue
            if moved or self._closed:
                continue
            try:
                async with asyncio.timeout(_POLL):
                    await self._wake.wait()
            except TimeoutError:
                self._look_in_log = True  # poll now and then: another process may append

    def _signal_progress(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    async def _project_batch(self) -> bool:
        changes = self._take_fed()
        if not changes and (self._look_in_log or self._fed):  # (fed, but after a gap)
            self._look_in_log = False
            changes = await self._read_log()
            if len(changes) >= self._batch_size:
                self._look_in_log = True  # catching up: read on without waiting for a poll
        if not changes:
            return False
        ops = [op for _, delta in changes for op in projection_ops(delta)]
        last = changes[-1][0]
        ops.append((_SET_CHECKPOINT, (CHECKPOINT, last)))
        # The batch and its checkpoint: one transaction, so the tables and the checkpoint move
        # together (exactly once, whenever the projector stops).
        async with self._app.transaction() as tx:
            await _run_ops(tx, ops)
        self._position = last
        self.last_error = None
        self._signal_progress()
        return True

    def _take_fed(self) -> list[tuple[int, StateDelta]]:
        """The fed changes that follow the position without a gap, up to a batch."""
        fed, position = self._fed, self._position
        while fed and fed[0][0] <= position:
            fed.popleft()
        if not fed or fed[0][0] != position + 1:
            return []
        return [fed.popleft() for _ in range(min(len(fed), self._batch_size))]

    async def _read_log(self) -> list[tuple[int, StateDelta]]:
        changes: list[tuple[int, StateDelta]] = []
        async for event in self._store.read_stream(
            STREAM, self._position + 1, batch_size=self._batch_size
        ):
            changes.append((event.version, delta_from_event(event.type, event.data)[0]))
            if len(changes) >= self._batch_size:
                break
        return changes

    async def rebuild(self, state: AppState) -> None:
        """Make the tables equal to ``state`` (upserting every entity and setting, deleting
        rows the state does not hold) and set the checkpoint to its version, in one
        transaction. Rows of other tables that refer to a deleted row cascade with it."""
        async with self._app.transaction() as tx:
            # Children before parents when deleting, parents before children when writing,
            # so no foreign key (ON DELETE RESTRICT included) is ever violated half-way.
            for table in _CHILDREN_FIRST:
                entities: Mapping[str, Entity] = state.collection(table)
                stored = {row[0] for row in await tx.fetch_all(f"SELECT id FROM {table}")}
                for gone in stored - set(entities):
                    await tx.execute(_DELETE[table], (gone,))
            for table in reversed(_CHILDREN_FIRST):
                entities = state.collection(table)
                await tx.execute_many(
                    _UPSERT[table], [_row(table, entity) for entity in entities.values()]
                )
            keys = {row[0] for row in await tx.fetch_all("SELECT key FROM settings")}
            for gone in keys - set(state.settings):
                await tx.execute(_DELETE_SETTING, (gone,))
            await tx.execute_many(
                _SET_SETTING,
                [(k, dumps(v)) for k, v in state.settings.items()],
            )
            await tx.execute(_SET_CHECKPOINT, (CHECKPOINT, state.version))
        self._position = state.version
        self._signal_progress()

    async def close(self) -> None:
        """Stop after the batch in progress (a batch is one transaction: cancelling it half-way
        would only roll it back)."""
        self._closed = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._signal_progress()
