"""Snapshots of the state in the ``$app`` stream: ``load_state`` rebuilds the state from the
newest snapshot and the events after it; ``save_snapshot`` stores one. When to take a snapshot
is the ``StateManager``'s decision (every ``snapshot_every`` events, one at a time).
"""

from __future__ import annotations

import asyncio
import json
import logging

from ..errors import StoreError
from ..events.store import EventStore
from .app_state import STATE_SCHEMA_VERSION, AppState, Limits, apply_event
from .projector import STREAM

__all__ = ["load_state", "save_snapshot"]

log = logging.getLogger("async_store.state")


async def load_state(store: EventStore, limits: Limits) -> AppState:
    """The state ``store`` holds: its newest snapshot of ``$app`` (of this schema version), with
    the events after it applied."""
    snapshot = await store.load_snapshot(STREAM, schema_version=STATE_SCHEMA_VERSION)
    state = AppState() if snapshot is None else AppState.from_json(snapshot.state)
    async for event in store.read_stream(STREAM, state.version + 1, batch_size=2000):
        state = apply_event(state, event.type, event.data, event.metadata, limits)
    return state


async def save_snapshot(store: EventStore, state: AppState) -> None:
    """Store ``state`` as the snapshot of ``$app`` at its version. A failure is logged, not
    raised: the events are stored, so a missing snapshot only means a longer replay."""
    try:
        # Serialised on a worker thread: a large state must not stall the event loop. (Pure
        # Python, no database call: the one thread bridge to the database is not needed.)
        text = await asyncio.to_thread(_encoded, state)
        await store.save_snapshot_json(
            STREAM, state.version, text, schema_version=STATE_SCHEMA_VERSION
        )
    except StoreError as exc:
        log.warning("snapshot of version %d failed: %s", state.version, exc)


def _encoded(state: AppState) -> str:
    return json.dumps(state.to_json(), ensure_ascii=False)
