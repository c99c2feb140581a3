"""``Subscriber``: the buffer behind one ``StateManager.subscribe()`` reader.

The consumer offers each committed change to every subscriber and never waits for one: the
buffer is bounded (``subscriber_buffer``), and a reader that falls further behind is ended with
an error instead of holding up the consumer or growing without bound.
"""

from __future__ import annotations

import asyncio

from .deltas import StateDelta

__all__ = ["Subscriber"]


class Subscriber:
    """One ``subscribe()`` reader: a bounded buffer; ``None`` in it ends the iteration."""

    __slots__ = ("overflowed", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[tuple[int, StateDelta] | None] = asyncio.Queue(size + 1)
        self.overflowed = False

    def offer(self, item: tuple[int, StateDelta]) -> bool:
        """Buffer ``item``; on overflow end the reader with an error instead. The extra slot
        of the queue keeps room for the final ``None``."""
        if self.queue.qsize() < self.queue.maxsize - 1:
            self.queue.put_nowait(item)
            return True
        self.overflowed = True
        self.queue.put_nowait(None)
        return False

    def end(self) -> None:
        """End the iteration once the reader has taken what is buffered."""
        if not self.queue.full():
            self.queue.put_nowait(None)
