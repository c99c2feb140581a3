"""Acknowledged appends survive SIGKILL.

A separate process opens a production-mode service (``events.db`` at ``synchronous=FULL``) and
runs several appender tasks at once, one event per append, each with an event_id it chose. Right
after ``await append(...)`` returns it prints ``ack <event_id> <position> <stream> <version>``
and flushes. The test reads acknowledgements until a seeded random count (20 to 400), kills the
process with SIGKILL wherever it is (inside a group commit, between batches, while printing),
and keeps every complete line that reached the pipe: each one is an acknowledged append.

A new service then opens the files. Every acknowledged event is stored at its position, stream
and version; ``PRAGMA integrity_check`` is ok on both files; ``verify_events()`` is ok; stream
versions run 1..n without gaps; an appender's stored events are exactly its first k appends (it
starts append n+1 only after n returned, so only its last one may be stored unacknowledged); and
the log takes new appends. Each round kills two generations of appenders on the same files, so
recovery after a recovered crash is covered too.
"""

from __future__ import annotations

import random
import re
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from async_store import NewEvent, SqlConfig, SqlService
from tests.faults._kill import kill_after_acks

APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from async_store import NewEvent, SqlConfig, SqlService

    directory, generation, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    STREAMS = 5

    async def appender(store, task):
        n = 0
        while True:
            event_id = f"{generation}-t{task}-{n}"
            stream = f"stream-{(task + n) % STREAMS}"
            result = await store.append(
                stream, [NewEvent("Ticked", {"task": task, "n": n}, event_id=event_id)]
            )
            print(f"ack {event_id} {result.last_position} {stream} {result.last_version}",
                  flush=True)
            n += 1

    async def main():
        config = SqlConfig.in_directory(directory)
        assert config.events is not None and config.events.synchronous == "FULL"
        async with SqlService(config) as sql:
            print("ready", flush=True)
            await asyncio.gather(*(appender(sql.event_store, t) for t in range(tasks)))

    asyncio.run(main())
    """
)

ACK = re.compile(r"ack (?P<id>\S+) (?P<position>\d+) (?P<stream>\S+) (?P<version>\d+)")
EVENT_ID = re.compile(r"(?P<generation>g\d+)-t(?P<task>\d+)-(?P<n>\d+)")

ROUNDS = 20
GENERATIONS = 2


@dataclass(frozen=True)
class Ack:
    event_id: str
    position: int
    stream_id: str
    version: int


async def run_until_killed(directory: Path, generation: str, tasks: int, acks: int) -> list[Ack]:
    """Start an appender process, SIGKILL it after ``acks`` acknowledgements, and return every
    acknowledgement it managed to write (those read before the kill and those still in the
    pipe)."""
    lines = await kill_after_acks(
        [sys.executable, "-c", APPENDER, str(directory), generation, str(tasks)], acks
    )
    parsed: list[Ack] = []
    for line in lines:
        match = ACK.fullmatch(line.decode().rstrip("\n"))
        assert match is not None, line
        parsed.append(
            Ack(match["id"], int(match["position"]), match["stream"], int(match["version"]))
        )
    assert len(parsed) >= acks
    return parsed


async def check_log(directory: Path, acknowledged: list[Ack]) -> None:
    """Reopen the files and check everything the module docstring promises."""
    async with SqlService(SqlConfig.in_directory(directory)) as sql:
        for database in sql.databases:
            assert await database.fetch_val("PRAGMA integrity_check") == "ok", database.name

        rows = await sql.events.fetch_all(
            "SELECT event_id, position, stream_id, version, type FROM events ORDER BY position"
        )
        stored = {row[0]: Ack(row[0], row[1], row[2], row[3]) for row in rows}
        missing = [ack for ack in acknowledged if stored.get(ack.event_id) != ack]
        assert not missing, f"{len(missing)} acknowledged appends lost or moved: {missing[:5]}"

        report = await sql.event_store.verify_events()
        assert report.ok, report
        assert report.checked == len(rows)

        versions: dict[str, list[int]] = defaultdict(list)
        appends: dict[tuple[str, int], list[int]] = defaultdict(list)
        for row in rows:  # in position order
            versions[row[2]].append(row[3])
            if row[4] == "Recovered":  # written by an earlier check_log
                continue
            match = EVENT_ID.fullmatch(row[0])
            assert match is not None, row[0]
            appends[(match["generation"], int(match["task"]))].append(int(match["n"]))
        for stream_id, found in versions.items():
            assert found == list(range(1, len(found) + 1)), f"{stream_id}: {found}"
        for appender, ns in appends.items():
            assert ns == list(range(len(ns))), f"appender {appender} has a gap: {ns}"

        # The recovered log takes new appends exactly where each stream ended.
        for stream_id, found in versions.items():
            result = await sql.event_store.append(
                stream_id, [NewEvent("Recovered", {})], expected_version=len(found)
            )
            assert result.last_version == len(found) + 1
            assert result.last_position > rows[-1][1]


@pytest.mark.parametrize("round_", [pytest.param(n, id=f"round-{n}") for n in range(ROUNDS)])
async def test_acknowledged_appends_survive_sigkill(tmp_path: Path, round_: int) -> None:
    rng = random.Random(f"event-durability-{round_}")
    acknowledged: list[Ack] = []
    for generation in range(GENERATIONS):
        tasks = rng.choice([3, 8, 16])
        acks = rng.randint(20, 400)
        acknowledged += await run_until_killed(tmp_path, f"g{generation}", tasks, acks)
        await check_log(tmp_path, acknowledged)
