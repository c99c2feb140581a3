"""The event store on SQLite, beyond the contract (``tests/contract/test_event_store.py``):
group commit of appends, the coalesced INSERT and its careful path, appends around an online
restore, the content-hash verifier and the append-only triggers.

Every test runs on real files: production mode (``events.db`` at ``synchronous=FULL``) unless
it says otherwise. Nothing here measures time: waits are bounded by ``asyncio.timeout`` only so
that a bug fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from async_store import (
    ANY,
    NO_STREAM,
    AppendResult,
    ExpectedVersion,
    JsonInput,
    NewEvent,
    SqlConfig,
    SqlService,
    StoreError,
)
from async_store.events._prepared import content_hash
from tests.contract.test_event_store import collect, count_events, interleaved, new_id, tick
from tests.test_state_manager import writer_held

# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def sql(tmp_path: Path) -> AsyncIterator[SqlService]:
    """A production-mode service: ``app_meta.db`` and ``events.db`` (FULL) in ``tmp_path``."""
    async with SqlService(SqlConfig.in_directory(tmp_path)) as service:
        yield service


# -- group commit and the coalesced write -----------------------------------------------------


async def test_fifty_concurrent_appends_get_versions_one_to_fifty(sql: SqlService) -> None:
    store = sql.event_store
    before = sql.events.statistics()
    ids = [new_id() for _ in range(50)]

    results = await asyncio.gather(
        *(store.append("busy", [tick(n, event_id=ids[n])]) for n in range(50))
    )

    assert sorted(r.last_version for r in results) == list(range(1, 51))
    events = await collect(store.read_stream("busy"))
    assert [e.version for e in events] == list(range(1, 51))
    positions = [e.position for e in events]
    assert positions == sorted(set(positions)), "positions must increase with the version"
    by_version = {e.version: e for e in events}
    for event_id, result in zip(ids, results, strict=True):
        stored = by_version[result.last_version]
        assert stored.event_id == event_id
        assert stored.position == result.last_position

    # Group commit: the fifty appends shared commits (coalesced into writer jobs that each
    # commit once), instead of paying one commit each.
    commits = sql.events.statistics().batches - before.batches
    assert 1 <= commits < 50, f"no group commit: {commits} commits for 50 appends"


# Appends of one stream are coalesced and written at the version the store learnt from its own
# commits; these tests break that knowledge on purpose and check that nothing goes wrong.


async def test_a_flaw_in_one_careful_append_fails_that_append_only(
    sql: SqlService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch mixes appends written by the one INSERT (a stream the store knows) and appends
    made the careful way (a stream it has not seen), and shares its group commit with another
    caller's write. One careful append failing in a way nobody planned for fails that append
    alone: the others in the batch and the other caller's write are kept."""
    import async_store.sqlite._event_recorder as event_log

    await sql.event_store.append("known", [tick(0)])
    careful = event_log.append_rows

    def flawed(conn: sqlite3.Connection, stream_id: str, *args: Any) -> AppendResult:
        if stream_id == "unseen":
            raise RuntimeError("a flaw in the careful path")
        return careful(conn, stream_id, *args)

    monkeypatch.setattr(event_log, "append_rows", flawed)
    # Hold the writer so that the coalesced write and another caller's write queue up and
    # share one group commit: the other write must keep its work, the batch must not.
    async with writer_held(sql.events):
        appends = [
            asyncio.ensure_future(sql.event_store.append("known", [tick(1)])),
            asyncio.ensure_future(sql.event_store.append("unseen", [tick(2)])),
        ]
        await asyncio.sleep(0.01)  # the appends are handed to the writer as one job
        other = asyncio.ensure_future(sql.event_store.set_checkpoint("other-work", 7))
        await asyncio.sleep(0.01)
    outcomes = await asyncio.gather(*appends, return_exceptions=True)
    await other
    known, unseen = outcomes
    assert isinstance(known, AppendResult), known
    assert known.last_version == 2
    assert isinstance(unseen, StoreError), unseen
    assert "a flaw in the careful path" in str(unseen)
    assert await count_events(sql) == 2
    assert await count_events(sql, "unseen") == 0
    assert await sql.event_store.get_checkpoint("other-work") == 7
    assert (await sql.event_store.verify_events()).ok


