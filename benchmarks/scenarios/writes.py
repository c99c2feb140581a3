"""Concurrent one-row commits: many tasks, each inserting rows one committed transaction at a time.

This is where SQLite's single write lock and the fsync per commit decide everything. Libraries
that give each task its own connection fight over the lock (their "database is locked" errors
are counted); libraries that serialise writers pay one fsync per commit; a writer that batches
queued commits pays one fsync per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from benchmarks import clients
from benchmarks.clients import Client, Mode
from benchmarks.clients.base import Synchronous
from benchmarks.harness import ErrorLog, Profile, Scenario, Target, Throughput
from benchmarks.scenarios._common import contender, time_jobs
from benchmarks.schema import create_database, payload

__all__ = ["write_full", "write_normal"]


@dataclass(frozen=True)
class Sizes:
    tasks: int
    inserts_per_task: int


FULL = Sizes(tasks=100, inserts_per_task=50)
QUICK = Sizes(tasks=20, inserts_per_task=20)


async def _inserts(count: int, client: Client, errors: ErrorLog) -> int:
    done = 0
    for n in range(count):
        try:
            await client.insert(payload(n))
        except Exception as exc:
            errors.record(exc)
        else:
            done += 1
    return done


async def concurrent_inserts(
    sizes: Sizes, clients: Sequence[Client], mode: Mode, *, inserts_per_task: int | None = None
) -> Throughput:
    """`sizes.tasks` tasks, each committing its inserts one by one."""
    count = sizes.inserts_per_task if inserts_per_task is None else inserts_per_task
    return await time_jobs(clients, mode, [partial(_inserts, count)] * sizes.tasks)


def _scenario(name: str, synchronous: Synchronous, profile: Profile) -> Scenario:
    sizes = QUICK if profile.quick else FULL
    commits = sizes.tasks * sizes.inserts_per_task
    contenders = [
        contender(
            library,
            timed=partial(concurrent_inserts, sizes),
            warm_up=partial(concurrent_inserts, sizes, inserts_per_task=1),
            tasks=sizes.tasks,
            synchronous=synchronous,
        )
        for library in clients.WRITERS
    ]
    return Scenario(
        name=name,
        summary=(
            f"{sizes.tasks} tasks x {sizes.inserts_per_task} one-row committed inserts "
            f"({commits:,} commits), synchronous={synchronous}"
        ),
        kind="throughput",
        unit="commits",
        baseline=clients.AIOSQLITE.name,
        contenders=contenders,
        prepare=create_database,
        target=Target(clients.ASYNC_STORE.name, 8.0) if synchronous == "FULL" else None,
        notes="raw sqlite3 runs the same commits sequentially on the loop thread.",
    )


def write_full(profile: Profile) -> Scenario:
    """Durable commits (synchronous=FULL): one fsync per commit unless commits are grouped."""
    return _scenario("write-full", "FULL", profile)


def write_normal(profile: Profile) -> Scenario:
    """The same at synchronous=NORMAL: in WAL mode no fsync per commit, so lock handling shows."""
    return _scenario("write-normal", "NORMAL", profile)
