"""The repositories after a worker process is killed with SIGKILL.

* **Stuck runs.** A worker process finishes a few pipeline runs, starts one more (printing its id
  once ``start`` has returned), heartbeats a few times while "working" and then hangs. The test
  kills it with SIGKILL. A new service finds exactly that run with ``stuck(silent_for=0)``: still
  ``running``, no ``finished_at``, its last heartbeat kept; it can ``fail`` it, after which
  nothing is stuck. The runs the worker finished before the kill are not reported.
* **A large ingest killed mid-transaction.** A worker ingests a 50,000-chunk document and says
  when the ingest's transaction begins on the writer; the test kills it then,
  or a seeded moment later. The files then hold the document as it was before (absent, or the
  old version for a replace) or the complete new one with all its chunks, never a partial set;
  ``integrity_check`` and ``foreign_key_check`` are clean, and the ingest can be retried.

Both workers are small scripts run with ``python -c`` (see ``RUNS_WORKER``/``INGEST_WORKER``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from async_store import DocumentRepository, PipelineRunRepository, SqlConfig, SqlService
from async_store.repositories import content_hash

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX-only")

SEED = int(os.environ.get("ASYNC_STORE_FAULT_SEED", "20250611"))

RUNS_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from async_store import PipelineRunRepository, SqlConfig, SqlService

    directory, mvp = sys.argv[1], sys.argv[2] == "mvp"
    finished, beats = int(sys.argv[3]), int(sys.argv[4])

    async def main():
        async with SqlService(SqlConfig.in_directory(directory, mvp=mvp)) as sql:
            runs = PipelineRunRepository(sql.app)
            for _ in range(finished):
                run = await runs.start("pipe")
                await runs.finish(run.id, stats={"chunks": 10})
                print("finished", run.id, flush=True)
            run = await runs.start("pipe")
            print("started", run.id, flush=True)
            for beat in range(beats):
                await asyncio.sleep(0.01)  # "working"
                await runs.heartbeat(run.id)
                print("heartbeat", beat + 1, flush=True)
            await asyncio.Event().wait()  # hangs: the work never ends

    asyncio.run(main())
    """
)

INGEST_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from async_store import DocumentRepository, SqlConfig, SqlService

    directory, mvp, chunks = sys.argv[1], sys.argv[2] == "mvp", int(sys.argv[3])

    def announce_the_transaction(conn):
        # On the writer's thread: say when the ingest's transaction begins (the only write
        # of this worker).
        announced = []

        def trace(statement):
            if statement.startswith("BEGIN") and not announced:
                announced.append(True)
                print("in-transaction", flush=True)

        conn.set_trace_callback(trace)

    async def main():
        async with SqlService(SqlConfig.in_directory(directory, mvp=mvp)) as sql:
            await sql.app.run_on_writer(announce_the_transaction)
            docs = DocumentRepository(sql.app)
            result = await docs.ingest(
                "kb",
                title="big",
                content="new content",
                chunks=[f"new chunk {i} " + "x" * 40 for i in range(chunks)],
                document_id="big",
            )
            print("done", result.outcome, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)

MODES = [pytest.param("production", id="production"), pytest.param("mvp", id="mvp")]


def config(directory: Path, mode: str) -> SqlConfig:
    return SqlConfig.in_directory(directory, mvp=mode == "mvp")


