"""The scenario registry.

To add a scenario, write a module here with a function `name(profile: Profile) -> Scenario`
(generic workloads over `benchmarks.clients` are in `_common`; a scenario may also build its
own `Contender` objects from any async callable) and append the function to `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.harness import Profile, Scenario
from benchmarks.scenarios import (
    backup,
    bulk,
    core_reads,
    event_store,
    ingest,
    latency,
    reads,
    startup,
    state,
    state_startup,
    writes,
)

__all__ = ["REGISTRY", "build"]

REGISTRY: tuple[Callable[[Profile], Scenario], ...] = (
    writes.write_full,
    writes.write_normal,
    reads.point_read_seq,
    reads.point_read_8,
    core_reads.core_point_read,
    core_reads.core_point_read_text,
    bulk.execute_many,
    latency.select1_latency,
    event_store.append_full,
    event_store.read_all,
    startup.startup,
    state.mutate_full,
    state.read_state,
    state.read_state_size,
    state_startup.startup_1m,
    backup.backup,
    backup.backup_writes,
    ingest.ingest_10k,
)


def build(profile: Profile, only: str | None = None) -> list[Scenario]:
    """Every registered scenario, or those whose name contains `only` (or, for a
    comma-separated `only`, any one of its parts)."""
    scenarios = [factory(profile) for factory in REGISTRY]
    if only is None:
        return scenarios
    parts = [part.strip() for part in only.split(",") if part.strip()]
    return [s for s in scenarios if any(part in s.name for part in parts)]
