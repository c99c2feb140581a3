"""Point reads written as SQLAlchemy Core statements (``benchmarks.clients.core``): what code
written for encode/databases costs on each library, and what Core costs against the same read as
SQL text through async_store.

``core-point-read`` compares with databases, statement built per call on both sides, as its
documentation writes it (target: at least 3x). ``core-point-read-text`` compares with the same
read as SQL text through async_store (target: the prepared statement within 1.3x, that is at
least 0.77x of its reads per second); the statement built per call is shown too, and what
separates it from the prepared one is SQLAlchemy building the statement and its cache key.
"""

from __future__ import annotations

from functools import partial

from benchmarks import clients
from benchmarks.clients import core
from benchmarks.clients.base import Library
from benchmarks.harness import Profile, Scenario, Target
from benchmarks.scenarios._common import contender
from benchmarks.scenarios.reads import _ids, point_reads
from benchmarks.schema import create_database

__all__ = ["core_point_read", "core_point_read_text"]

ROWS = 10_000
FULL_READS = 5_000
QUICK_READS = 1_000

STORE_CORE = Library(
    "async_store Core (prepared)", ("async_store", "sqlalchemy"), core.store_prepared
)
STORE_CORE_BUILT = Library(
    "async_store Core (built per call)", ("async_store", "sqlalchemy"), core.store_built_per_call
)
DATABASES_CORE = Library(
    "databases Core (built per call)", ("databases",), core.databases_built_per_call
)
SQLALCHEMY_CORE = Library(
    "SQLAlchemy async Core (prepared)", ("sqlalchemy", "greenlet"), core.sqlalchemy_prepared
)


def _scenario(
    name: str,
    summary: str,
    libraries: tuple[Library, ...],
    baseline: str,
    target: Target,
    profile: Profile,
) -> Scenario:
    reads = QUICK_READS if profile.quick else FULL_READS
    ids = _ids(ROWS, reads)
    warm_ids = _ids(ROWS, 100)
    return Scenario(
        name=name,
        summary=summary.format(reads=reads, rows=ROWS),
        kind="throughput",
        unit="reads",
        baseline=baseline,
        contenders=[
            contender(
                library,
                timed=partial(point_reads, ids, 1),
                warm_up=partial(point_reads, warm_ids, 1),
            )
            for library in libraries
        ],
        prepare=partial(create_database, rows=ROWS),
        target=target,
        notes="One task, one read at a time: the per-call cost of the statement's path.",
    )


def core_point_read(profile: Profile) -> Scenario:
    """Core point reads against encode/databases, the statement built per call on both."""
    return _scenario(
        "core-point-read",
        "{reads:,} sequential Core point reads by id, {rows:,}-row table",
        (DATABASES_CORE, SQLALCHEMY_CORE, STORE_CORE_BUILT, STORE_CORE),
        DATABASES_CORE.name,
        Target(STORE_CORE_BUILT.name, 3.0),
        profile,
    )


def core_point_read_text(profile: Profile) -> Scenario:
    """Core point reads against the same read as SQL text through async_store."""
    return _scenario(
        "core-point-read-text",
        "{reads:,} sequential point reads by id as Core and as SQL text, {rows:,}-row table",
        (clients.ASYNC_STORE, STORE_CORE, STORE_CORE_BUILT),
        clients.ASYNC_STORE.name,
        Target(STORE_CORE.name, 1 / 1.3),
        profile,
    )
