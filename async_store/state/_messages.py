"""What a ``StateManager``'s consumer takes from its queue and what it keeps of each change it
accepts: ``Message``, one call waiting for its turn (a delta, an undo, a redo or a flush) with the
future the consumer answers; ``STOP``, which ``close()`` queues behind them; ``Mailbox``, the
queue they wait in, one per consumer, abandoned when its consumer stops; ``Accepted``, a
message decided in the current batch, held until the batch commits; and ``encoded``, the event
that stores an accepted change in the ``$app`` stream. One ``Message`` and one ``Accepted`` are
made per mutation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from .._futures import fail
from ..errors import StoreError
from ..events.store import EncodedEvent
from .app_state import Change
from .deltas import StateDelta

__all__ = ["STOP", "Accepted", "Kind", "Mailbox", "Message", "encoded"]

Kind = Literal["delta", "undo", "redo", "flush"]


class Message:
    """One call for the consumer: its kind, its delta (``None`` unless the kind is ``"delta"``),
    the future the consumer answers, and whether the caller stopped waiting for it."""

    __slots__ = ("abandoned", "delta", "future", "kind")

    def __init__(self, kind: Kind, delta: StateDelta | None, future: asyncio.Future[Any]) -> None:
        self.kind = kind
        self.delta = delta
        self.future = future
        self.abandoned = False


class Accepted:
    """A message the consumer accepted in the current batch: its change and the state version
    the change makes."""

    __slots__ = ("change", "message", "version")

    def __init__(self, message: Message, change: Change, version: int) -> None:
        self.message = message
        self.change = change
        self.version = version


STOP = object()
"""Queued by ``close()``: the consumer stops after the batch that holds it."""


class Mailbox:
    """The bounded queue of one consumer. When the consumer stops, its mailbox is abandoned:
    what waits in it is failed, and callers still waiting for room stop waiting (a queue
    emptied once wakes only as many of them as it held, and each would fill it again)."""

    __slots__ = ("_abandoned", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Message | object] = asyncio.Queue(size)
        self._abandoned = asyncio.Event()

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    async def put(self, item: Message | object) -> bool:
        """Queue ``item``, waiting for room; ``False`` if the mailbox is abandoned first (the
        item was not queued). ``True`` with the mailbox abandoned meanwhile means the item
        sits where nobody takes it: check :attr:`abandoned` after."""
        try:
            self.queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self.queue.put(item))
        gone = asyncio.ensure_future(self._abandoned.wait())
        try:
            await asyncio.wait((put, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            put.cancel()  # a no-op once it has put the item
        return put.done() and not put.cancelled()

    def abandon(self, error: StoreError) -> None:
        """Fail every message waiting in the mailbox with ``error`` and release the callers
        waiting for room."""
        self._abandoned.set()
        while not self.queue.empty():
            message = self.queue.get_nowait()
            if isinstance(message, Message):
                fail(message.future, error)


def encoded(change: Change) -> EncodedEvent:
    """``change`` as the event appended to ``$app`` (its data as ``decide`` encoded it, if it
    did)."""
    data = change.data_json if change.data_json is not None else json.dumps(change.data)
    metadata = None if change.metadata is None else json.dumps(change.metadata)
    return EncodedEvent(change.event_type, data, metadata)