async def run_and_kill(
    script: str, args: list[str], kill_after: Callable[[str], bool], delay: float = 0.0
) -> list[str]:
    """Run ``script``, SIGKILL it ``delay`` seconds after it printed a line ``kill_after``
    accepts, and return every complete line it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while True:
                raw = await process.stdout.readline()
                if not raw.endswith(b"\n"):
                    stderr = await process.stderr.read()
                    raise AssertionError(f"the worker died: {stderr.decode(errors='replace')}")
                lines.append(raw.decode().rstrip("\n"))
                if kill_after(lines[-1]):
                    break
            if delay:
                await asyncio.sleep(delay)
            os.kill(process.pid, signal.SIGKILL)
            rest = await process.stdout.read()
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    lines += [line.decode() for line in rest.splitlines(keepends=True) if line.endswith(b"\n")]
    return [line.rstrip("\n") for line in lines]


async def prepare(directory: Path, mode: str) -> None:
    async with SqlService(config(directory, mode)) as sql:
        await sql.app.execute("INSERT INTO knowledge_bases(id, name) VALUES ('kb', 'Docs')")
        await sql.app.execute("INSERT INTO pipelines(id, name) VALUES ('pipe', 'Ingest')")


async def assert_files_intact(sql: SqlService) -> None:
    for database in sql.databases:
        assert await database.fetch_val("PRAGMA integrity_check") == "ok", database.name
        assert await database.fetch_all("PRAGMA foreign_key_check") == [], database.name


# -- stuck runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_run_killed_mid_work_is_found_stuck_and_can_be_failed(
    tmp_path: Path, mode: str
) -> None:
    directory = tmp_path / "data"
    await prepare(directory, mode)
    beats = 3

    lines = await run_and_kill(
        RUNS_WORKER,
        [str(directory), mode, "2", str(beats)],
        kill_after=lambda line: line == f"heartbeat {beats}",
    )

    finished = [line.split()[1] for line in lines if line.startswith("finished ")]
    (started,) = [line.split()[1] for line in lines if line.startswith("started ")]
    assert len(finished) == 2
    async with SqlService(config(directory, mode)) as sql:
        await assert_files_intact(sql)
        runs = PipelineRunRepository(sql.app)

        stuck = await runs.stuck(silent_for=0)
        assert [run.id for run in stuck] == [started]
        (run,) = stuck
        assert run.status == "running"
        assert run.finished_at is None
        assert run.heartbeat_at is not None
        assert run.heartbeat_at > run.started_at, "the heartbeats before the kill were lost"
        # Its last heartbeat is recent: not stuck by an hour's standard yet.
        assert await runs.stuck(silent_for=3600) == []
        for run_id in finished:
            done = await runs.get(run_id)
            assert done is not None
            assert (done.status, done.stats) == ("succeeded", {"chunks": 10})

        failed = await runs.fail(started, "worker killed")
        assert failed.status == "failed"
        assert failed.finished_at is not None
        assert failed.error == "worker killed"
        assert await runs.stuck(silent_for=0) == []
        listed = await runs.list_for_pipeline("pipe")
        assert {(r.id, r.status) for r in listed} == {
            (started, "failed"),
            *((run_id, "succeeded") for run_id in finished),
        }


# -- a large ingest killed mid-transaction -----------------------------------------------------

CHUNKS = 50_000
OLD_CHUNKS = 300


@pytest.mark.parametrize(
    ("mode", "replace", "delay_slot"),
    [
        pytest.param("production", False, 0, id="production-create-kill-at-once"),
        pytest.param("production", True, 0, id="production-replace-kill-at-once"),
        pytest.param("production", False, 1, id="production-create-kill-a-moment-later"),
        pytest.param("mvp", True, 1, id="mvp-replace-kill-a-moment-later"),
        pytest.param("mvp", False, 2, id="mvp-create-kill-later"),
    ],
)
async def test_a_large_ingest_killed_mid_transaction_is_all_or_nothing(
    tmp_path: Path, mode: str, replace: bool, delay_slot: int
) -> None:
    directory = tmp_path / "data"
    await prepare(directory, mode)
    if replace:
        async with SqlService(config(directory, mode)) as sql:
            await DocumentRepository(sql.app).ingest(
                "kb",
                title="big",
                content="old content",
                chunks=[f"old chunk {i}" for i in range(OLD_CHUNKS)],
                document_id="big",
            )
    # Slot 0: at once; slot 1: within the insert; slot 2: around or after its commit. Seeded.
    rng = random.Random(f"{SEED}-{mode}-{replace}-{delay_slot}")
    delay = (0.0, rng.uniform(0.005, 0.05), rng.uniform(0.05, 0.4))[delay_slot]

    lines = await run_and_kill(
        INGEST_WORKER,
        [str(directory), mode, str(CHUNKS)],
        kill_after=lambda line: line == "in-transaction",
        delay=delay,
    )
    acknowledged = any(line.startswith("done ") for line in lines)

    async with SqlService(config(directory, mode)) as sql:
        await assert_files_intact(sql)
        docs = DocumentRepository(sql.app)
        document = await docs.get("big")
        shape = await sql.app.fetch_one(
            "SELECT count(*), count(DISTINCT chunk_index), min(chunk_index), max(chunk_index)"
            " FROM document_chunks WHERE document_id = 'big'"
        )
        assert shape is not None
        count, distinct, lowest, highest = shape[0], shape[1], shape[2], shape[3]
        total = await sql.app.fetch_val("SELECT count(*) FROM document_chunks")

        if document is not None and document.content_hash == content_hash("new content"):
            # The ingest committed: every chunk is there.
            assert document.chunk_count == CHUNKS
            assert (count, distinct, lowest, highest) == (CHUNKS, CHUNKS, 0, CHUNKS - 1)
            first = (await docs.chunk_page("kb", limit=1))[0]
            assert first.content == "new chunk 0 " + "x" * 40
        elif replace:
            # It did not: the old version is intact.
            assert not acknowledged, "an acknowledged ingest was lost"
            assert document is not None
            assert document.content_hash == content_hash("old content")
            assert document.chunk_count == OLD_CHUNKS
            assert (count, distinct, lowest, highest) == (OLD_CHUNKS, OLD_CHUNKS, 0, OLD_CHUNKS - 1)
        else:
            assert not acknowledged, "an acknowledged ingest was lost"
            assert document is None
            assert count == 0
        assert total == count, "chunks of no document were left behind"

        retried = await docs.ingest(
            "kb",
            title="big",
            content="new content",
            chunks=[f"new chunk {i} " + "x" * 40 for i in range(CHUNKS)],
            document_id="big",
        )
        committed = document is not None and document.content_hash == content_hash("new content")
        expected = "unchanged" if committed else ("replaced" if replace else "created")
        assert retried.outcome == expected
        assert await docs.stats("kb") == (await docs.stats_all())[0]
        assert (await docs.stats("kb")).chunks == CHUNKS
