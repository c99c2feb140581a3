"""``StateManager``: an actor that owns the application state.

Callers send ``StateDelta`` messages over a bounded ``asyncio.Queue`` and await a reply. One
consumer task takes the messages in order and, for each, **decides** (validates against the
current state; an invalid delta is answered with ``InvalidDelta`` and changes nothing),
**appends** the resulting event to the ``$app`` stream of the event store, **applies** it to a new
immutable ``AppState``, **swaps** the reference readers see, and **replies**. Messages waiting
together are decided in order and appended in one call, so they share one durable COMMIT. If
the consumer dies, the calls it had taken or that waited for it fail, and the manager rebuilds
the state from the store and starts a new consumer for the calls made meanwhile.
The messages, their mailbox and what the consumer keeps of them are in ``_messages``, loading
the state and saving its snapshots in ``_snapshots``, and the ``subscribe()`` readers in
``_subscribers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol

from .._futures import fail, resolve
from .._shield import uncancellable
from .._tasks import start_background
from ..database import Database
from ..errors import (
    ConcurrencyError,
    ConfigError,
    InvalidDelta,
    StateManagerClosed,
    StateManagerFull,
    StoreError,
)
from ..events.store import EventStore
from ._messages import STOP, Accepted, Kind, Mailbox, Message, encoded
from ._snapshots import load_state, save_snapshot
from ._subscribers import Subscriptions
from .app_state import AppState, Change, Limits, apply_event, apply_in_place, decide, draft
from .deltas import StateDelta, delta_from_event, inverse
from .projector import STREAM, Projector

__all__ = ["StateManager", "StateManagerFull", "Storage"]

log = logging.getLogger("async_store.state")


class Storage(Protocol):
    """What the manager needs of a service (``SqlService`` provides it)."""

    @property
    def app(self) -> Database: ...

    @property
    def events(self) -> Database: ...

    @property
    def event_store(self) -> EventStore: ...

    def attach(self, component: Any) -> None: ...

    def detach(self, component: Any) -> None: ...


class StateManager:
    """``async with StateManager(sql) as state``: load, serve, and on exit drain and stop."""

    def __init__(
        self,
        sql: Storage,
        *,
        queue_size: int = 1024,
        snapshot_every: int = 1000,
        limits: Limits | None = None,
        batch_size: int = 256,
        project: bool = True,
        subscriber_buffer: int = 1000,
    ) -> None:
        """``queue_size``: messages waiting for the consumer before ``mutate`` waits (and
        ``mutate_nowait`` raises) — a bound on memory and on how stale a reply can be.
        ``snapshot_every``: events between snapshots of the state. ``limits``: bounds of the
        logs, metrics, errors and the undo depth. ``batch_size``: most messages decided and
        appended together. ``project``: keep the app_meta tables equal to the state.
        ``subscriber_buffer``: changes a slow ``subscribe()`` reader may fall behind."""
        if queue_size < 1 or snapshot_every < 1 or batch_size < 1:
            raise ConfigError("queue_size, snapshot_every and batch_size must be at least 1")
        self._sql = sql
        self._store = sql.event_store
        self._queue_size = queue_size
        self._snapshot_every = snapshot_every
        self._limits = limits or Limits()
        self._batch_size = batch_size
        self._projector = Projector(sql.app, sql.event_store) if project else None
        self._state = AppState()
        self._mailbox = Mailbox(queue_size)
        self._consumer: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._rebuilding: asyncio.Task[None] | None = None
        self._closing = False
        self._snapshotting: asyncio.Task[None] | None = None
        self._snapshot_version = 0
        self._subscriptions = Subscriptions(subscriber_buffer)
        self._in_flight: list[Message] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the newest snapshot, replay the events after it, start the consumer (and the
        projector)."""
        self._state = await load_state(self._store, self._limits)
        self._snapshot_version = self._state.version
        self._start_consumer()
        if self._projector is not None:
            await self._projector.start()
        self._sql.attach(self)

    def _start_consumer(self) -> None:
        """Serve ``self._mailbox`` (messages may already wait in it)."""
        self._failure = None
        self._consumer = start_background(
            self._consume(self._mailbox.queue), name="async_store.state.consumer"
        )
        self._consumer.add_done_callback(self._consumer_done)

    async def restart(self) -> None:
        """Stop the consumer (failing what it had taken or was waiting for it), rebuild the
        state from the store, and serve again. A consumer that dies is replaced this way on
        its own; call this after that rebuild failed (``StateManagerClosed`` from every call),
        once the store serves again. Raises :class:`StateManagerClosed` once the manager is
        closing, and the store's error (or ``StateManagerClosed`` from another) if the rebuild
        failed."""
        if self._closing:
            raise StateManagerClosed("the state manager is closed")
        consumer = self._consumer
        if consumer is not None and not consumer.done():
            consumer.cancel()  # its end starts the rebuild
            await asyncio.wait([consumer])
        rebuilding = self._start_rebuild()
        await asyncio.shield(rebuilding)  # a cancelled caller leaves it to finish
        if isinstance(self._failure, StoreError):
            raise self._failure
        if self._failure is not None:
            raise StateManagerClosed("rebuilding the state from the store failed") from (
                self._failure
            )

    def _start_rebuild(self) -> asyncio.Task[None]:
        """The rebuild under way, or a new one."""
        if self._rebuilding is None or self._rebuilding.done():
            self._rebuilding = start_background(self._rebuild(), name="async_store.state.rebuild")
        return self._rebuilding

    async def _rebuild(self) -> None:
        """The state from the store, then a new consumer for the calls that queued meanwhile;
        if the store cannot be read, those calls fail and so do later ones."""
        try:
            state = await load_state(self._store, self._limits)
        except BaseException as exc:
            self._failure = exc
            self._abandon_mailbox(self._stopped_error())
            if not isinstance(exc, Exception):
                raise
            log.error("rebuilding the state from the store failed", exc_info=exc)
            return
        self._state = state
        self._snapshot_version = state.version
        self._start_consumer()
        if self._projector is not None:
            self._projector.wake()  # whatever the dead consumer committed and did not hand over

    async def close(self) -> None:
        """Serve every message already accepted, wait for their projection, then stop.
        Later calls raise :class:`StateManagerClosed`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._rebuilding is not None:
            with contextlib.suppress(BaseException):
                await uncancellable(self._rebuilding)  # then its consumer serves what it queued
        consumer = self._consumer
        if consumer is not None and not consumer.done():
            await self._mailbox.put(STOP)  # (False if the consumer died meanwhile)
            with contextlib.suppress(BaseException):
                await uncancellable(consumer)
        if self._snapshotting is not None:
            with contextlib.suppress(BaseException):
                await uncancellable(self._snapshotting)
        if self._projector is not None:
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(10):
                    await self._projector.wait_for(self._state.version)
            await self._projector.close()
        self._subscriptions.end()
        self._sql.detach(self)

    async def __aenter__(self) -> StateManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- calls -----------------------------------------------------------------------------

    def __del__(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None and not consumer.done() and not self._closing:
            warnings.warn(
                "StateManager was never closed; use 'async with' or 'await close()'",
                ResourceWarning,
                stacklevel=1,
            )

    def read_state(self) -> AppState:
        """The current state: immutable, shared, no lock, no copy."""
        return self._state

    async def mutate(self, delta: StateDelta) -> int:
        """Apply ``delta`` and return the new state version, once the change is durable.

        Raises :class:`InvalidDelta` (nothing changed), :class:`StateManagerClosed`, or the
        store's error when the append failed (nothing changed). Cancelling the caller before
        its turn drops the delta; after its turn the change stands."""
        started = time.perf_counter()
        result: int = await self._call("delta", delta)
        self._sql.events.metrics.record("mutate", time.perf_counter() - started)
        return result

    def mutate_nowait(self, delta: StateDelta) -> asyncio.Future[int]:
        """Queue ``delta`` without waiting; the future gets the new version (cancelled before
        the delta's turn, it drops the delta). Raises :class:`StateManagerFull` when the queue
        is full."""
        message = self._message("delta", delta)
        try:
            self._mailbox.queue.put_nowait(message)
        except asyncio.QueueFull:
            raise StateManagerFull(
                f"the state manager's queue is full ({self._queue_size} messages)"
            ) from None
        return message.future

    async def undo(self) -> bool:
        """Take back the newest undoable change (appending its compensating event); False
        when there is nothing to undo."""
        result: bool = await self._call("undo", None)
        return result

    async def redo(self) -> bool:
        """Re-apply the newest undone change; False when there is nothing to redo. A new
        mutation clears what could be redone."""
        result: bool = await self._call("redo", None)
        return result

    async def flush(self) -> int:
        """Return once everything accepted so far is persisted and projected; the version."""
        version: int = await self._call("flush", None)
        if self._projector is not None:
            await self._projector.wait_for(version)
        return version

    async def rebuild_projections(self) -> None:
        """Rebuild the app_meta tables from the whole event log (replayed from version 0)."""
        if self._projector is None:
            raise StateManagerClosed("this state manager was created with project=False")
        version = await self.flush()
        state = AppState()
        async for event in self._store.read_stream(STREAM, 1, batch_size=2000):
            if event.version > version:
                break
            state = apply_event(state, event.type, event.data, event.metadata, self._limits)
        await self._projector.rebuild(state)

    def subscribe(self) -> AsyncIterator[tuple[int, StateDelta]]:
        """``(version, delta)`` for each change accepted after the iteration starts (the first
        ``anext()``), in order. Ends when the manager closes; raises :class:`StoreError` if
        the reader falls more than ``subscriber_buffer`` changes behind, and
        :class:`StateManagerClosed` if the consumer dies (the manager serves on; subscribe
        again for the changes after that)."""
        return self._subscriptions.follow()

    @property
    def projected_version(self) -> int:
        """The version the app_meta tables reflect (lags behind the state briefly)."""
        return self._projector.position if self._projector is not None else 0

    @property
    def projection_lag(self) -> int:
        """Changes accepted but not yet in the app_meta tables (0 without a projector)."""
        if self._projector is None:
            return 0
        return max(0, self._state.version - self._projector.position)

    @property
    def projection_error(self) -> str | None:
        """The last projection error, while projections are stuck on it."""
        return None if self._projector is None else self._projector.last_error

    def _message(self, kind: Kind, delta: StateDelta | None) -> Message:
        if kind == "delta" and not isinstance(delta, StateDelta):
            raise InvalidDelta(f"mutate() takes a StateDelta, not {type(delta).__name__}")
        if self._closing:
            raise StateManagerClosed("the state manager is closed")
        if self._failure is not None and (self._rebuilding is None or self._rebuilding.done()):
            raise self._stopped_error()
        if self._consumer is None:
            raise StateManagerClosed("the state manager was not started")
        return Message(kind, delta, asyncio.get_running_loop().create_future())

    async def _call(self, kind: Kind, delta: StateDelta | None) -> Any:
        message = self._message(kind, delta)
        mailbox = self._mailbox
        try:
            try:
                mailbox.queue.put_nowait(message)  # (the common case: no coroutine to await)
            except asyncio.QueueFull:
                if not await mailbox.put(message) or mailbox.abandoned:
                    # The consumer stopped while this caller waited for room in its mailbox:
                    # nobody will ever take the message.
                    raise self._stopped_error() from None
            # A cancelled caller cancels the message's future too: the consumer skips the
            # message if its turn has not come, and otherwise answers nobody (the change
            # stands).
            return await message.future
        except asyncio.CancelledError:
            message.abandoned = True
            raise

    # -- the consumer ------------------------------------------------------------------------

    async def _consume(self, queue: asyncio.Queue[Message | object]) -> None:
        while True:
            first = await queue.get()
            if first is STOP:
                return
            batch = [first]
            while len(batch) < self._batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            stop = STOP in batch
            messages = [m for m in batch if isinstance(m, Message)]
            # Kept until answered: if the consumer dies half-way, _consumer_done fails them.
            self._in_flight = messages
            await self._process(messages)
            self._in_flight = []
            if stop:
                return

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        """The consumer ended. A clean stop (close()) refuses whatever slipped in behind it.
        A death fails the messages it had taken or that waited for it, ends the
        subscriptions, and (unless the manager is closing) starts rebuilding the state from
        the store; calls made meanwhile wait for the new consumer."""
        if task.cancelled():
            failure: BaseException = StateManagerClosed(
                "the state manager's consumer was cancelled"
            )
        else:
            exc = task.exception()
            if exc is None:
                self._abandon_mailbox(StateManagerClosed("the state manager is closed"))
                return
            failure = exc
            log.error("the state manager's consumer died", exc_info=exc)
        self._failure = failure
        error = self._stopped_error()
        for taken in self._in_flight:
            fail(taken.future, error)
        self._in_flight = []
        self._abandon_mailbox(error)
        self._subscriptions.end(
            f"the state manager's consumer stopped after version {self._state.version}: "
            "later changes are not delivered to this subscription (subscribe again)"
        )
        if not self._closing:
            self._start_rebuild()

    def _abandon_mailbox(self, error: StoreError) -> None:
        """Fail what waits in the mailbox and give the next consumer a new one."""
        mailbox, self._mailbox = self._mailbox, Mailbox(self._queue_size)
        mailbox.abandon(error)

    def _stopped_error(self) -> StateManagerClosed:
        error = StateManagerClosed("the state manager's consumer stopped")
        error.__cause__ = self._failure
        return error

    async def _process(self, messages: list[Message]) -> None:
        working = self._state
        accepted: list[Accepted] = []
        flushes: list[Message] = []
        for message in messages:
            if message.abandoned or message.future.cancelled():
                fail(message.future, asyncio.CancelledError())
                continue
            if message.kind == "flush":
                flushes.append(message)
                continue
            try:
                change = self._decide(working, message)
            except InvalidDelta as exc:
                fail(message.future, exc)
                continue
            except Exception as exc:
                # A flaw in validation answers its caller and spares the actor: decide is
                # pure, so the state is untouched.
                log.error("validating a %s failed", type(message.delta).__name__, exc_info=exc)
                error = InvalidDelta(
                    f"{type(message.delta).__name__} could not be validated "
                    f"({type(exc).__name__}); nothing changed"
                )
                fail(message.future, error, cause=exc)
                continue
            if change is None:
                resolve(message.future, False)
                continue
            if not accepted:
                working = draft(working)  # this batch's own copy: published by _commit alone
            apply_in_place(working, change, self._limits)
            accepted.append(Accepted(message, change, working.version))
        if accepted:
            await self._commit(accepted, working)
        for message in flushes:
            resolve(message.future, self._state.version)

    def _decide(self, state: AppState, message: Message) -> Change | None:
        if message.kind == "delta":
            assert message.delta is not None  # mutate() refuses None
            return decide(state, message.delta)
        stack = state.undo_stack if message.kind == "undo" else state.redo_stack
        if not stack:
            return None
        entry = stack[-1]
        delta, before = delta_from_event(entry.event_type, entry.data)
        if message.kind == "undo":
            return decide(state, inverse(delta, before), {"undo": entry.version})
        return decide(state, delta, {"redo": entry.version})

    async def _commit(self, accepted: list[Accepted], working: AppState) -> None:
        """Append the batch's events, then swap in the new state and reply. Shielded: once
        the append is sent, a cancellation waits for it and applies what was committed."""
        events = [encoded(a.change) for a in accepted]
        append = asyncio.ensure_future(
            self._store.append(STREAM, events, expected_version=self._state.version)
        )
        cancelled = False
        try:
            await uncancellable(append)
        except asyncio.CancelledError:
            cancelled = True
        except ConcurrencyError as exc:
            # Another process appended to the log: this batch did not happen. Catch up before
            # answering, so a caller that sees the error reads the state it lost to.
            try:
                self._state = await load_state(self._store, self._limits)
                if self._projector is not None:
                    self._projector.wake()  # the other process's changes: project them now
            finally:
                for item in accepted:
                    fail(item.message.future, exc)
            return
        except StoreError as exc:
            for item in accepted:
                fail(item.message.future, exc)
            return
        if cancelled and (append.cancelled() or append.exception() is not None):
            raise asyncio.CancelledError
        self._state = working
        for item in accepted:
            resolve(item.message.future, item.version if item.message.kind == "delta" else True)
        self._subscriptions.publish((item.version, item.change.delta) for item in accepted)
        if self._projector is not None:
            for item in accepted:
                self._projector.feed(item.version, item.change.delta)
        self._maybe_snapshot()
        if cancelled:
            raise asyncio.CancelledError

    # -- snapshots -----------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        state = self._state
        due = state.version - self._snapshot_version >= self._snapshot_every
        if not due or (self._snapshotting is not None and not self._snapshotting.done()):
            return
        self._snapshot_version = state.version
        self._snapshotting = start_background(
            save_snapshot(self._store, state), name="async_store.state.snapshot"
        )