async def test_appends_during_an_online_restore_leave_no_gap(tmp_path: Path) -> None:
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as sql:
        await sql.event_store.append("s", [tick(n) for n in range(3)])
        backup = await sql.backup(tmp_path / "backups")
        for n in range(3, 10):
            await sql.event_store.append("s", [tick(n)])
        restore = asyncio.ensure_future(sql.restore(backup.directory))
        while not restore.done():
            await sql.event_store.append("s", [tick(99)])
        await restore
        await sql.event_store.append("s", [tick(100)])
        report = await sql.event_store.verify_events()
        assert report.ok, report


async def test_more_events_waiting_than_one_insert_takes_are_written_in_turn(
    sql: SqlService,
) -> None:
    """Appends of 100 events each pile up behind a held writer, more events than one INSERT
    takes: they are written in several turns, in order, and one cancelled meanwhile is left
    out."""
    hundred = [tick(n) for n in range(100)]
    async with writer_held(sql.events):
        first = asyncio.ensure_future(sql.event_store.append("first", [tick(0)]))
        await asyncio.sleep(0.01)  # its write waits for the writer; the rest wait behind it
        appends = [
            asyncio.ensure_future(sql.event_store.append(f"s{n % 3}", hundred)) for n in range(45)
        ]
        await asyncio.sleep(0)
        appends[20].cancel()
    await first
    outcomes = await asyncio.gather(*appends, return_exceptions=True)
    assert isinstance(outcomes[20], asyncio.CancelledError)
    results = [o for o in outcomes if isinstance(o, AppendResult)]
    assert len(results) == 44
    for stream in ("s0", "s1", "s2"):
        mine = [r for r in results if r.stream_id == stream]
        assert [(r.first_version, r.last_version) for r in mine] == [
            (100 * k + 1, 100 * k + 100) for k in range(len(mine))
        ]
    assert await count_events(sql) == 1 + 44 * 100
    assert (await sql.event_store.verify_events()).ok


async def test_an_online_restore_makes_the_store_forget_the_versions_it_knew(
    tmp_path: Path,
) -> None:
    async with SqlService(SqlConfig.in_directory(tmp_path / "data")) as sql:
        await sql.event_store.append("s", [tick(n) for n in range(3)])
        backup = await sql.backup(tmp_path / "backups")
        await sql.event_store.append("s", [tick(n) for n in range(3, 5)])  # the store: at 5

        await sql.restore(backup.directory)  # the log is back at 3
        result = await sql.event_store.append("s", [tick(5)])

        assert (result.first_version, result.last_version) == (4, 4)
        assert (await sql.event_store.verify_events()).ok


# A coalesced write is one writer job. When the COMMIT of a group commit fails, the writer may
# roll the batch back and run its jobs again one by one: the job's outcome must then depend on
# the database alone, not on having run before.

PlannedAppend = tuple[str, list[NewEvent], ExpectedVersion, int | None]
"""stream, events, expected version, and the version the store believes the stream is at
(written by the one INSERT), or None (made the careful way)."""

STORED = [tick(0, event_id="a-1"), tick(1, event_id="a-2")]
"""Stream ``a`` holds these two events before each write below."""


