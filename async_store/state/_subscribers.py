"""``Subscriptions``: the ``StateManager.subscribe()`` readers, each behind a ``Subscriber``
buffer.

The consumer offers each committed change to every subscriber and never waits for one: the
buffer is bounded (``subscriber_buffer``), and a reader that falls further behind is ended with
an error instead of holding up the consumer or growing without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from ..errors import StateManagerClosed, StoreError
from .deltas import StateDelta

__all__ = ["Subscriber", "Subscriptions"]


class Subscriber:
    """One ``subscribe()`` reader: a bounded buffer; ``None`` in it ends the iteration."""

    __slots__ = ("error", "overflowed", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[tuple[int, StateDelta] | None] = asyncio.Queue(size + 1)
        self.overflowed = False
        self.error: str | None = None

    def offer(self, item: tuple[int, StateDelta]) -> bool:
        """Buffer ``item``; on overflow end the reader with an error instead. The extra slot
        of the queue keeps room for the final ``None``."""
        if self.queue.qsize() < self.queue.maxsize - 1:
            self.queue.put_nowait(item)
            return True
        self.overflowed = True
        self.queue.put_nowait(None)
        return False

    def end(self, error: str | None = None) -> None:
        """End the iteration once the reader has taken what is buffered: cleanly, or with
        ``error`` when the changes go on without this reader."""
        if not self.queue.full():
            self.error = error
            self.queue.put_nowait(None)


class Subscriptions:
    """The readers of one manager: each committed change is offered to all of them, and they
    end together when the manager closes or its consumer dies."""

    __slots__ = ("_buffer", "_subscribers")

    def __init__(self, buffer: int) -> None:
        self._buffer = buffer
        self._subscribers: set[Subscriber] = set()

    async def follow(self) -> AsyncIterator[tuple[int, StateDelta]]:
        """One reader's changes, from its first ``anext()`` on (see ``StateManager.subscribe``)."""
        subscriber = Subscriber(self._buffer)
        self._subscribers.add(subscriber)
        try:
            while True:
                item = await subscriber.queue.get()
                if item is None:
                    if subscriber.error is not None:
                        raise StateManagerClosed(subscriber.error)
                    if subscriber.overflowed:
                        raise StoreError(f"subscriber fell more than {self._buffer} changes behind")
                    return
                yield item
        finally:
            self._subscribers.discard(subscriber)

    def publish(self, changes: Iterable[tuple[int, StateDelta]]) -> None:
        """Offer ``changes`` to every reader; one that falls too far behind is ended."""
        if not self._subscribers:
            return
        changes = list(changes)
        for subscriber in list(self._subscribers):
            for change in changes:
                if not subscriber.offer(change):
                    self._subscribers.discard(subscriber)
                    break

    def end(self, error: str | None = None) -> None:
        """End every reader once it has taken what is buffered (with ``error``, if given)."""
        for subscriber in self._subscribers:
            subscriber.end(error)
