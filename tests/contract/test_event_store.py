"""The event store on every backend: appends with optimistic concurrency and idempotency,
positions in commit order, JSON that round-trips, paged lazy reads, snapshots, checkpoints
(exactly-once consumers) and subscriptions (this process and another one).

Nothing here measures time: waits are bounded by ``asyncio.timeout`` only so that a bug fails
instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import os
import re
import sys
import textwrap
import tracemalloc
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ConcurrencyError,
    ConfigError,
    EncodedEvent,
    EventStore,
    ExpectedVersion,
    JsonInput,
    NewEvent,
    QueryError,
    RecordedEvent,
    Snapshot,
    SqlConfig,
    SqlService,
    StoreError,
)
from tests.contract.conftest import Backend

BOUND = 20.0
"""What a test waits at most for something that must end on its own."""

# -- fixtures and helpers ---------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def tick(n: int, *, event_id: str | None = None, metadata: JsonInput = None) -> NewEvent:
    return NewEvent("Ticked", {"n": n}, metadata=metadata, event_id=event_id)


async def count_events(sql: SqlService, stream_id: str | None = None) -> int:
    if stream_id is None:
        return int(await sql.events.fetch_val("SELECT count(*) FROM events"))
    return int(
        await sql.events.fetch_val("SELECT count(*) FROM events WHERE stream_id = ?", (stream_id,))
    )


async def stored_ids(sql: SqlService) -> set[str]:
    return {row[0] for row in await sql.events.fetch_all("SELECT event_id FROM events")}


async def collect(events: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [event async for event in events]


def generator(events: AsyncIterator[RecordedEvent]) -> AsyncGenerator[RecordedEvent, None]:
    """The store's iterators are async generators; ``aclosing`` needs that type."""
    return cast(AsyncGenerator[RecordedEvent, None], events)


async def first(events: AsyncIterator[RecordedEvent], n: int) -> list[RecordedEvent]:
    """The first ``n`` events, then the iterator is closed (its reader released)."""
    taken: list[RecordedEvent] = []
    async with contextlib.aclosing(generator(events)) as iterator:
        async for event in iterator:
            taken.append(event)
            if len(taken) == n:
                break
    return taken