@pytest.mark.parametrize(
    ("appends", "forgotten"),
    [
        pytest.param(
            [("a", [tick(2)], ANY, 2), ("a", [tick(3), tick(4)], 3, 3), ("b", [tick(5)], 0, 0)],
            False,
            id="one-insert",
        ),
        pytest.param(
            [
                ("a", [tick(2)], 2, None),
                ("c", [tick(3)], 5, None),
                ("a", STORED, ANY, None),
                ("a", [STORED[0], tick(4)], ANY, None),
                ("d", [tick(5)], NO_STREAM, None),
            ],
            False,
            id="careful-with-failures-and-a-retry",
        ),
        pytest.param(
            [("a", [tick(2)], ANY, 2), ("a", [STORED[1]], ANY, 3), ("e", [tick(3)], ANY, None)],
            False,
            id="insert-fails-then-careful",
        ),
        pytest.param(
            [("a", [tick(2)], ANY, 0), ("b", [tick(3)], 0, 0)], True, id="versions-forgotten"
        ),
    ],
)
async def test_a_coalesced_write_run_again_after_a_rollback_does_the_same(
    tmp_path: Path, appends: list[PlannedAppend], forgotten: bool
) -> None:
    """The same plan, run, rolled back and run again, answers every append the same way and
    writes the same rows: through the one INSERT, the careful way (with refusals and a retry),
    after the INSERT failed, and when the store has forgotten the versions it planned from."""
    from async_store.events._prepared import PreparedEvent
    from async_store.events._recorder import Plan, Waiting
    from async_store.sqlite._event_recorder import write_plan

    async with SqlService(SqlConfig.in_directory(tmp_path)) as sql:
        await sql.event_store.append("a", STORED)
    loop = asyncio.get_running_loop()
    plan = Plan(len(appends), 0, lambda: 1 if forgotten else 0)
    for index, (stream_id, events, expected, believed) in enumerate(appends):
        prepared = [PreparedEvent(event, "2026-01-02T03:04:05.000006Z") for event in events]
        append = Waiting(stream_id, prepared, expected, loop.create_future())
        if believed is None:
            plan.slow.append((index, append))
        else:
            plan.add_direct(index, append, believed)

    def run(conn: sqlite3.Connection) -> tuple[list[object], list[tuple[Any, ...]]]:
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[object] = [
            outcome if isinstance(outcome, AppendResult) else (type(outcome), str(outcome))
            for outcome in write_plan(conn, plan, "events")
        ]
        rows = conn.execute("SELECT * FROM events ORDER BY position").fetchall()
        conn.execute("ROLLBACK")  # as the writer does when the batch's COMMIT fails
        return outcomes, rows

    conn = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    try:
        once = run(conn)
        again = run(conn)
    finally:
        conn.close()
    assert again == once
    outcomes, rows = once
    assert len(outcomes) == len(appends)
    assert len(rows) > len(STORED)


# -- verify_events and the append-only triggers ---------------------------------------------


@given(
    texts=st.lists(st.text(), min_size=6, max_size=6),
    version=st.integers(min_value=1, max_value=2**62),
    with_metadata=st.booleans(),
)
def test_content_hash_is_sha256_of_the_json_list_of_the_columns(
    texts: list[str], version: int, with_metadata: bool
) -> None:
    """The stored hash keeps one definition, so rows written by any version verify."""
    event_id, stream_id, type_, data, metadata, recorded_at = texts
    meta = metadata if with_metadata else None
    columns = [event_id, stream_id, version, type_, data, meta, recorded_at]
    expected = hashlib.sha256(json.dumps(columns).encode("utf-8")).hexdigest()
    assert content_hash(event_id, stream_id, version, type_, data, meta, recorded_at) == expected


utf8_text = st.text(st.characters(codec="utf-8"), min_size=1)


@given(
    event_id=st.none() | utf8_text,
    stream_id=utf8_text,
    type_=utf8_text,
    version=st.integers(min_value=1, max_value=2**62),
    metadata=st.none() | st.dictionaries(st.text(), st.text()),
)
def test_an_appended_row_carries_the_hash_of_its_columns(
    event_id: str | None, stream_id: str, type_: str, version: int, metadata: JsonInput
) -> None:
    """The hash an append writes is ``content_hash`` of the row, generated ids and escaped
    text alike (the append spares itself escaping what needs none)."""
    from async_store._clock import utc_now
    from async_store.events._prepared import PreparedEvent

    event = NewEvent(type_, {"text": type_}, metadata=metadata, event_id=event_id)
    row = PreparedEvent(event, utc_now()).row(stream_id, version)
    expected = hashlib.sha256(json.dumps(row[:7]).encode("utf-8")).hexdigest()
    assert row[7] == expected == content_hash(*row[:7])


