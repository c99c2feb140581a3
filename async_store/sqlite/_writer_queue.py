"""The writer's queue: jobs in FIFO order, each with a deadline by which the writer must take it.

One timer wakes at the earliest deadline and hands the jobs past theirs to ``on_expired`` (the
writer fails them with ``PoolTimeout``): a caller never waits for the writer without a bound,
and what it gave up on never runs. A caller that gives up otherwise (cancelled) withdraws its
job; the writer skips it. At most ``limit`` jobs wait; a caller beyond that waits for room,
within the same deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from .._futures import resolve
from ._writer_jobs import ExclusiveJob, StatementJob, TransactionLease

__all__ = ["Job", "JobQueue"]

Job = StatementJob | TransactionLease | ExclusiveJob
_J = TypeVar("_J", StatementJob, TransactionLease, ExclusiveJob)


class JobQueue:
    """The jobs waiting for one writer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        limit: int,
        on_expired: Callable[[list[Job]], None],
    ) -> None:
        self._loop = loop
        self._limit = limit
        self._on_expired = on_expired
        self._jobs: deque[Job] = deque()
        """Jobs in FIFO order; those whose caller gave up (``waiting`` False) are skipped."""
        self._waiting = 0
        """Jobs in ``_jobs`` whose caller still waits."""
        self._idle: asyncio.Future[None] | None = None
        """The writer waiting for a job (resolved by the next one queued, or by ``close``)."""
        self._room: deque[asyncio.Future[None]] = deque()
        """Callers waiting for room."""
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __len__(self) -> int:
        """Jobs whose callers still wait for the writer."""
        return self._waiting

    async def put(self, job: Job, patience: float) -> bool:
        """Queue ``job``; the writer must take it within ``patience`` seconds. When the queue is
        full, wait for room first, within the same deadline: False if none came (nothing was
        queued)."""
        job.deadline = self._loop.time() + patience
        while self._waiting >= self._limit:
            room = self._loop.create_future()
            self._room.append(room)
            try:
                async with asyncio.timeout_at(job.deadline):
                    await room
            except TimeoutError:
                return False
            finally:
                with contextlib.suppress(ValueError):
                    self._room.remove(room)
            if self._closed:
                return False
        job.waiting = True
        self._waiting += 1
        self._jobs.append(job)
        idle = self._idle
        if idle is not None:
            self._idle = None
            resolve(idle, None)
        timer = self._timer
        if timer is None or job.deadline < timer.when():
            self._arm(job.deadline)
        return True

    def withdraw(self, job: Job) -> None:
        """The caller gave up on ``job``: if it is still queued, the writer skips it."""
        if job.waiting:
            job.waiting = False
            self._waiting -= 1
            self._make_room()

    def pop(self, kind: type[_J] | None = None) -> _J | None:
        """Take the next job if it is a ``kind`` (any kind: ``None``)."""
        jobs = self._jobs
        while jobs:
            job = jobs[0]
            if not job.waiting:
                jobs.popleft()
                continue
            if kind is not None and not isinstance(job, kind):
                return None
            jobs.popleft()
            job.waiting = False
            self._waiting -= 1
            if self._room:
                self._make_room()
            return job  # type: ignore[return-value]
        return None

    async def get(self) -> Job | None:
        """The next job, waiting for one; ``None`` once closed and empty."""
        while (job := self.pop()) is None:
            if self._closed:
                return None
            self._idle = self._loop.create_future()
            await self._idle
        return job

    def close(self) -> None:
        """Take no more waiting for room; ``get`` returns ``None`` once the queue is empty."""
        self._closed = True
        idle, self._idle = self._idle, None
        if idle is not None:
            resolve(idle, None)
        while self._room:
            resolve(self._room.popleft(), None)
        if self._timer is not None and not self._waiting:
            self._timer.cancel()
            self._timer = None

    def take_all(self) -> list[Job]:
        """Empty the queue; the jobs whose callers still wait."""
        jobs, self._jobs = self._jobs, deque()
        taken = [job for job in jobs if job.waiting]
        for job in taken:
            job.waiting = False
        self._waiting = 0
        self._make_room()
        return taken

    def _make_room(self) -> None:
        while self._room and (self._waiting < self._limit or self._closed):
            resolve(self._room.popleft(), None)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        """Hand the jobs past their deadline to ``on_expired``; wake again at the next one."""
        self._timer = None
        # (A timer may fire up to the clock's resolution early.)
        now = self._loop.time() + 0.001
        kept: deque[Job] = deque()
        expired: list[Job] = []
        for job in self._jobs:
            if not job.waiting:
                continue
            if job.deadline <= now:
                job.waiting = False
                expired.append(job)
            else:
                kept.append(job)
        self._jobs = kept
        self._waiting -= len(expired)
        if kept:
            self._arm(min(job.deadline for job in kept))
        if expired:
            self._on_expired(expired)
        self._make_room()
