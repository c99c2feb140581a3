"""Round-trip latency of the smallest query, `SELECT 1`, issued one at a time.

This isolates each library's fixed cost per call: thread hand-off, pool checkout, result
wrapping.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from benchmarks import clients
from benchmarks.clients import Client, Mode
from benchmarks.harness import ErrorLog, Latency, Profile, Scenario, Target
from benchmarks.scenarios._common import contender
from benchmarks.schema import create_database

__all__ = ["select1_latency"]

FULL_QUERIES = 5_000
QUICK_QUERIES = 1_000


async def round_trips(count: int, clients: Sequence[Client], mode: Mode) -> Latency:
    """`count` sequential `SELECT 1` calls on the first client, each timed on its own."""
    client = clients[0]
    errors = ErrorLog()
    samples: list[int] = []
    for _ in range(count):
        started = time.perf_counter_ns()
        try:
            await client.select_one()
        except Exception as exc:
            errors.record(exc)
        else:
            samples.append(time.perf_counter_ns() - started)
    return Latency(samples_ns=samples, errors=errors.kinds())


def select1_latency(profile: Profile) -> Scenario:
    """p50 and p95 of sequential `SELECT 1` round trips."""
    count = QUICK_QUERIES if profile.quick else FULL_QUERIES
    contenders = [
        contender(
            library,
            timed=partial(round_trips, count),
            warm_up=partial(round_trips, max(100, count // 20)),
        )
        for library in clients.READERS
    ]
    return Scenario(
        name="select1-latency",
        summary=f"{count:,} sequential SELECT 1 round trips",
        kind="latency",
        unit="us",
        baseline=clients.AIOSQLITE.name,
        contenders=contenders,
        prepare=create_database,
        target=Target(clients.ASYNC_STORE.name, 1.2),
    )
