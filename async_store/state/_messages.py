"""What a ``StateManager``'s consumer takes from its queue and what it keeps of each change it
accepts: ``Message``, one call waiting for its turn (a delta, an undo, a redo or a flush) with the
future the consumer answers; ``STOP``, which ``close()`` queues behind them; ``Accepted``, a
message decided in the current batch, held until the batch commits; and ``encoded``, the event
that stores an accepted change in the ``$app`` stream. One ``Message`` and one ``Accepted`` are
made per mutation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from ..events import EncodedEvent
from .app_state import Change
from .deltas import StateDelta

__all__ = ["STOP", "Accepted", "Kind", "Message", "encoded"]

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


def encoded(change: Change) -> EncodedEvent:
    """``change`` as the event appended to ``$app`` (its data as ``decide`` encoded it, if it
    did)."""
    data = change.data_json if change.data_json is not None else json.dumps(change.data)
    metadata = None if change.metadata is None else json.dumps(change.metadata)
    return EncodedEvent(change.event_type, data, metadata)
