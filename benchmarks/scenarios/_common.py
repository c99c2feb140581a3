"""Turns a library and a workload into a harness `Contender`: open, warm up, time, clean up."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.clients import Client, DbSpec, Library, Mode
from benchmarks.clients.base import Synchronous
from benchmarks.harness import (
    Contender,
    ErrorLog,
    Latency,
    Measurement,
    Throughput,
)

__all__ = ["Job", "Section", "contender", "fan_out", "time_jobs"]

M = TypeVar("M", Throughput, Latency)
T = TypeVar("T")

Section = Callable[[Sequence[Client], Mode], Awaitable[T]]
"""A workload section, given the open clients (one, or one per task) and how to use them."""

Job = Callable[[Client, ErrorLog], Coroutine[Any, Any, int]]
"""One task's share of a workload; returns how many operations succeeded."""


def contender(
    library: Library,
    *,
    timed: Section[M],
    warm_up: Section[object],
    tasks: int = 1,
    synchronous: Synchronous = "NORMAL",
) -> Contender:
    """A contender that opens `library` on the scenario's file, warms up, then times `timed`.

    A per-task library opens `tasks` clients, all before the warm-up; the others open one.
    """

    async def run(path: Path) -> Measurement:
        spec = DbSpec(path, synchronous)
        count = tasks if library.mode == "per-task" else 1
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(library.connect(spec)) for _ in range(count)]
            await warm_up(clients, library.mode)
            gc.collect()
            return await timed(clients, library.mode)

    return Contender(library.name, run, library.requires)


async def fan_out(
    clients: Sequence[Client],
    mode: Mode,
    jobs: Sequence[Callable[[Client], Coroutine[Any, Any, int]]],
) -> list[int]:
    """Run `jobs` one after another (sequential) or as concurrent tasks (shared, per-task)."""
    if mode == "sequential":
        return [await job(clients[0]) for job in jobs]
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(job(clients[index] if mode == "per-task" else clients[0]))
            for index, job in enumerate(jobs)
        ]
    return [task.result() for task in tasks]


async def time_jobs(clients: Sequence[Client], mode: Mode, jobs: Sequence[Job]) -> Throughput:
    """Time `jobs` from the first start to the last finish; count their operations and errors."""
    errors = ErrorLog()

    def bind(job: Job) -> Callable[[Client], Coroutine[Any, Any, int]]:
        return lambda client: job(client, errors)

    started = time.perf_counter()
    done = await fan_out(clients, mode, [bind(job) for job in jobs])
    seconds = time.perf_counter() - started
    return Throughput(ops=sum(done), seconds=seconds, errors=errors.kinds())