def same_json(a: object, b: object) -> bool:
    """Equal as JSON *and* in type: ``True`` is not ``1``, ``1.0`` is not ``1``, ``-0.0`` is not
    ``0.0``, and an object's keys keep their order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same_json(a[key], b[key]) for key in a)
    return a == b


def nested(depth: int) -> JsonInput:
    value: JsonInput = 0
    for _ in range(depth):
        value = [value]
    return value


# -- append: versions and expected_version ----------------------------------------------------


async def test_versions_start_at_one_and_have_no_gaps(sql: SqlService) -> None:
    store = sql.event_store
    first_ = await store.append("orders", [tick(1)])
    second = await store.append("orders", [tick(2), tick(3), tick(4)])
    third = await store.append("orders", [tick(5), tick(6)])
    assert (first_.first_version, first_.last_version) == (1, 1)
    assert (second.first_version, second.last_version) == (2, 4)
    assert (third.first_version, third.last_version) == (5, 6)
    assert first_.stream_id == second.stream_id == "orders"

    events = await collect(store.read_stream("orders"))
    assert [e.version for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.data for e in events] == [{"n": n} for n in range(1, 7)]
    assert all(e.stream_id == "orders" and e.type == "Ticked" for e in events)
    assert [first_.last_position, second.last_position, third.last_position] == [
        events[0].position,
        events[3].position,
        events[5].position,
    ]
    assert await store.stream_version("orders") == 6


async def prepare_stream(sql: SqlService, stream_id: str, version: int) -> None:
    if version:
        await sql.event_store.append(stream_id, [tick(n) for n in range(version)])


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        pytest.param(0, 0, id="new-stream-expected-0"),
        pytest.param(0, NO_STREAM, id="new-stream-no-stream"),
        pytest.param(0, ANY, id="new-stream-any"),
        pytest.param(2, 2, id="at-2-expected-2"),
        pytest.param(2, STREAM_EXISTS, id="at-2-stream-exists"),
        pytest.param(2, ANY, id="at-2-any"),
    ],
)
async def test_expected_version_accepted(
    sql: SqlService, current: int, expected: ExpectedVersion
) -> None:
    await prepare_stream(sql, "accounts-alpha", current)
    result = await sql.event_store.append("accounts-alpha", [tick(7), tick(8)], expected)
    assert (result.first_version, result.last_version) == (current + 1, current + 2)
    assert await sql.event_store.stream_version("accounts-alpha") == current + 2


@pytest.mark.parametrize(
    ("current", "expected", "expected_words"),
    [
        pytest.param(0, 1, [r"\b1\b"], id="new-stream-expected-1"),
        pytest.param(0, 3, [r"\b3\b"], id="new-stream-expected-3"),
        pytest.param(0, STREAM_EXISTS, ["exist"], id="new-stream-stream-exists"),
        pytest.param(2, 0, [r"\b0\b"], id="at-2-expected-0"),
        pytest.param(2, NO_STREAM, ["no stream"], id="at-2-no-stream"),
        pytest.param(2, 1, [r"\b1\b"], id="at-2-expected-1-behind"),
        pytest.param(2, 3, [r"\b3\b"], id="at-2-expected-3-ahead"),
    ],
)
async def test_expected_version_mismatch_raises_and_writes_nothing(
    sql: SqlService, current: int, expected: ExpectedVersion, expected_words: list[str]
) -> None:
    await prepare_stream(sql, "accounts-alpha", current)
    await sql.event_store.append("bystander", [tick(0)])
    before = await count_events(sql)
    position = await sql.event_store.last_position()
    intruder = new_id()

    with pytest.raises(ConcurrencyError) as caught:
        await sql.event_store.append("accounts-alpha", [tick(9, event_id=intruder)], expected)

    message = str(caught.value)
    assert "accounts-alpha" in message, message
    assert "expected" in message, message
    for word in expected_words:
        assert re.search(word, message), f"{word!r} (the expected version) not in: {message}"
    assert re.search(rf"\b{current}\b", message), f"actual version {current} not in: {message}"
    assert await count_events(sql) == before
    assert await sql.event_store.stream_version("accounts-alpha") == current
    assert await sql.event_store.last_position() == position
    assert intruder not in await stored_ids(sql)


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool"),
    ],
)
async def test_an_invalid_expected_version_is_a_query_error(
    sql: SqlService, expected: ExpectedVersion
) -> None:
    with pytest.raises(QueryError, match="expected_version"):
        await sql.event_store.append("s", [tick(1)], expected)
    assert await count_events(sql) == 0


@pytest.mark.parametrize(
    ("stream_id", "events", "match"),
    [
        pytest.param("s", [], "no events", id="no-events"),
        pytest.param("", [NewEvent("T", 1)], "stream_id", id="empty-stream-id"),
        pytest.param("s", [NewEvent("", 1)], "type", id="empty-type"),
        pytest.param("s", [NewEvent("T", 1, event_id="")], "event_id", id="empty-event-id"),
        pytest.param(
            "s",
            [NewEvent("T", 1, event_id="same"), NewEvent("T", 2, event_id="same")],
            "twice",
            id="event-id-twice-in-one-append",
        ),
        pytest.param("s\ud800", [NewEvent("T", 1)], "surrogate", id="stream-id-not-utf8"),
        pytest.param("s", [NewEvent("T\ud800", 1)], "surrogate", id="type-not-utf8"),
        pytest.param(
            "s", [NewEvent("T", 1, event_id="\ud800")], "surrogate", id="event-id-not-utf8"
        ),
    ],
)
async def test_malformed_appends_are_refused(
    sql: SqlService, stream_id: str, events: list[NewEvent], match: str
) -> None:
    with pytest.raises(QueryError, match=match):
        await sql.event_store.append(stream_id, events)
    assert await count_events(sql) == 0


async def test_global_positions_only_grow(sql: SqlService) -> None:
    store = sql.event_store
    results: list[AppendResult] = []
    for n in range(30):
        size = 1 + n % 3
        results.append(await store.append(f"stream-{n % 5}", [tick(n)] * size))
    positions = [r.last_position for r in results]
    assert positions == sorted(set(positions))
    logged = [e.position for e in await collect(store.read_all())]
    assert logged == sorted(set(logged))
    assert len(logged) == sum(1 + n % 3 for n in range(30))
    assert await store.last_position() == logged[-1] == positions[-1]


async def test_an_empty_store_is_at_zero(sql: SqlService) -> None:
    assert await sql.event_store.last_position() == 0
    assert await sql.event_store.stream_version("nothing") == 0
    assert await collect(sql.event_store.read_all()) == []
    assert await collect(sql.event_store.read_stream("nothing")) == []


# -- concurrency, transactions and cancellation -----------------------------------------------


async def test_a_follower_asking_for_positions_after_its_last_never_skips_one(
    sql: SqlService,
) -> None:
    """Positions grow in commit order: an append held open in a transaction block and the
    appends other tasks make meanwhile all reach a follower that asks, over and over, for the
    positions after the last one it saw."""
    store = sql.event_store
    done = asyncio.Event()
    seen: list[int] = []

    async def follow() -> None:
        last = 0
        while True:
            finished = done.is_set()
            async for event in store.read_all(last):
                seen.append(event.position)
                last = event.position
            if finished:
                return
            await asyncio.sleep(0.001)

    async def held_open() -> None:
        async with sql.events.transaction():
            await store.append("slow", [tick(0)])
            await asyncio.sleep(0.05)  # the other appends are made meanwhile

    async with asyncio.timeout(BOUND):
        follower = asyncio.ensure_future(follow())
        await asyncio.gather(
            held_open(), *(store.append(f"fast-{n}", [tick(n)]) for n in range(20))
        )
        done.set()
        await follower
    everything = [event.position async for event in store.read_all()]
    assert len(everything) == 21
    assert seen == everything


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        pytest.param(0, 0, id="new-stream-expected-0"),
        pytest.param(0, NO_STREAM, id="new-stream-no-stream"),
        pytest.param(3, 3, id="at-3-expected-3"),
    ],
)
async def test_concurrent_appends_at_the_same_expected_version_one_wins(
    sql: SqlService, current: int, expected: ExpectedVersion
) -> None:
    await prepare_stream(sql, "race", current)
    contenders = [[new_id(), new_id()] for _ in range(20)]

    outcomes = await asyncio.gather(
        *(
            sql.event_store.append(
                "race", [tick(n, event_id=a), tick(n, event_id=b)], expected_version=expected
            )
            for n, (a, b) in enumerate(contenders)
        ),
        return_exceptions=True,
    )

    winners = [i for i, o in enumerate(outcomes) if isinstance(o, AppendResult)]
    assert len(winners) == 1, outcomes
    losers = [o for o in outcomes if not isinstance(o, AppendResult)]
    assert all(isinstance(o, ConcurrencyError) for o in losers), losers
    assert all("race" in str(o) for o in losers)
    winner = outcomes[winners[0]]
    assert isinstance(winner, AppendResult)
    assert (winner.first_version, winner.last_version) == (current + 1, current + 2)

    assert await sql.event_store.stream_version("race") == current + 2
    ids = await stored_ids(sql)
    for i, pair in enumerate(contenders):
        assert set(pair) <= ids if i == winners[0] else not set(pair) & ids


@pytest.mark.parametrize("events", [1, 3, 150], ids=["one-event", "three-events", "150-events"])
async def test_a_failing_append_in_a_group_commit_leaves_nothing_and_fails_alone(
    sql: SqlService, events: int
) -> None:
    """Appends of one INSERT statement run without a savepoint of their own; longer ones keep
    it. Either way the append whose last event the database refuses (invalid JSON) writes
    nothing, and the appends committed with it are kept."""
    bad = [tick(n) for n in range(events - 1)] + [EncodedEvent("Ticked", "{not json")]

    outcomes = await asyncio.gather(
        *(sql.event_store.append(f"good-{n}", [tick(n)]) for n in range(10)),
        sql.event_store.append("bad", bad),
        *(sql.event_store.append(f"good-{n}", [tick(n)]) for n in range(10, 20)),
        return_exceptions=True,
    )

    errors = [o for o in outcomes if not isinstance(o, AppendResult)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], StoreError), outcomes
    assert await count_events(sql, "bad") == 0
    assert await count_events(sql) == 20
    assert (await sql.event_store.verify_events()).ok


async def test_generated_event_ids_are_uuid7_in_time_order(sql: SqlService) -> None:
    first = await sql.event_store.append("ids", [tick(n) for n in range(3)])
    await asyncio.sleep(0.002)  # a later millisecond: the id's time prefix must grow
    await sql.event_store.append("ids", [tick(3)], expected_version=first.last_version)

    events = await collect(sql.event_store.read_stream("ids"))
    ids = [uuid.UUID(e.event_id) for e in events]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids), ids
    assert len(set(ids)) == 4
    assert str(ids[3]) > max(str(u) for u in ids[:3]), "ids of a later moment sort after"


@pytest.mark.parametrize("expected", ["any", "known"], ids=["expected-any", "expected-known"])
async def test_an_append_by_another_writer_is_never_skipped_or_overwritten(
    sql_config: Callable[..., SqlConfig], expected: str
) -> None:
    """This store believes the stream is at 3; another service (another process, for all it
    knows) took version 4. ``ANY`` lands at 5, and an exact expectation of 3 is refused."""
    config = sql_config()
    async with SqlService(config) as sql, SqlService(config) as other:
        await sql.event_store.append("shared", [tick(n) for n in range(3)])
        await other.event_store.append("shared", [tick(3)], expected_version=3)
        if expected == "any":
            result = await sql.event_store.append("shared", [tick(4)])
            assert (result.first_version, result.last_version) == (5, 5)
        else:
            with pytest.raises(
                ConcurrencyError, match="expected version 3, but it is at version 4"
            ):
                await sql.event_store.append("shared", [tick(4)], expected_version=3)
            result = await sql.event_store.append("shared", [tick(4)], expected_version=4)
            assert result.last_version == 5
        report = await sql.event_store.verify_events()
        assert report.ok, report
        assert [e.version for e in await collect(sql.event_store.read_stream("shared"))] == [
            1,
            2,
            3,
            4,
            5,
        ]


async def test_appends_inside_a_rolled_back_transaction_leave_no_gap(sql: SqlService) -> None:
    """Inside ``transaction()`` an append is part of that transaction: nothing of it is known
    committed until the block ends, so a rollback leaves the next append at version 1."""

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        async with sql.events.transaction():
            await sql.event_store.append("single", [tick(0)])
            await sql.event_store.append_many([("a", [tick(1)], ANY), ("b", [tick(2)], ANY)])
            raise Undo
    for stream_id in ("single", "a", "b"):
        result = await sql.event_store.append(stream_id, [tick(3)])
        assert result.last_version == 1, stream_id
    assert (await sql.event_store.verify_events()).ok


async def test_an_append_inside_a_transaction_does_not_wait_for_other_appends(
    sql: SqlService,
) -> None:
    """Other tasks' appends queue behind the open transaction; the one made inside it runs in
    the transaction and does not queue behind them (which would never end)."""
    outside = [
        asyncio.ensure_future(sql.event_store.append(f"outside-{n}", [tick(n)])) for n in range(5)
    ]
    async with sql.events.transaction():
        await asyncio.sleep(0.02)  # the outside appends are queued behind this transaction
        async with asyncio.timeout(10):
            inside = await sql.event_store.append("inside", [tick(0)])
    assert inside.last_version == 1
    assert all(r.last_version == 1 for r in await asyncio.gather(*outside))


async def test_a_bogus_retry_in_a_coalesced_batch_fails_alone(sql: SqlService) -> None:
    """A retry of a stored event_id whose data is not JSON text is refused; the appends
    written in the same batch are not."""
    await sql.event_store.append("dup", [tick(0, event_id="stored-id")])
    for n in range(5):
        await sql.event_store.append(f"s{n}", [tick(n)])
    busy = asyncio.ensure_future(sql.event_store.append("warm-up", [tick(0)]))
    await asyncio.sleep(0)  # the rest wait for the next write, together
    calls = [sql.event_store.append(f"s{n}", [tick(n)]) for n in range(5)]
    bogus = EncodedEvent("Ticked", "not json", event_id="stored-id")
    outcomes = await asyncio.gather(
        busy, *calls, sql.event_store.append("dup", [bogus]), return_exceptions=True
    )
    assert all(isinstance(o, AppendResult) for o in outcomes[:-1]), outcomes
    assert isinstance(outcomes[-1], ConcurrencyError), outcomes[-1]
    assert "other content" in str(outcomes[-1])


async def test_appends_cancelled_while_waiting_leave_no_gap(sql: SqlService) -> None:
    await sql.event_store.append("s", [tick(0)])
    blockers = [asyncio.ensure_future(sql.event_store.append("s", [tick(n)])) for n in range(5)]
    await asyncio.sleep(0)  # the first write is under way; the rest wait behind it
    tasks = [asyncio.ensure_future(sql.event_store.append("s", [tick(n)])) for n in range(20)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    outcomes = await asyncio.gather(*blockers, *tasks, return_exceptions=True)
    results = [o for o in outcomes if isinstance(o, AppendResult)]
    assert len(results) >= 15
    versions = [e.version for e in await collect(sql.event_store.read_stream("s"))]
    assert versions == list(range(1, len(versions) + 1)), "a version was skipped"
    assert {r.last_version for r in results} <= set(versions)
    assert (await sql.event_store.verify_events()).ok


async def test_a_migration_down_and_up_makes_the_store_forget_the_versions_it_knew(
    sql: SqlService,
) -> None:
    await sql.event_store.append("s", [tick(n) for n in range(3)])
    await sql.migrate(0, migration_set="events")
    await sql.migrate()
    result = await sql.event_store.append("s", [tick(3)])
    assert (result.first_version, result.last_version) == (1, 1)


# -- idempotency ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "restart", [pytest.param(False, id="same-session"), pytest.param(True, id="after-restart")]
)
async def test_a_retried_append_returns_the_original_result_and_writes_nothing(
    sql_config: Callable[..., SqlConfig], restart: bool
) -> None:
    config = sql_config()
    ids = [new_id() for _ in range(3)]
    events = [tick(n, event_id=event_id, metadata={"by": "me"}) for n, event_id in enumerate(ids)]
    async with SqlService(config) as sql:
        await sql.event_store.append("cart", [tick(0)])
        original = await sql.event_store.append("cart", events, expected_version=1)
        await sql.event_store.append("cart", [tick(99)])  # the stream moved on since
        if not restart:
            retried = await sql.event_store.append("cart", events, expected_version=1)
            assert retried == original
    async with SqlService(config) as sql:
        before = await count_events(sql)
        position = await sql.event_store.last_position()
        # Idempotency is checked before the version: a stale expectation does not matter.
        for expected in (1, 0, NO_STREAM, ANY):
            assert await sql.event_store.append("cart", events, expected) == original
        assert await count_events(sql) == before == 5
        assert await sql.event_store.last_position() == position
        assert await sql.event_store.stream_version("cart") == 5


async def test_concurrent_retries_of_one_append_write_it_once(sql: SqlService) -> None:
    events = [tick(n, event_id=new_id()) for n in range(3)]
    results = await asyncio.gather(*(sql.event_store.append("cart", events) for _ in range(10)))
    assert len(set(results)) == 1
    assert (results[0].first_version, results[0].last_version) == (1, 3)
    assert await count_events(sql) == 3


@pytest.mark.parametrize(
    "retry",
    [
        pytest.param(lambda old, new: [*old, new], id="new-id-appended"),
        pytest.param(lambda old, new: [new, *old], id="new-id-first"),
        pytest.param(lambda old, new: [old[0], new], id="one-old-one-new"),
    ],
)
async def test_a_retry_where_only_some_ids_are_stored_is_refused(
    sql: SqlService, retry: Callable[[list[NewEvent], NewEvent], list[NewEvent]]
) -> None:
    old = [tick(1, event_id=new_id()), tick(2, event_id=new_id())]
    await sql.event_store.append("cart", old)
    new = tick(3, event_id=new_id())
    with pytest.raises(ConcurrencyError, match="cart"):
        await sql.event_store.append("cart", retry(old, new))
    assert await count_events(sql) == 2
    assert new.event_id not in await stored_ids(sql)


ORIGINAL = NewEvent("Priced", {"amount": 1, "currency": "EUR"}, metadata={"user": "ann"})


@pytest.mark.parametrize(
    ("stream_id", "reused"),
    [
        pytest.param("cart", NewEvent("Priced", {"amount": 2, "currency": "EUR"}), id="data"),
        pytest.param("cart", NewEvent("Discounted", ORIGINAL.data, ORIGINAL.metadata), id="type"),
        pytest.param("cart", NewEvent("Priced", ORIGINAL.data, {"user": "bob"}), id="metadata"),
        pytest.param("cart", NewEvent("Priced", ORIGINAL.data), id="metadata-dropped"),
        pytest.param("other-cart", ORIGINAL, id="another-stream"),
        pytest.param(
            "cart",
            NewEvent("Priced", {"amount": True, "currency": "EUR"}, ORIGINAL.metadata),
            id="true-instead-of-1",
        ),
        pytest.param(
            "cart",
            NewEvent("Priced", {"amount": 1.0, "currency": "EUR"}, ORIGINAL.metadata),
            id="float-instead-of-int",
        ),
    ],
)
async def test_an_event_id_reused_with_other_content_is_refused(
    sql: SqlService, stream_id: str, reused: NewEvent
) -> None:
    event_id = new_id()
    original = NewEvent(ORIGINAL.type, ORIGINAL.data, ORIGINAL.metadata, event_id)
    await sql.event_store.append("cart", [original])
    before = await collect(sql.event_store.read_all())

    with pytest.raises(ConcurrencyError, match=event_id):
        await sql.event_store.append(
            stream_id, [NewEvent(reused.type, reused.data, reused.metadata, event_id)]
        )

    assert await collect(sql.event_store.read_all()) == before


async def test_a_retry_with_keys_in_another_order_is_the_same_content(sql: SqlService) -> None:
    event_id = new_id()
    data: JsonInput = {"a": 1, "b": {"x": [1, {"p": None, "q": "é"}], "y": 2.5}, "c": True}
    reordered: JsonInput = {"c": True, "b": {"y": 2.5, "x": [1, {"q": "é", "p": None}]}, "a": 1}
    original = await sql.event_store.append(
        "cart", [NewEvent("Set", data, {"m": 1, "n": 2}, event_id)]
    )
    retried = await sql.event_store.append(
        "cart", [NewEvent("Set", reordered, {"n": 2, "m": 1}, event_id)]
    )
    assert retried == original
    assert await count_events(sql) == 1
    (stored,) = await collect(sql.event_store.read_stream("cart"))
    assert same_json(stored.data, data), "the first writer's key order is what is stored"


# -- append_many ------------------------------------------------------------------------------


async def test_append_many_appends_to_every_stream(sql: SqlService) -> None:
    await sql.event_store.append("b", [tick(0)])
    results = await sql.event_store.append_many(
        [("a", [tick(1)], NO_STREAM), ("b", [tick(2), tick(3)], 1), ("c", [tick(4)], ANY)]
    )
    assert [(r.stream_id, r.first_version, r.last_version) for r in results] == [
        ("a", 1, 1),
        ("b", 2, 3),
        ("c", 1, 1),
    ]
    positions = [r.last_position for r in results]
    assert positions == sorted(positions)
    assert await count_events(sql) == 5


@pytest.mark.parametrize(
    ("last", "error"),
    [
        pytest.param(("c", [tick(9)], 5), ConcurrencyError, id="version-conflict"),
        pytest.param(("b", [tick(9)], NO_STREAM), ConcurrencyError, id="stream-exists"),
        pytest.param(("c", [NewEvent("T", {"x": math.nan})], ANY), QueryError, id="bad-json"),
        pytest.param(
            ("c", [NewEvent("Other", {}, event_id="stored-id")], ANY),
            ConcurrencyError,
            id="event-id-reused",
        ),
    ],
)
async def test_append_many_writes_nothing_when_its_last_stream_fails(
    sql: SqlService,
    last: tuple[str, list[NewEvent], ExpectedVersion],
    error: type[Exception],
) -> None:
    await sql.event_store.append("b", [NewEvent("T", {}, event_id="stored-id")])
    before = await collect(sql.event_store.read_all())
    new_ids = [new_id(), new_id(), new_id()]

    with pytest.raises(error):
        await sql.event_store.append_many(
            [
                ("a", [tick(1, event_id=new_ids[0])], NO_STREAM),
                ("b", [tick(2, event_id=new_ids[1]), tick(3, event_id=new_ids[2])], 1),
                last,
            ]
        )

    assert await collect(sql.event_store.read_all()) == before
    assert await sql.event_store.stream_version("a") == 0
    assert await sql.event_store.stream_version("b") == 1


async def test_append_many_inside_a_transaction_is_still_atomic(sql: SqlService) -> None:
    async with sql.events.transaction() as tx:
        await tx.execute("CREATE TABLE notes(text TEXT)")
        await tx.execute("INSERT INTO notes VALUES ('kept')")
        with pytest.raises(ConcurrencyError):
            await sql.event_store.append_many([("a", [tick(1)], ANY), ("b", [tick(2)], 5)])
    assert await sql.events.fetch_val("SELECT count(*) FROM notes") == 1
    assert await count_events(sql) == 0, "append_many raised, yet stream 'a' was committed"


# -- JSON -------------------------------------------------------------------------------------


class Custom:
    def __repr__(self) -> str:
        return "Custom()"


class Colour(enum.IntEnum):
    RED = 1


NOT_JSON = [
    pytest.param(math.nan, "$", id="nan-top-level"),
    pytest.param({"a": [1, {"b": math.nan}]}, "$.a[1].b", id="nan-nested"),
    pytest.param({"x": math.inf}, "$.x", id="inf"),
    pytest.param([0, -math.inf], "$[1]", id="minus-inf"),
    pytest.param({"t": (1, 2)}, "$.t", id="tuple"),
    pytest.param({"s": {1, 2}}, "$.s", id="set"),
    pytest.param({"m": {1: "one"}}, "$.m", id="int-key"),
    pytest.param({None: 1}, "$", id="none-key"),
    pytest.param({"k": {(1, 2): 3}}, "$.k", id="tuple-key"),
    pytest.param({"o": [Custom()]}, "$.o[0]", id="custom-object"),
    pytest.param({"b": b"bytes"}, "$.b", id="bytes"),
    pytest.param({"e": Colour.RED}, "$.e", id="int-enum"),
    pytest.param({"deep": nested(1000)}, "$.deep[0][0][0]", id="too-deep"),
    pytest.param({"s": "\ud800"}, "$.s", id="lone-surrogate"),
    pytest.param({"k": {"\udfff": 1}}, "$.k", id="lone-surrogate-key"),
]


@pytest.mark.parametrize("field", ["data", "metadata"])
@pytest.mark.parametrize(("value", "path"), NOT_JSON)
async def test_values_that_cannot_round_trip_are_refused(
    sql: SqlService, field: str, value: Any, path: str
) -> None:
    await sql.event_store.append("s", [tick(0)])
    event = (
        NewEvent("T", value, event_id="bad")
        if field == "data"
        else NewEvent("T", {"ok": 1}, metadata=value, event_id="bad")
    )
    with pytest.raises(QueryError) as caught:
        await sql.event_store.append("s", [tick(1), event])
    message = str(caught.value)
    assert path in message, message
    assert field in message, message
    assert await count_events(sql) == 1
    assert await sql.event_store.stream_version("s") == 1


ROUND_TRIP: list[Any] = [
    {"text": "héllo wörld ✓ 日本語 עברית 🧪👩‍🔬", "nul": "a\x00b", "lines": "\u2028\u2029\n\t"},
    {"quotes": "\"'\\/", "control": "".join(chr(c) for c in range(32)), "del": "\x7f"},
    {"é": {"ключ": ["значение", {"🔑": None}]}, "": "empty key"},
    [[], {}, [[]], [{}], "", 0, -0.0, 0.5, 1e308, 5e-324, -1.5e-10],
    {"big": 2**63, "bigger": 10**30, "negative": -(2**70), "bools": [True, False, None]},
    {"z": 1, "a": 2, "m": {"y": 1, "b": 2}},
    nested(150),
    "just a string",
    42,
    None,
]


@pytest.mark.parametrize(
    "value", [pytest.param(v, id=f"value-{i}") for i, v in enumerate(ROUND_TRIP)]
)
async def test_json_round_trips_exactly(sql: SqlService, value: Any) -> None:
    await sql.event_store.append("s", [NewEvent("T", value, metadata={"copy": value})])
    (event,) = await collect(sql.event_store.read_stream("s"))
    assert same_json(event.data, value)
    assert same_json(event.metadata, {"copy": value})


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=JSON_VALUES, metadata=JSON_VALUES)
async def test_any_json_value_round_trips(sql: SqlService, data: Any, metadata: Any) -> None:
    # Each example appends to a stream of its own, so sharing the service is harmless.
    stream = new_id()
    await sql.event_store.append(stream, [NewEvent("T", data, metadata)])
    (event,) = await collect(sql.event_store.read_stream(stream))
    assert same_json(event.data, data)
    assert same_json(event.metadata, metadata)


# -- reading ----------------------------------------------------------------------------------


async def interleaved(sql: SqlService) -> list[AppendResult]:
    """12 events over streams a, b, c, appended in turn: a1 b1 c1 a2 b2 c2 ..."""
    return [await sql.event_store.append("abc"[n % 3], [tick(n)]) for n in range(12)]


@pytest.mark.parametrize(
    ("from_version", "expected"),
    [
        pytest.param(1, [1, 2, 3, 4], id="default-from-1"),
        pytest.param(0, [1, 2, 3, 4], id="from-0"),
        pytest.param(3, [3, 4], id="from-3-inclusive"),
        pytest.param(4, [4], id="from-last"),
        pytest.param(5, [], id="past-the-end"),
    ],
)
async def test_read_stream_from_version(
    sql: SqlService, from_version: int, expected: list[int]
) -> None:
    await interleaved(sql)
    events = await collect(sql.event_store.read_stream("b", from_version, batch_size=2))
    assert [e.version for e in events] == expected
    assert all(e.stream_id == "b" for e in events)
    assert [e.data["n"] for e in events] == [1 + 3 * (v - 1) for v in expected]


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(lambda ps: 0, id="from-0"),
        pytest.param(lambda ps: ps[0], id="from-first"),
        pytest.param(lambda ps: ps[6], id="from-middle"),
        pytest.param(lambda ps: ps[-1], id="from-last"),
    ],
)
async def test_read_all_yields_positions_after_from_position(
    sql: SqlService, start: Callable[[list[int]], int]
) -> None:
    positions = [r.last_position for r in await interleaved(sql)]
    from_position = start(positions)
    events = await collect(sql.event_store.read_all(from_position, batch_size=5))
    assert [e.position for e in events] == [p for p in positions if p > from_position]
    assert [e.data["n"] for e in events] == [
        n for n, p in enumerate(positions) if p > from_position
    ]


async def test_read_iterators_need_no_await_first(sql: SqlService) -> None:
    await interleaved(sql)
    assert isinstance(sql.event_store.read_all(), AsyncIterator)
    assert isinstance(sql.event_store.read_stream("a"), AsyncIterator)
    event = (await first(sql.event_store.read_all(), 1))[0]
    assert isinstance(event, RecordedEvent)
    assert event.event_id
    assert event.recorded_at.endswith("Z")
    assert event.metadata is None


async def test_stream_version_and_last_position(sql: SqlService) -> None:
    results = await interleaved(sql)
    assert await sql.event_store.stream_version("a") == 4
    assert await sql.event_store.stream_version("zzz") == 0
    assert await sql.event_store.last_position() == results[-1].last_position


@pytest.mark.parametrize("batch_size", [0, -1])
async def test_a_batch_size_below_one_is_refused(sql: SqlService, batch_size: int) -> None:
    with pytest.raises(QueryError, match="batch_size"):
        await collect(sql.event_store.read_all(batch_size=batch_size))


BIG = 100_000


CHUNK = 1_000


BIG_STREAMS = 4


async def _build_big_log(config: SqlConfig) -> None:
    async with SqlService(config) as sql:
        for chunk in range(BIG // CHUNK):
            base = chunk * CHUNK
            await sql.event_store.append(
                f"big-{chunk % BIG_STREAMS}",
                [NewEvent("Counted", {"n": base + i}) for i in range(CHUNK)],
            )


@pytest.fixture(scope="module")
def big_log(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> SqlConfig:
    """A store whose event log holds 100k events in 100 appends of 1,000 (streams big-0..3
    take turns per append). Built once, on a thread with its own event loop; tests only read."""
    config = backend.sql_config(tmp_path_factory.mktemp("big-log"))
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _build_big_log(config)).result()
    return config


@pytest.mark.parametrize("batch_size", [7, 1000, 4096])
async def test_read_all_pages_over_100k_events_once_and_in_order(
    big_log: SqlConfig, batch_size: int
) -> None:
    async with SqlService(big_log) as sql:
        expected = 0
        last = 0
        async for event in sql.event_store.read_all(batch_size=batch_size):
            assert event.data == {"n": expected}
            assert event.position > last
            last = event.position
            expected += 1
        assert expected == BIG
        assert last == await sql.event_store.last_position()


async def test_read_stream_pages_a_long_stream_once_and_in_order(big_log: SqlConfig) -> None:
    async with SqlService(big_log) as sql:
        versions = 0
        last_n = -1
        async for event in sql.event_store.read_stream("big-1", batch_size=333):
            versions += 1
            assert event.version == versions
            assert event.data["n"] > last_n
            last_n = event.data["n"]
        assert versions == BIG // BIG_STREAMS
        assert versions == await sql.event_store.stream_version("big-1")


@contextlib.contextmanager
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def traced_since(baseline: int) -> int:
    """Peak traced bytes above ``baseline`` since the last reset."""
    return tracemalloc.get_traced_memory()[1] - baseline


async def test_reading_is_lazy(big_log: SqlConfig) -> None:
    """Memory follows the batch, not the log: held events are measured, not guessed."""
    async with SqlService(big_log) as sql:
        store = sql.event_store
        with traced():
            # What 1,000 events take when held: the yardstick.
            baseline = tracemalloc.get_traced_memory()[0]
            held = await first(store.read_all(batch_size=CHUNK), CHUNK)
            one_batch = tracemalloc.get_traced_memory()[0] - baseline
            assert len(held) == CHUNK
            del held

            # The first 10 of 100k, then stop.
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            ten = await first(store.read_all(batch_size=10), 10)
            assert [e.data["n"] for e in ten] == list(range(10))
            assert traced_since(baseline) < one_batch, "reading 10 events loaded far more"
            del ten

            # Every event, counted while iterating: never more than a few batches in memory
            # (holding all of them would take about 100 batches).
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            count = 0
            async for _ in store.read_all(batch_size=CHUNK):
                count += 1
                if count % 25_000 == 0:
                    current = tracemalloc.get_traced_memory()[0] - baseline
                    assert current < 5 * one_batch, f"{current} bytes held at event {count}"
            assert count == BIG
            peak = traced_since(baseline)
            assert peak < 10 * one_batch, f"peak {peak} bytes; one batch is {one_batch}"
        stats = sql.events.statistics()
        assert stats.readers_idle == stats.readers_total, "a stopped read kept its reader"


# -- snapshots --------------------------------------------------------------------------------


async def snapshot_versions(sql: SqlService, stream_id: str) -> list[int]:
    rows = await sql.events.fetch_all(
        "SELECT version FROM aggregate_snapshots WHERE stream_id = ? ORDER BY version",
        (stream_id,),
    )
    return [row[0] for row in rows]


async def test_load_snapshot_returns_the_newest(sql: SqlService) -> None:
    store = sql.event_store
    await store.save_snapshot("kb-1", 5, {"name": "Docs", "count": 5})
    await store.save_snapshot("kb-1", 9, {"name": "Docs ✓", "count": 9, "tags": ["a", "b"]})
    await store.save_snapshot("kb-1", 7, {"count": 7})  # an older version saved later
    snapshot = await store.load_snapshot("kb-1")
    assert isinstance(snapshot, Snapshot)
    assert (snapshot.stream_id, snapshot.version, snapshot.schema_version) == ("kb-1", 9, 1)
    assert same_json(snapshot.state, {"name": "Docs ✓", "count": 9, "tags": ["a", "b"]})
    assert snapshot.created_at.endswith("Z")


async def test_saving_a_version_again_replaces_it(sql: SqlService) -> None:
    await sql.event_store.save_snapshot("kb-1", 3, {"v": "first"})
    await sql.event_store.save_snapshot("kb-1", 3, {"v": "second"})
    snapshot = await sql.event_store.load_snapshot("kb-1")
    assert snapshot is not None
    assert snapshot.state == {"v": "second"}
    assert await snapshot_versions(sql, "kb-1") == [3]


async def test_load_snapshot_of_an_unknown_stream_is_none(sql: SqlService) -> None:
    await sql.event_store.save_snapshot("kb-1", 1, {})
    assert await sql.event_store.load_snapshot("kb-2") is None
    assert await sql.event_store.load_snapshot("kb-1", schema_version=2) is None


async def test_schema_version_filter(sql: SqlService) -> None:
    store = sql.event_store
    await store.save_snapshot("kb-1", 4, {"shape": 1}, schema_version=1)
    await store.save_snapshot("kb-1", 6, {"shape": 2}, schema_version=2)
    newest = await store.load_snapshot("kb-1")
    old_shape = await store.load_snapshot("kb-1", schema_version=1)
    new_shape = await store.load_snapshot("kb-1", schema_version=2)
    assert newest is not None
    assert old_shape is not None
    assert new_shape is not None
    assert (newest.version, newest.schema_version) == (6, 2)
    assert (old_shape.version, old_shape.state) == (4, {"shape": 1})
    assert (new_shape.version, new_shape.state) == (6, {"shape": 2})


async def test_pruning_keeps_the_newest_three_per_stream(sql: SqlService) -> None:
    store = sql.event_store
    for version in range(1, 4):
        await store.save_snapshot("other", version, {"v": version})
    for version in range(1, 8):
        await store.save_snapshot("kb-1", version, {"v": version})
        assert await snapshot_versions(sql, "kb-1") == list(range(max(1, version - 2), version + 1))
    assert await snapshot_versions(sql, "other") == [1, 2, 3], "another stream was pruned"
    # An older version saved late is pruned at once: it is not among the newest three.
    await store.save_snapshot("kb-1", 2, {"v": 2})
    assert await snapshot_versions(sql, "kb-1") == [5, 6, 7]


async def test_keep_snapshots_is_configurable(sql: SqlService) -> None:
    store = EventStore(sql.events, keep_snapshots=1)
    for version in (1, 2, 3):
        await store.save_snapshot("kb-1", version, {"v": version})
    assert await snapshot_versions(sql, "kb-1") == [3]
    with pytest.raises(ConfigError, match="keep_snapshots") as info:
        EventStore(sql.events, keep_snapshots=0)
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value, ValueError)


async def test_a_snapshot_that_is_not_json_is_refused(sql: SqlService) -> None:
    with pytest.raises(QueryError, match=re.escape("$.items[1]")):
        await sql.event_store.save_snapshot("kb-1", 1, {"items": [1, math.nan]})
    assert await snapshot_versions(sql, "kb-1") == []


# -- checkpoints ------------------------------------------------------------------------------


async def test_checkpoints_move_forward_only(sql: SqlService) -> None:
    store = sql.event_store
    assert await store.get_checkpoint("projector") == 0
    await store.set_checkpoint("projector", 5)
    assert await store.get_checkpoint("projector") == 5
    await store.set_checkpoint("projector", 3)
    assert await store.get_checkpoint("projector") == 5, "a lower position must be ignored"
    await store.set_checkpoint("projector", 5)
    assert await store.get_checkpoint("projector") == 5
    await store.set_checkpoint("projector", 12)
    assert await store.get_checkpoint("projector") == 12
    assert await store.get_checkpoint("mailer") == 0, "names are independent"
    with pytest.raises(QueryError, match="position"):
        await store.set_checkpoint("projector", -1)
    assert await store.get_checkpoint("projector") == 12


class Crash(Exception):
    """A consumer dying half-way through a batch."""


CONSUMER = "exactly-once"


async def consume(sql: SqlService, *, limit: int, crash: bool = False) -> int:
    """Handle up to ``limit`` events after the checkpoint: the consumer's rows and its checkpoint
    change in one transaction of the events database. Returns how many were handled."""
    store = sql.event_store
    async with sql.events.transaction() as tx:
        checkpoint = await store.get_checkpoint(CONSUMER)
        batch = await first(store.read_all(checkpoint), limit)
        for event in batch:
            await tx.execute(
                "INSERT INTO handled(position, event_id, n) VALUES (?, ?, ?)",
                (event.position, event.event_id, event.data["n"]),
            )
        if batch:
            await store.set_checkpoint(CONSUMER, batch[-1].position, transaction=tx)
        if crash:
            raise Crash
    return len(batch)


async def handled(sql: SqlService) -> list[tuple[int, int]]:
    """(position, times handled) for every handled event."""
    rows = await sql.events.fetch_all(
        "SELECT position, count(*) FROM handled GROUP BY position ORDER BY position"
    )
    return [(row[0], row[1]) for row in rows]


@pytest.mark.parametrize(
    "mvp", [pytest.param(False, id="production"), pytest.param(True, id="mvp")]
)
async def test_an_exactly_once_consumer_survives_a_crash(
    sql_config: Callable[..., SqlConfig], mvp: bool
) -> None:
    config = sql_config(mvp=mvp)
    async with SqlService(config) as sql:
        await sql.events.execute("CREATE TABLE handled(position INTEGER, event_id TEXT, n INTEGER)")
        results = [await sql.event_store.append(f"s{n % 2}", [tick(n)]) for n in range(12)]
        positions = [r.last_position for r in results]

        assert await consume(sql, limit=5) == 5
        assert await sql.event_store.get_checkpoint(CONSUMER) == positions[4]

        with pytest.raises(Crash):
            await consume(sql, limit=5, crash=True)
        assert await handled(sql) == [(p, 1) for p in positions[:5]], "the crash left rows"
        assert await sql.event_store.get_checkpoint(CONSUMER) == positions[4]

    # A restart in between: the checkpoint and the rows are durable together.
    async with SqlService(config) as sql:
        assert await sql.event_store.get_checkpoint(CONSUMER) == positions[4]
        while await consume(sql, limit=4):
            pass
        assert await handled(sql) == [(p, 1) for p in positions]
        assert await sql.event_store.get_checkpoint(CONSUMER) == positions[-1]
        ns = [row[0] for row in await sql.events.fetch_all("SELECT n FROM handled ORDER BY n")]
        assert ns == list(range(12))


# -- subscriptions ----------------------------------------------------------------------------


OTHER_PROCESS_APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from async_store import NewEvent, SqlConfig, SqlService

    async def main():
        async with SqlService(SqlConfig.from_env()) as sql:
            result = await sql.event_store.append(
                "remote", [NewEvent("FromAnotherProcess", {"n": 100}, event_id=sys.argv[1])]
            )
        print(result.last_position, flush=True)

    asyncio.run(main())
    """
)


