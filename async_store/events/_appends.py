"""The event store's appends on the event loop: appends of one stream queued while the write
before them is under way and written together as one writer job, appends that go apart (to
several streams, of many events, inside a ``transaction()``), and the stream versions the store
learns from its own commits, which let a coalesced write be one multi-row INSERT.

``EventStore`` checks and encodes each append, then hands it to the ``Appends`` it owns; the
backend's recorder (``events._recorder``) writes them, in its own dialect."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence

from .._futures import fail
from .._shield import uncancellable
from .._tasks import start_background
from ..database import Database
from ..errors import PoolClosed, QueryError
from ._prepared import PreparedEvent
from ._recorder import EventRecorder, Outcome, Plan, StreamAppend, Waiting, expectation_met
from .records import ANY, NO_STREAM, AppendResult, ExpectedVersion

__all__ = ["Appends"]


class Appends:
    """The appends of one ``EventStore``: those waiting for a coalesced write, the task writing
    them, and the stream versions learnt from the store's own commits."""

    def __init__(
        self, database: Database, recorder: EventRecorder, on_commit: Callable[[], None]
    ) -> None:
        """``recorder`` writes the appends; ``on_commit`` is called after each write of appends
        that did not fail (the store wakes its subscriptions)."""
        self._db = database
        self._recorder = recorder
        self._rows_per_batch = recorder.rows_per_batch
        self._on_commit = on_commit
        self._waiting: collections.deque[Waiting] = collections.deque()
        self._waiting_rows = 0
        """The events of the appends in ``_waiting``."""
        self._writing: asyncio.Task[None] | None = None
        self._generation = 0
        self._versions: dict[str, int] = {}
        """Stream → a version it has reached, learnt from this store's own commits. Events are
        never removed, so it is never ahead of the database: at worst behind, and then the
        write that relied on it fails whole and is redone the careful way."""

    async def apart(self, prepared: Sequence[StreamAppend]) -> list[AppendResult]:
        """Appends to several streams, of more events than one INSERT takes, or inside a
        ``transaction()``: a writer job of their own (or part of that transaction), made the
        careful way."""
        in_transaction = self._db.in_transaction
        generation = self._generation
        results = await self._recorder.append(prepared)
        if not in_transaction and generation == self._generation:
            # (Inside a transaction nothing is committed yet: it may still roll back.)
            for result in results:
                self._learn(result.stream_id, result.last_version)
        # Subscribers wake once the events are committed: inside a transaction, at its end.
        self._db.after_commit(self._on_commit)
        return results

    # Appends of one stream are coalesced: they wait in ``_waiting`` while the write before them
    # is under way, then go to the writer together as one job. For each, the store knows the
    # version its stream is at (from its own commits), so the job is one multi-row INSERT, and
    # the writer's thread runs no Python per append. An append whose stream or expectation the
    # store cannot vouch for is made as before (idempotency, then version, then INSERT) in the
    # same job; so are all of them when the INSERT fails (an id stored already, a version
    # another process took), since a failed statement leaves nothing behind.

    def coalesced(
        self, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> asyncio.Future[AppendResult]:
        """Queue one stream's append for the next coalesced write; the future gets its result.
        (A future, not a coroutine: one frame less on every append.) Cancelled while waiting,
        the append is dropped; once its write is under way, it stands (as for any job the
        writer has taken)."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(Waiting(stream_id, events, expected, future))
        self._waiting_rows += len(events)
        if self._writing is None:
            # (In a context of its own: this caller may be inside a transaction() block.)
            self._writing = start_background(
                self._write_waiting(), name=f"async_store.{self._db.name}.appends"
            )
        return future

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._take_batch()
                if batch:
                    await self._write_batch(batch)
        finally:
            self._writing = None
            self._waiting_rows = 0
            while self._waiting:  # only when cancelled: nobody would answer them
                fail(self._waiting.popleft().future, PoolClosed("the event store stopped"))

    def _take_batch(self) -> list[Waiting]:
        waiting = self._waiting
        limit = self._rows_per_batch
        if self._waiting_rows <= limit:  # the usual case: every one fits
            taken = list(waiting)
            waiting.clear()
            self._waiting_rows = 0
            return [append for append in taken if not append.future.cancelled()]
        batch: list[Waiting] = []
        rows = 0
        while waiting:
            append = waiting[0]
            count = len(append.events)
            if batch and rows + count > limit:
                break
            waiting.popleft()
            self._waiting_rows -= count
            if not append.future.cancelled():
                batch.append(append)
                rows += count
        return batch

    async def _write_batch(self, batch: list[Waiting]) -> None:
        plan = Plan(len(batch), self._generation, lambda: self._generation)
        known = self._versions
        reached: dict[str, int] = {}
        careful: set[str] = set()
        for index, append in enumerate(batch):
            stream_id = append.stream_id
            current = reached.get(stream_id, known.get(stream_id))
            if stream_id in careful or not _vouched(append.expected, current):
                careful.add(stream_id)  # and every later append of the stream, in order
                plan.slow.append((index, append))
            else:
                reached[stream_id] = plan.add_direct(index, append, current or 0)
        job = asyncio.ensure_future(self._recorder.write(plan))
        try:
            await uncancellable(job)
        except asyncio.CancelledError:
            self._answer(batch, plan, job)  # the write ran to its end: its callers hear how
            raise
        except Exception:
            pass  # answered below, append by append
        self._answer(batch, plan, job)

    def _answer(self, batch: list[Waiting], plan: Plan, job: asyncio.Future[list[Outcome]]) -> None:
        error: BaseException | None = (
            PoolClosed(f"{self._db.name}: the write of these appends was cancelled")
            if job.cancelled()
            else job.exception()
        )
        if error is not None:
            for append in batch:
                self._versions.pop(append.stream_id, None)
                fail(append.future, error)
            return
        versions = self._versions
        learn = plan.generation == self._generation
        if learn and len(versions) + len(batch) > _KNOWN_STREAMS:
            versions.clear()  # a bound on memory; the next appends look versions up
        for append, outcome in zip(batch, job.result(), strict=True):
            if isinstance(outcome, AppendResult):
                if learn and outcome.last_version > versions.get(append.stream_id, 0):
                    versions[append.stream_id] = outcome.last_version
                future = append.future
                if not future.done():  # (its caller may have been cancelled meanwhile)
                    future.set_result(outcome)
            else:
                versions.pop(append.stream_id, None)
                fail(append.future, outcome)
        self._on_commit()

    def _learn(self, stream_id: str, version: int) -> None:
        if len(self._versions) >= _KNOWN_STREAMS and stream_id not in self._versions:
            self._versions.clear()  # a bound on memory; the next appends look versions up
        if version > self._versions.get(stream_id, 0):
            self._versions[stream_id] = version

    def forget_versions(self) -> None:
        """Drop every stream version learnt so far and start a new generation: batches planned
        from the old versions are made the careful way, and what they commit is not learnt
        (see ``EventStore.forget_versions``)."""
        self._versions.clear()
        self._generation += 1

    async def drain(self) -> None:
        """Return once every append queued so far is written (or has failed)."""
        writing = self._writing
        if writing is not None:
            with contextlib.suppress(Exception):
                await uncancellable(writing)


_KNOWN_STREAMS = 65_536
"""Streams whose version the store keeps in mind for coalesced appends."""


def _vouched(expected: ExpectedVersion, current: int | None) -> bool:
    """Whether an append expecting ``expected`` can be written at ``current + 1`` without
    asking the database: the store knows the stream's version and it is what the append
    expects. (A stream the store has not seen counts as new for an append that says so: if it
    exists after all, its version 1 is taken and the write is redone the careful way.) An
    expectation that is not one goes the careful way, which says so."""
    if current is None:
        return expected is NO_STREAM or (type(expected) is int and expected == 0)
    if expected is ANY:  # most appends
        return True
    try:
        return expectation_met(expected, current)
    except QueryError:
        return False
