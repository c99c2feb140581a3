"""Properties of the state manager over random sequences of changes (hypothesis).

For random sequences of adds, updates and removes of knowledge bases and settings, log appends,
and undo/redo calls (invalid ones included; they must change nothing):

* replaying the whole log from empty, each stored snapshot plus the events after it, and a fresh
  manager loading from disk all give the live state; after ``flush()`` the app_meta tables equal
  it too;
* undo followed by redo is the identity on the collections and settings, wherever it happens;
* undoing every change empties the collections and settings (logs stay), and redoing every
  change brings them back.

Each example opens its own data directory (``tempfile.TemporaryDirectory``): pytest's
function-scoped fixtures are not reset between hypothesis examples. Examples are few and small,
so the file runs in seconds.

This test found that a knowledge base named with a leading NUL is accepted by the state but
refused by app_meta's ``CHECK (length(name) > 0)`` (SQLite's ``length()`` stops at NUL), which
stops the projector for good; names here exclude NUL, and the bug is pinned by an example test.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeAlias

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from async_store import AppState, InvalidDelta, SqlConfig, SqlService, StateManager
from async_store.state import (
    KnowledgeBase,
    KnowledgeBaseAdd,
    KnowledgeBaseRemove,
    KnowledgeBaseUpdate,
    Limits,
    LogAppend,
    SettingDelete,
    SettingSet,
    StateDelta,
)
from async_store.state.app_state import apply_event
from tests.contract.test_state_manager import STREAM, assert_projected, events_of, load_state

Op: TypeAlias = StateDelta | Literal["undo", "redo", "undo-redo"]

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    # No shrinking: every example opens databases, and shrinking one failure took more than
    # five minutes. A failing example is printed as found (at most 40 operations).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)

IDS = st.sampled_from(["kb-a", "kb-b", "kb-c", "kb-d"])
KEYS = st.sampled_from(["theme", "limit", "paths", "flag"])
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


NAMES = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=8)
"""Names without NUL: a name starting with one is a known bug, pinned by
``test_every_accepted_entity_can_be_projected`` in ``test_state_manager.py``."""


@st.composite
def knowledge_bases(draw: st.DrawFn) -> KnowledgeBase:
    size = draw(st.integers(min_value=1, max_value=2000))
    return KnowledgeBase(
        draw(IDS),
        draw(NAMES),
        description=draw(st.text(max_size=8)),
        chunk_size=size,
        chunk_overlap=draw(st.integers(min_value=0, max_value=size - 1)),
        metadata=draw(st.dictionaries(st.text(max_size=4), JSON, max_size=2)),
    )


DELTAS: st.SearchStrategy[StateDelta] = st.one_of(
    st.builds(KnowledgeBaseAdd, knowledge_bases()),
    st.builds(KnowledgeBaseUpdate, knowledge_bases()),
    st.builds(KnowledgeBaseRemove, IDS),
    st.builds(SettingSet, KEYS, JSON),
    st.builds(SettingDelete, KEYS),
    st.builds(LogAppend, st.text(max_size=10)),
)


def operations(*extra: str) -> st.SearchStrategy[list[Op]]:
    calls: st.SearchStrategy[Op] = st.sampled_from(["undo", "redo", *extra])
    return st.lists(st.one_of(DELTAS, DELTAS, calls), min_size=10, max_size=40)


def run(example: Callable[[SqlService], Awaitable[None]], *, mvp: bool = False) -> None:
    """Run ``example`` against a fresh service in its own temporary directory."""

    async def main() -> None:
        with tempfile.TemporaryDirectory() as directory:
            config = SqlConfig.in_directory(Path(directory), mvp=mvp, readers=2)
            async with SqlService(config) as sql:
                await example(sql)

    asyncio.run(main())


def user_data(state: AppState) -> tuple[dict[str, KnowledgeBase], dict[str, Any]]:
    """What undo/redo acts on: the collections and the settings."""
    return dict(state.knowledge_bases.items()), dict(state.settings.items())


async def perform(manager: StateManager, op: Op) -> None:
    """Apply one operation; a refused delta must leave the state object as it was."""
    if op == "undo":
        await manager.undo()
    elif op == "redo":
        await manager.redo()
    elif op == "undo-redo":
        before = manager.read_state()
        if await manager.undo():
            assert await manager.redo() is True
            assert user_data(manager.read_state()) == user_data(before)
        else:
            assert manager.read_state() is before
    else:
        before = manager.read_state()
        try:
            await manager.mutate(op)
        except InvalidDelta:
            assert manager.read_state() is before


def fold(state: AppState, events: list[Any]) -> AppState:
    for event in events:
        state = apply_event(state, event.type, event.data, event.metadata, Limits())
    return state


@SETTINGS
@given(ops=operations(), snapshot_every=st.integers(min_value=1, max_value=8), mvp=st.booleans())
def test_replay_equals_snapshot_plus_tail_equals_live(
    ops: list[Op], snapshot_every: int, mvp: bool
) -> None:
    async def example(sql: SqlService) -> None:
        async with StateManager(sql, snapshot_every=snapshot_every) as manager:
            for op in ops:
                await perform(manager, op)
            await manager.flush()
            live = manager.read_state()
            await assert_projected(sql, live)
        events = await events_of(sql)
        assert [e.version for e in events] == list(range(1, live.version + 1))
        assert fold(AppState(), events) == live
        snapshots = await sql.events.fetch_all(
            "SELECT version, state FROM aggregate_snapshots WHERE stream_id = ?", (STREAM,)
        )
        if live.version >= snapshot_every:
            assert snapshots, "no snapshot was written"
        for version, text in snapshots:
            restored = AppState.from_json(json.loads(text))
            assert restored.version == version
            assert fold(restored, events[version:]) == live
        assert await load_state(sql, snapshot_every=snapshot_every) == live

    run(example, mvp=mvp)


@SETTINGS
@given(ops=operations("undo-redo"))
def test_undo_then_redo_is_the_identity(ops: list[Op]) -> None:
    async def example(sql: SqlService) -> None:
        async with StateManager(sql, project=False) as manager:
            for op in [*ops, "undo-redo"]:
                await perform(manager, op)

    run(example)


@SETTINGS
@given(ops=operations())
def test_undoing_every_change_empties_collections_and_settings(ops: list[Op]) -> None:
    async def example(sql: SqlService) -> None:
        limits = Limits(undo_depth=1000)
        async with StateManager(sql, project=False, limits=limits) as manager:
            for op in ops:
                await perform(manager, op)
            while await manager.redo():  # what was undone counts as a change to take back too
                pass
            done = manager.read_state()
            while await manager.undo():
                pass
            emptied = manager.read_state()
            assert user_data(emptied) == ({}, {})
            assert emptied.logs == done.logs
            while await manager.redo():
                pass
            assert user_data(manager.read_state()) == user_data(done)

    run(example)