async def test_verify_events_on_a_clean_log(sql: SqlService) -> None:
    await interleaved(sql)
    await sql.event_store.append("with-metadata", [tick(1, metadata={"user": "ann"})])
    report = await sql.event_store.verify_events(batch_size=5)
    assert report.ok
    assert report.checked == 13
    assert report.altered == ()
    assert report.broken_streams == ()


def tamper(events_db: Path, statement: str, trigger: str) -> None:
    """Run ``statement`` on the file behind the library's back, with ``trigger`` dropped for
    the moment and recreated as it was."""
    raw = sqlite3.connect(events_db, isolation_level=None, timeout=10)
    try:
        (definition,) = raw.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (trigger,)
        ).fetchone()
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(f"DROP TRIGGER {trigger}")
        raw.execute(statement)
        raw.execute(definition)
        raw.execute("COMMIT")
    finally:
        raw.close()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("data = json_object('n', 666)", id="data"),
        pytest.param("data = json_object('n', 4, 'extra', 1)", id="data-key-added"),
        pytest.param("metadata = '{\"forged\":true}'", id="metadata"),
        pytest.param("type = 'Forged'", id="type"),
        pytest.param("recorded_at = '2000-01-01T00:00:00.000000Z'", id="recorded-at"),
        # The schema checks only the hash's length; a forged one is found all the same.
        pytest.param("content_hash = upper(content_hash)", id="hash-upper-case"),
        pytest.param("content_hash = printf('%.64c', 'z')", id="hash-not-hex"),
    ],
)
async def test_verify_events_finds_an_event_altered_on_disk(sql: SqlService, change: str) -> None:
    results = await interleaved(sql)
    target = results[4].last_position
    tamper(
        sql.events.path, f"UPDATE events SET {change} WHERE position = {target}", "events_no_update"
    )

    report = await sql.event_store.verify_events(batch_size=5)
    assert not report.ok
    assert report.altered == (target,)
    assert report.broken_streams == ()
    assert report.checked == 12
    with pytest.raises(StoreError, match="append-only"):
        await sql.events.execute("UPDATE events SET type = 'x'")


async def test_verify_events_finds_a_gap_in_a_stream(sql: SqlService) -> None:
    results = await interleaved(sql)
    gone = results[4].last_position  # version 2 of stream b
    tamper(sql.events.path, f"DELETE FROM events WHERE position = {gone}", "events_no_delete")
    report = await sql.event_store.verify_events()
    assert report.broken_streams == ("b",)
    assert report.altered == ()
    assert not report.ok


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE events SET data = '{\"n\": 0}' WHERE version = 1", id="update"),
        pytest.param("DELETE FROM events WHERE stream_id = 'a'", id="delete"),
        pytest.param("DELETE FROM events", id="delete-all"),
        pytest.param(
            "INSERT OR REPLACE INTO events(event_id, stream_id, version, type, data,"
            " content_hash) SELECT event_id, stream_id, version, 'Forged', data, content_hash"
            " FROM events WHERE position = 1",
            id="insert-or-replace",
        ),
        pytest.param(
            "REPLACE INTO events(position, event_id, stream_id, version, type, data,"
            " content_hash) SELECT position, 'new-id', 'x', 1, 'Forged', data, content_hash"
            " FROM events WHERE position = 2",
            id="replace-by-position",
        ),
    ],
)
async def test_events_are_append_only(sql: SqlService, statement: str) -> None:
    await interleaved(sql)
    before = await collect(sql.event_store.read_all())
    with pytest.raises(StoreError, match="append-only"):
        await sql.events.execute(statement)
    assert await collect(sql.event_store.read_all()) == before
    assert (await sql.event_store.verify_events()).ok
