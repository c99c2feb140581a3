"""The scenario registry.

To add a scenario, write a module here with a function `name(profile: Profile) -> Scenario`
(generic workloads over `benchmarks.clients` are in `_common`; a scenario may also build its
own `Contender` objects from any async callable) and append the function to `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.harness import Profile, Scenario
from benchmarks.scenarios import bulk, latency, reads, writes

__all__ = ["REGISTRY", "build"]

REGISTRY: tuple[Callable[[Profile], Scenario], ...] = (
    writes.write_full,
    writes.write_normal,
    reads.point_read_seq,
    reads.point_read_8,
    bulk.execute_many,
    latency.select1_latency,
)


def build(profile: Profile, only: str | None = None) -> list[Scenario]:
    """Every registered scenario, or those whose name contains `only`."""
    scenarios = [factory(profile) for factory in REGISTRY]
    return [s for s in scenarios if only is None or only in s.name]
