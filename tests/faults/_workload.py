"""The worker processes of the crash, disk-full, contention and migration fault tests, and the
helpers the tests share to run them, kill them and read what they acknowledged.

Run ``python -m tests.faults._workload MODE ...`` from the repository root:

* ``mixed DIR GENERATION`` -- a production-mode service under a mixed workload until killed:
  event appends, StateManager mutations, app_meta transactions of two rows (and some that
  raise and must leave nothing), single ``execute`` and three-row ``execute_many`` writes, and
  a backup now and then. Prints ``ready``, then one line per acknowledged operation once its
  ``await`` returned (see :func:`parse_acks`).
* ``contend DIR PROCESS OPS`` -- one of several processes writing the same files at once:
  prints ``ready`` once open, waits for ``go`` on its standard input, makes ``OPS`` app writes
  and ``OPS`` event appends, then prints its statistics as JSON and exits.
* ``migrate DIR SET_DIR`` -- opens the files with the application migration set in
  ``SET_DIR``, prints ``ready``, then one line per SQL statement the writer starts while it
  migrates, and ``done`` when the set is applied.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from async_store import NewEvent, SqlConfig, SqlService, StateManager
from async_store.migrations.runner import MigrationSet
from async_store.state import (
    Flow,
    FlowAdd,
    FlowRemove,
    KnowledgeBase,
    KnowledgeBaseAdd,
    KnowledgeBaseUpdate,
    SettingDelete,
    SettingSet,
    StateDelta,
    Tool,
    ToolAdd,
    ToolRemove,
)
from tests.conftest import on_sqlite

REPO = Path(__file__).resolve().parents[2]

SEED = int(os.environ.get("ASYNC_STORE_FAULT_SEED", "20250611"))
"""Seed of every random choice of the fault tests; override to explore other schedules."""

ROUNDS = int(os.environ.get("ASYNC_STORE_FAULT_ROUNDS", "0"))
"""0: the short versions (``make test``); otherwise the number of rounds of the long ones."""

APPENDERS = 2
STREAMS = 3


SLOWER = 3
"""How many times its measured duration a long test may take before its deadline fails it.
Durations are measured here (2 cores, ``sum(range(10**7))`` in 0.2 s) with a busy loop on the
other core, which made them up to 3.4 times as long as alone; a machine twice as slow and as
busy takes up to twice as long again, and 1.5 is the margin for busier neighbours."""


def deadline(measured_s: float) -> int:
    """The pytest-timeout, in seconds, of a test measured at ``measured_s`` seconds (see
    `SLOWER`): never under the suite's 120 s."""
    return max(120, math.ceil(SLOWER * measured_s))


def rounds(short: int) -> int:
    """How many rounds a test runs: ``short`` unless ``ASYNC_STORE_FAULT_ROUNDS`` says more."""
    return ROUNDS or short


def record(test: str, **figures: Any) -> None:
    """Print a test's figures; with ``ASYNC_STORE_FAULT_REPORT`` set, append them to that file
    as one JSON line (``make faults`` sums them up)."""
    line = json.dumps({"test": test, "seed": SEED, **figures}, sort_keys=True)
    print(line)
    report = os.environ.get("ASYNC_STORE_FAULT_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a file, read with plain sqlite3: ``ok`` when sound, else
    what it found (or the error that stopped it)."""
    connection = sqlite3.connect(path)
    try:
        return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check"))
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        connection.close()


async def cli(*args: str) -> tuple[int, str]:
    """Run ``python -m async_store ARGS``; its exit code and its output (stderr included)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "async_store",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def worker_args(mode: str, *args: object) -> list[str]:
    return [sys.executable, "-m", "tests.faults._workload", mode, *(str(a) for a in args)]


async def kill_worker(
    args: list[str], acks: int, *, until: Callable[[list[bytes]], bool] | None = None
) -> list[str]:
    """Start a worker; once it printed ``ready`` and then ``acks`` lines (and, with ``until``,
    once ``until(lines so far)`` holds, polled while the worker keeps running), SIGKILL it.
    Returns every complete line written after ``ready``, those still in the pipe included."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stdout, stderr = process.stdout, process.stderr
    lines: list[bytes] = []

    async def read() -> None:
        # Drains the pipe all along, so that the worker never blocks on a full one.
        while line := await stdout.readline():
            lines.append(line)

    reader = asyncio.ensure_future(read())
    try:
        async with asyncio.timeout(60):
            while len(lines) <= acks or (until is not None and not until(lines)):
                if reader.done():
                    raise AssertionError(f"the worker died: {lines[-3:]!r} {await stderr.read()!r}")
                await asyncio.sleep(0.0005)
            os.kill(process.pid, signal.SIGKILL)
            await reader
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()
    assert lines[0] == b"ready\n", lines[:3]
    assert process.returncode == -signal.SIGKILL, await stderr.read()
    return [line.decode() for line in lines[1:] if line.endswith(b"\n")]


# -- what the mixed worker does and says ---------------------------------------------------------


def state_round(generation: int, i: int) -> list[StateDelta]:
    """Round ``i`` of one generation's StateManager mutations: independent of each other (they
    run concurrently), depending only on earlier rounds of the same generation."""
    g = f"{generation}-{i}"
    deltas: list[StateDelta] = [
        KnowledgeBaseAdd(KnowledgeBase(f"kb-{g}", f"Docs {g}", metadata={"round": i})),
        ToolAdd(Tool(f"t-{g}", "Tool", config={"n": i})),
        FlowAdd(Flow(f"f-{g}", "Flow", definition={"steps": [i]})),
        SettingSet(f"key-{i % 4}", {"generation": generation, "round": i}),
        SettingSet(f"gone-{g}", i),
    ]
    if i >= 1:
        p = f"{generation}-{i - 1}"
        deltas += [
            KnowledgeBaseUpdate(KnowledgeBase(f"kb-{p}", f"Docs {p} v2")),
            ToolRemove(f"t-{p}"),
            SettingDelete(f"gone-{p}"),
        ]
    if i >= 2:
        deltas.append(FlowRemove(f"f-{generation}-{i - 2}"))
    return deltas


def describe(delta: StateDelta) -> str:
    """``<event type> <id or key>``: what a delta's event names."""
    target = getattr(delta, "entity", None)
    name = getattr(target, "id", None) or getattr(delta, "id", None) or getattr(delta, "key", "")
    return f"{delta.event_name}.v1 {name}"


