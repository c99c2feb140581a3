"""Four processes writing the same files at once, through the library.

Each process (``python -m tests.faults._workload contend DIR P OPS``) opens a production-mode
service on one shared directory -- all four at the same moment on fresh files, so they also
race to apply the migrations -- and runs four tasks that together make ``OPS`` app writes (a
two-row transaction every third, a single ``execute`` otherwise) and ``OPS`` event appends
(alternately to the process's own stream and to one stream all processes share). The busy
settings are the defaults (``busy_timeout`` 5 s, 5 retries).

Once all four are open, the test tells them to start writing at the same moment. Every
process must finish without an error (no ``DatabaseBusy``, no "database is locked"),
and afterwards every write is there: each process's rows and transactions complete, its own
stream at version ``OPS / 2``, the shared stream at ``4 * OPS / 2`` without gaps, each
migration recorded once, ``integrity_check`` and ``verify_events()`` ok.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from async_store import SqlConfig, SqlService
from tests.faults._workload import REPO, ROUNDS, integrity, record, worker_args

PROCESSES = 4
OPS = 2000 if ROUNDS else 240


async def run_all(directory: Path) -> list[dict[str, Any]]:
    processes = [
        await asyncio.create_subprocess_exec(
            *worker_args("contend", directory, p, OPS),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for p in range(PROCESSES)
    ]
    try:
        async with asyncio.timeout(280):
            for process in processes:
                assert process.stdout is not None
                line = await process.stdout.readline()
                assert line == b"ready\n", (line, await process.stderr.read())  # type: ignore[union-attr]
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
            outputs = await asyncio.gather(*(p.communicate() for p in processes))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    reports = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
        assert b"locked" not in stderr, stderr.decode()
        reports.append(json.loads(stdout.decode().splitlines()[-1]))
    return reports


@pytest.mark.timeout(300)
async def test_four_processes_write_at_once_without_busy_errors_or_lost_writes(
    tmp_path: Path,
) -> None:
    reports = await run_all(tmp_path)

    for name in ("app_meta.db", "events.db"):
        assert integrity(tmp_path / name) == "ok", name
    async with SqlService(SqlConfig.in_directory(tmp_path)) as sql:
        assert await sql.migrate() == []
        applied = await sql.app.fetch_all(
            "SELECT migration_set, count(*) FROM schema_migrations GROUP BY migration_set"
        )
        assert all(row[1] == 1 for row in applied), [tuple(row) for row in applied]

        rows = await sql.app.fetch_all("SELECT logger, message FROM logs ORDER BY id")
        # The writes overlapped: in commit order, the processes take turns.
        owners = [row[0].partition("-")[2] for row in rows]
        turns = sum(a != b for a, b in itertools.pairwise(owners))
        assert turns >= PROCESSES, f"the processes did not write at the same time ({turns})"
        by_logger = Counter(row[0] for row in rows)
        written = {row[1] for row in rows}
        for p in range(PROCESSES):
            transactions = len(range(0, OPS, 3))
            assert by_logger[f"tx-{p}"] == 2 * transactions
            assert by_logger[f"ex-{p}"] == OPS - transactions
            for n in range(OPS):
                expected = [f"p{p}-{n}/a", f"p{p}-{n}/b"] if n % 3 == 0 else [f"p{p}-{n}"]
                assert set(expected) <= written, expected
        assert len(rows) == sum(by_logger.values()) == PROCESSES * (OPS + len(range(0, OPS, 3)))

        store = sql.event_store
        for p in range(PROCESSES):
            assert await store.stream_version(f"own-{p}") == OPS // 2
        shared = [event async for event in store.read_stream("shared")]
        assert [e.version for e in shared] == list(range(1, PROCESSES * OPS // 2 + 1))
        assert Counter(e.data["process"] for e in shared) == dict.fromkeys(
            range(PROCESSES), OPS // 2
        )
        report = await store.verify_events()
        assert report.ok, report
        assert report.checked == PROCESSES * OPS

    retries = sum(sum(r["busy_retries"].values()) for r in reports)
    record(
        "contention",
        processes=PROCESSES,
        writes_per_process=2 * OPS,
        writes_total=PROCESSES * 2 * OPS,
        busy_retries=retries,
        turns_between_processes=turns,
        busy_errors=0,
        lost=0,
    )
