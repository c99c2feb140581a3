"""Point reads by primary key on a prepared table: the per-query overhead of each library.

Every contender reads the same ids (seeded random), and a read that finds no row counts as an
error. Pooled libraries check a connection out per read, as a request handler would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from benchmarks import clients
from benchmarks.clients import Client, Mode
from benchmarks.harness import ErrorLog, Profile, Scenario, Target, Throughput
from benchmarks.scenarios._common import contender, time_jobs
from benchmarks.schema import create_database

__all__ = ["point_read_8", "point_read_seq"]

SEED = 20240601


@dataclass(frozen=True)
class Sizes:
    rows: int
    reads: int


FULL = Sizes(rows=100_000, reads=20_000)
QUICK = Sizes(rows=10_000, reads=2_000)


def _ids(rows: int, count: int) -> list[int]:
    return random.Random(SEED).choices(range(1, rows + 1), k=count)


async def _reads(ids: Sequence[int], client: Client, errors: ErrorLog) -> int:
    done = 0
    for item_id in ids:
        try:
            found = await client.get(item_id)
        except Exception as exc:
            errors.record(exc)
            continue
        if found is None:
            errors.record(LookupError(f"no row with id {item_id}"))
        else:
            done += 1
    return done


async def point_reads(
    ids: Sequence[int], tasks: int, clients: Sequence[Client], mode: Mode
) -> Throughput:
    """Read `ids`, split evenly over `tasks` concurrent tasks."""
    jobs = [partial(_reads, ids[start::tasks]) for start in range(tasks)]
    return await time_jobs(clients, mode, jobs)


def _scenario(name: str, summary: str, tasks: int, profile: Profile) -> Scenario:
    sizes = QUICK if profile.quick else FULL
    ids = _ids(sizes.rows, sizes.reads)
    warm_ids = _ids(sizes.rows, max(100, sizes.reads // 50))
    contenders = [
        contender(
            library,
            timed=partial(point_reads, ids, tasks),
            warm_up=partial(point_reads, warm_ids, tasks),
        )
        for library in clients.READERS
    ]
    return Scenario(
        name=name,
        summary=summary.format(reads=sizes.reads, rows=sizes.rows),
        kind="throughput",
        unit="reads",
        baseline=clients.AIOSQLITE.name,
        contenders=contenders,
        prepare=partial(create_database, rows=sizes.rows),
        target=Target(clients.ASYNC_STORE.name, 0.9),
        notes="Baseline reads with execute_fetchall on its one connection, without the lock.",
    )


def point_read_seq(profile: Profile) -> Scenario:
    """Sequential point reads: one task, one read at a time, so pure per-call latency."""
    return _scenario(
        "point-read-seq", "{reads:,} sequential point reads by id, {rows:,}-row table", 1, profile
    )


def point_read_8(profile: Profile) -> Scenario:
    """The same reads split across 8 concurrent tasks: can the library overlap them?"""
    return _scenario(
        "point-read-8",
        "{reads:,} point reads by id in 8 concurrent tasks, {rows:,}-row table",
        8,
        profile,
    )