def describe_event(event_type: str, data: Any) -> str:
    if "entity" in data:
        return f"{event_type} {data['entity']['id']}"
    return f"{event_type} {data.get('id') or data.get('key') or ''}"


@dataclass
class Acks:
    """What a mixed worker acknowledged, by kind."""

    events: list[tuple[str, int, str, int]] = field(default_factory=list)
    """``(event_id, position, stream, version)``."""
    states: dict[int, str] = field(default_factory=dict)
    """StateManager version -> :func:`describe` of its delta."""
    pairs: list[str] = field(default_factory=list)
    """Two-row transactions (``logs.message`` without its ``/a`` or ``/b``)."""
    singles: list[str] = field(default_factory=list)
    manies: list[str] = field(default_factory=list)
    """Three-row ``execute_many`` calls (``logs.message`` without its ``/0``..``/2``)."""
    backups: list[str] = field(default_factory=list)

    def count(self) -> int:
        kinds = (self.events, self.states, self.pairs, self.singles, self.manies, self.backups)
        return sum(len(kind) for kind in kinds)


def parse_acks(lines: list[str], into: Acks) -> Acks:
    for line in lines:
        kind, _, rest = line.rstrip("\n").partition(" ")
        words = rest.split(" ")
        if kind == "ev":
            into.events.append((words[0], int(words[1]), words[2], int(words[3])))
        elif kind == "st":
            version = int(words[0])
            assert version not in into.states, f"version {version} acknowledged twice"
            into.states[version] = " ".join(words[1:])
        elif kind in ("tx", "ex", "mn", "bk"):
            kinds = {"tx": into.pairs, "ex": into.singles, "mn": into.manies, "bk": into.backups}
            kinds[kind].append(rest)
        else:
            raise AssertionError(f"unexpected line from the worker: {line!r}")
    return into


def emit(line: str) -> None:
    print(line, flush=True)


async def forever(step: Callable[[int], Awaitable[None]]) -> None:
    n = 0
    while True:
        await step(n)
        n += 1


async def mixed(sql: SqlService, manager: StateManager, generation: int) -> None:
    """The mixed workload of the crash loop; every ``emit`` follows the ``await`` it reports."""
    store = sql.event_store
    rng = random.Random(SEED + generation)

    def appender(task: int) -> Callable[[int], Awaitable[None]]:
        async def step(n: int) -> None:
            event_id = f"{generation}-a{task}-{n}"
            stream = f"stream-{(task + n) % STREAMS}"
            result = await store.append(
                stream, [NewEvent("Ticked", {"task": task, "n": n}, event_id=event_id)]
            )
            emit(f"ev {event_id} {result.last_position} {stream} {result.last_version}")

        return step

    async def mutate(i: int) -> None:
        deltas = state_round(generation, i)
        versions = await asyncio.gather(*(manager.mutate(d) for d in deltas))
        for delta, version in zip(deltas, versions, strict=True):
            emit(f"st {version} {describe(delta)}")

    async def pair(n: int) -> None:
        name = f"{generation}-{n}"
        rolled = n % 5 == 4
        try:
            async with sql.app.transaction() as tx:
                logger = "rolled" if rolled else "pair"
                await tx.execute(
                    "INSERT INTO logs(level, logger, message) VALUES ('INFO', ?, ?)",
                    (logger, f"{name}/a"),
                )
                await asyncio.sleep(0)
                await tx.execute(
                    "INSERT INTO logs(level, logger, message) VALUES ('INFO', ?, ?)",
                    (logger, f"{name}/b"),
                )
                if rolled:
                    raise LookupError("roll this transaction back")
        except LookupError:
            return
        emit(f"tx {name}")

    async def single(n: int) -> None:
        name = f"{generation}-{n}"
        if n % 2:
            await sql.app.execute_many(
                "INSERT INTO logs(level, logger, message) VALUES ('INFO', 'many', ?)",
                [(f"{name}/{k}",) for k in range(3)],
            )
            emit(f"mn {name}")
        else:
            await sql.app.execute(
                "INSERT INTO logs(level, logger, message) VALUES ('INFO', 'single', ?)", (name,)
            )
            emit(f"ex {name}")

    async def backup(n: int) -> None:
        await asyncio.sleep(rng.random() * 0.05)
        manifest = await sql.backup()
        emit(f"bk {manifest.directory.name}")

    steps = [appender(t) for t in range(APPENDERS)] + [mutate, pair, single, backup]
    await asyncio.gather(*(forever(step) for step in steps))


