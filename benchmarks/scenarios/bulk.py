"""One bulk insert: many rows with executemany in a single transaction.

This is dominated by SQLite itself when a library hands the whole batch to one
`executemany` call; libraries that loop over the rows pay a round trip per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from benchmarks import clients
from benchmarks.clients import Client, Mode
from benchmarks.harness import ErrorLog, Profile, Scenario, Target, Throughput
from benchmarks.scenarios._common import contender, time_jobs
from benchmarks.schema import create_database, payload

__all__ = ["execute_many"]

FULL_ROWS = 100_000
QUICK_ROWS = 10_000


async def _insert_many(rows: Sequence[tuple[str]], client: Client, errors: ErrorLog) -> int:
    try:
        await client.insert_many(rows)
    except Exception as exc:
        errors.record(exc)
        return 0
    return len(rows)


async def bulk_insert(
    rows: Sequence[tuple[str]], clients: Sequence[Client], mode: Mode
) -> Throughput:
    """Insert `rows` in one transaction; throughput is rows per second."""
    return await time_jobs(clients, mode, [partial(_insert_many, rows)])


def execute_many(profile: Profile) -> Scenario:
    """100k rows inserted with one executemany in one transaction."""
    count = QUICK_ROWS if profile.quick else FULL_ROWS
    rows = [(payload(n),) for n in range(count)]
    warm_rows = rows[: max(100, count // 100)]
    contenders = [
        contender(
            library,
            timed=partial(bulk_insert, rows),
            warm_up=partial(bulk_insert, warm_rows),
        )
        for library in clients.READERS
    ]
    return Scenario(
        name="execute-many",
        summary=f"{count:,} rows inserted with executemany in one transaction",
        kind="throughput",
        unit="rows",
        baseline=clients.RAW_SQLITE3.name,
        contenders=contenders,
        prepare=create_database,
        target=Target(clients.ASYNC_STORE.name, 0.9),
        notes="databases has no executemany for SQLite: it executes the rows one by one.",
    )