async def append_from_another_process(environ: Mapping[str, str], event_id: str) -> int:
    """Append one event from another process whose ``SqlConfig.from_env()`` reads ``environ``;
    return its position."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OTHER_PROCESS_APPENDER,
        event_id,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **environ},
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    return int(out)


async def within(awaitable: Awaitable[RecordedEvent], seconds: float = 5) -> RecordedEvent:
    async with asyncio.timeout(seconds):
        return await awaitable


async def next_event(events: AsyncIterator[RecordedEvent]) -> RecordedEvent:
    return await anext(events)


async def test_subscribe_catches_up_follows_and_ends_on_close(
    backend: Backend, tmp_path: Path, sql_config: Callable[..., SqlConfig]
) -> None:
    sql = SqlService(sql_config())
    await sql.start()
    try:
        store = sql.event_store
        stored = [await store.append("local", [tick(n)]) for n in range(3)]
        subscription = store.subscribe(0, poll_interval=0.05)

        caught_up = [await within(anext(subscription)) for _ in range(3)]
        assert [e.position for e in caught_up] == [r.last_position for r in stored]

        # Waiting for the next event when this process appends it: woken by the append.
        waiting = asyncio.create_task(next_event(subscription))
        await asyncio.sleep(0)
        live = await store.append("local", [tick(3)])
        event = await within(waiting)
        assert (event.position, event.data) == (live.last_position, {"n": 3})

        # Another process appends: found by polling.
        remote_id = new_id()
        remote_position = await append_from_another_process(backend.environ(tmp_path), remote_id)
        event = await within(anext(subscription))
        assert (event.position, event.event_id) == (remote_position, remote_id)
        assert event.type == "FromAnotherProcess"

        # Closing the service ends a subscription that is waiting.
        waiting = asyncio.create_task(next_event(subscription))
        await asyncio.sleep(0)
        await sql.close()
        with pytest.raises(StopAsyncIteration):
            await within(waiting)
        with pytest.raises(StopAsyncIteration):
            await within(anext(subscription))
    finally:
        await sql.close()


async def test_a_subscription_paused_at_an_event_ends_when_the_service_closes(
    sql_config: Callable[..., SqlConfig],
) -> None:
    async with SqlService(sql_config()) as sql:
        stored = [await sql.event_store.append("s", [tick(n)]) for n in range(5)]
        subscription = sql.event_store.subscribe(0, poll_interval=0.05, batch_size=3)
        await within(anext(subscription))
    # It may still hand out what it had fetched before the close; then it ends, without error.
    async with asyncio.timeout(5):
        rest = await collect(subscription)
    positions = [r.last_position for r in stored]
    assert [e.position for e in rest] == positions[1 : 1 + len(rest)]
    with pytest.raises(StopAsyncIteration):
        await within(anext(subscription))


async def test_subscribe_from_a_position_skips_what_came_before(sql: SqlService) -> None:
    results = await interleaved(sql)
    start = results[7].last_position
    async with contextlib.aclosing(
        generator(sql.event_store.subscribe(start, poll_interval=0.05))
    ) as subscription:
        events = [await within(anext(subscription)) for _ in range(4)]
        assert [e.position for e in events] == [r.last_position for r in results[8:]]
        waiting = asyncio.create_task(next_event(subscription))
        await asyncio.sleep(0)
        assert not waiting.done()
        more = await sql.event_store.append("new", [tick(12)])
        assert (await within(waiting)).position == more.last_position