async def run_mixed(directory: Path, generation: int) -> None:
    async with (
        SqlService(SqlConfig.in_directory(directory)) as sql,
        StateManager(sql, snapshot_every=40) as manager,
    ):
        emit("ready")
        await mixed(sql, manager, generation)


# -- contention --------------------------------------------------------------------------------

CONTENDING_TASKS = 4


async def run_contend(directory: Path, process: int, ops: int) -> None:
    """``ops`` app writes and ``ops`` event appends, spread over a few concurrent tasks."""
    async with SqlService(SqlConfig.in_directory(directory)) as sql:
        store = sql.event_store
        emit("ready")
        # Every process starts writing at the same moment: the test says when.
        assert await asyncio.to_thread(sys.stdin.readline) == "go\n"

        async def task(t: int) -> None:
            for n in range(t, ops, CONTENDING_TASKS):
                name = f"p{process}-{n}"
                if n % 3 == 0:
                    async with sql.app.transaction() as tx:
                        for half in "ab":
                            await tx.execute(
                                "INSERT INTO logs(level, logger, message) VALUES ('INFO', ?, ?)",
                                (f"tx-{process}", f"{name}/{half}"),
                            )
                else:
                    await sql.app.execute(
                        "INSERT INTO logs(level, logger, message) VALUES ('INFO', ?, ?)",
                        (f"ex-{process}", name),
                    )
                stream = "shared" if n % 2 else f"own-{process}"
                await store.append(stream, [NewEvent("Contended", {"process": process, "n": n})])

        await asyncio.gather(*(task(t) for t in range(CONTENDING_TASKS)))
        statistics = {db.name: db.statistics().busy_retries for db in sql.databases}
    emit(json.dumps({"process": process, "busy_retries": statistics}))


# -- migration -----------------------------------------------------------------------------------


async def run_migrate(directory: Path, set_directory: Path) -> None:
    """Apply an application migration set, saying which statement the writer starts."""
    sets = [MigrationSet.from_directory("bulk", set_directory)]
    async with SqlService(
        SqlConfig.in_directory(directory), migration_sets=sets, migrate=False
    ) as sql:
        await on_sqlite(sql.app).run_on_writer(
            lambda conn: conn.set_trace_callback(
                lambda text: emit("sql " + " ".join(text.split())[:40])
            )
        )
        emit("ready")
        await sql.migrate()
        emit("done")
        await asyncio.Event().wait()


def summary(report: Path, status: int = 0) -> None:
    """Print the figures a report file gathered, summed per test (``make faults``), after a
    pytest run that exited with ``status``: the figures of a failed run are printed too, under
    a line that says it failed."""
    totals: dict[str, dict[str, Any]] = {}
    lines = report.read_text(encoding="utf-8").splitlines() if report.is_file() else []
    if not lines:
        print(f"faults: no figures in {report}")
    for line in lines:
        try:
            figures = json.loads(line)
        except ValueError:  # a line cut short by a test stopped while it wrote
            print(f"faults: skipped a line that is not JSON: {line[:80]!r}")
            continue
        test = totals.setdefault(figures.pop("test"), {"runs": 0})
        test["runs"] += 1
        for figure, value in figures.items():
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and figure not in ("seed", "lane")
            ):
                test[figure] = test.get(figure, 0) + value
            elif isinstance(value, dict):
                merged = test.setdefault(figure, {})
                for key, count in value.items():
                    merged[key] = merged.get(key, 0) + count
            else:
                test[figure] = value
    for name, figures in sorted(totals.items()):
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    if status:
        print(f"faults: pytest FAILED (exit status {status}); the figures above are those of")
        print("the tests that ran and recorded them")


def main(argv: list[str]) -> None:
    mode, directory = argv[0], Path(argv[1])
    if mode == "summary":
        summary(directory, int(argv[2]) if len(argv) > 2 else 0)
    elif mode == "mixed":
        asyncio.run(run_mixed(directory, int(argv[2])))
    elif mode == "contend":
        asyncio.run(run_contend(directory, int(argv[2]), int(argv[3])))
    elif mode == "migrate":
        asyncio.run(run_migrate(directory, Path(argv[2])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
