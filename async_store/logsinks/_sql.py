"""``SqlLogSink``: log records batched into the app_meta ``logs`` table from a background task,
never on the caller's path; re-exported by ``logsinks``, which holds the JSONL sink.

The inserts themselves are the backend's (``LogTable``, asked of the database's backend package
through ``async_store.database.backend_of``; on SQLite ``sqlite._log_table``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import logging.handlers
import threading
import warnings
from collections import deque
from typing import Protocol, cast

from .._shield import uncancellable
from .._tasks import start_background
from ..database import Database, backend_of
from ..errors import IntegrityViolation, StoreError
from ._records import record_to_dict

__all__ = ["SqlLogSink"]


_Row = tuple[str, str, str, str, str]
"""A ``logs`` row: created_at, level, logger, message, extra (JSON text)."""


class _Batch:
    """Records taken out of the buffer for one transaction, and the ids they got in the
    ``logs`` table the last time they were inserted: whoever inserts them next (the sink's
    task, a later one, or ``close()`` through a connection of its own) first looks whether
    those rows are there, committed, and then does not insert them again."""

    __slots__ = ("ids", "rows")

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows
        self.ids: tuple[int, int] | None = None


class LogTable(Protocol):
    """What the sink asks of the database's backend package (:func:`backend_of`): the inserts
    into the ``logs`` table, each of a batch at most once."""

    async def insert_log_batch(self, database: Database, batch: _Batch) -> None:
        """Insert ``batch`` in one transaction on the database (part of the current task's
        transaction, if any) unless an earlier insert of it committed, and set ``batch.ids``
        to the ids its rows got before that transaction commits. Raises
        :class:`StoreError`."""

    async def insert_log_rows_directly(
        self, database: Database, in_flight: _Batch | None, rows: list[_Row]
    ) -> None:
        """Insert ``in_flight`` (as :meth:`insert_log_batch` does) and ``rows`` in one
        transaction through a connection of its own, for when the database is closed or its
        event loop stopped, from any event loop and thread. Raises :class:`StoreError`, or
        :class:`OSError` when the database cannot be reached (a file that is gone is not
        created anew)."""


class SqlLogSink(logging.Handler):
    """Batches records into the app_meta ``logs`` table from a background task.

    ``emit`` appends to a bounded buffer (``max_buffered`` records; beyond it the oldest are
    dropped and counted in ``dropped``) from any thread; the task writes a batch every
    ``flush_interval`` seconds or ``batch_size`` records, in one transaction. A batch that fails
    (the database busy, full, closed) is kept and tried again after ``flush_interval``, before
    the records behind it; the bound still holds, so a dead database costs memory for at most
    ``max_buffered`` records and the one batch in flight. Start it with ``await sink.start()``
    on the event loop.

    Each record is written once: a batch whose outcome the sink did not learn (the loop stopped
    or the task was cancelled while the batch was on the writer) is looked for in the table,
    by the ids it was given, before it is written again. (Only rows identical to the batch,
    under those very ids, would be taken for it.)

    Closing writes out what is buffered: ``await sink.aclose()`` on the loop, or ``close()``
    (what ``logging.shutdown()`` and ``logging.config.dictConfig`` call) from anywhere:

    * on the loop's thread, which must not block, it leaves the writing to a task of the loop
      (``aclose()`` afterwards waits for it);
    * from another thread while the loop runs, it waits for the loop to write, at most
      ``close_timeout`` seconds; but not from a thread that holds ``logging``'s module lock
      (``dictConfig`` does), which the loop may need as soon as it logs: there it leaves the
      writing to the loop as on the loop's thread;
    * once the loop has stopped (at interpreter exit), it writes from a thread of its own
      through a connection of its own, as it does when the database was closed before the
      sink, a batch still in flight included.

    ``aclose()`` cancelled (or under a timeout that expires) raises at once; the close goes on
    without its caller, and a later ``aclose()`` waits for it.

    Records it cannot write are counted in ``dropped`` and reported by a ``RuntimeWarning``,
    never dropped silently.
    """

    def __init__(
        self,
        database: Database,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_buffered: int = 10_000,
        close_timeout: float = 10.0,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self._database = database
        # Looked up now, not at close: at interpreter exit an import may no longer work.
        self._table = cast("LogTable", backend_of(database))
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._close_timeout = close_timeout
        self._max_buffered = max_buffered
        self._buffer: deque[_Row] = deque(maxlen=max_buffered)
        # The batch taken out of the buffer and not yet known to be written or lost. Kept
        # here, not in the writing coroutine: a loop that stops leaves that coroutine
        # suspended, and close() must still find the batch.
        self._in_flight: _Batch | None = None
        # Guards the buffer, the batch in flight and the counters: emit runs on any thread.
        # Never held across an await or a wait, and distinct from the handler's own lock,
        # which logging.shutdown() holds while it calls close().
        self._buffer_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing_task: asyncio.Task[None] | None = None
        self._closing = False
        self._done = False
        self.dropped = 0
        """Records lost: pushed out of a full buffer, refused by the table, or not writable at
        close."""
        self.written = 0
        """Records written to the table."""
        self.last_error: str | None = None
        """Why the newest write failed (``None`` after one succeeds)."""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = start_background(self._run(), name="async_store.logsink")

    def handle(self, record: logging.LogRecord) -> bool:
        # As logging.Handler.handle, without the handler's lock around emit (emit is
        # thread-safe by itself): logging.shutdown() holds that lock while close() waits for
        # the loop, and a record logged on the loop meanwhile would block the loop on it.
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = record_to_dict(record)
            row = (
                data["time"],
                data["level"],
                data["logger"],
                data["message"],
                json.dumps(data.get("extra", {}), ensure_ascii=False),
            )
        except Exception:
            self.handleError(record)
            return
        with self._buffer_lock:
            if self._done:
                self.dropped += 1  # closed: nothing would ever write it
                return
            if len(self._buffer) == self._max_buffered:
                self.dropped += 1
            self._buffer.append(row)
            full = len(self._buffer) >= self._batch_size
        if full:
            self.flush()

    def flush(self) -> None:
        """Wake the task to write now (does not wait for it)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            # A batch taken out of the buffer is written to its end even if the task is
            # cancelled meanwhile, not abandoned half-way.
            if not await uncancellable(self._write()) and not self._closing:
                # Failing: wait out the interval rather than retry on every record logged.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._stop.wait()
        await uncancellable(self._write())

    def _next_batch(self) -> _Batch | None:
        """The batch in flight if there is one (its write failed or was interrupted), else a
        new one from the buffer."""
        with self._buffer_lock:
            if self._in_flight is None and self._buffer:
                count = min(self._batch_size, len(self._buffer))
                self._in_flight = _Batch([self._buffer.popleft() for _ in range(count)])
            return self._in_flight

    def _settle(self, batch: _Batch, *, written: bool) -> None:
        """Count ``batch`` as written or lost, once: whoever settles it first (the task, or
        ``close()`` from another thread) counts it."""
        with self._buffer_lock:
            if self._in_flight is not batch:
                return
            self._in_flight = None
            if written:
                self.written += len(batch.rows)
            else:
                self.dropped += len(batch.rows)

    async def _write(self) -> bool:
        """Write the buffer out, batch by batch; False if a batch failed (it stays in flight,
        to be tried again first)."""
        while (batch := self._next_batch()) is not None:
            try:
                await self._table.insert_log_batch(self._database, batch)
            except IntegrityViolation as exc:
                # A row the table refuses: trying again cannot help, and it must not hold up
                # the records behind it. (Logging about it would come straight back here.)
                self.last_error = str(exc)
                self._settle(batch, written=False)
                continue
            except StoreError as exc:
                self.last_error = str(exc)
                return False
            self._settle(batch, written=True)
            self.last_error = None
        return True

    async def _write_to_file(self) -> None:
        """Write the batch in flight and the buffer through a connection of our own: the
        database's pool is closed (the service closed before the sink) or its loop stopped.
        Only into an existing database: one that is gone is not created anew for a few
        records. Rows not written go back to the buffer; the batch in flight stays so."""
        in_flight = self._in_flight
        rows = self._take_buffered()
        if in_flight is None and not rows:
            return
        try:
            await self._table.insert_log_rows_directly(self._database, in_flight, rows)
        except (OSError, StoreError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._put_back(rows)
            return
        if in_flight is not None:
            self._settle(in_flight, written=True)
        with self._buffer_lock:
            self.written += len(rows)
        self.last_error = None

    def _put_back(self, rows: list[_Row]) -> None:
        """Return rows not written to the front of the buffer, oldest records dropped first if
        records logged meanwhile leave no room for all of them."""
        with self._buffer_lock:
            room = self._max_buffered - len(self._buffer)
            lost = max(0, len(rows) - room)
            self.dropped += lost
            self._buffer.extendleft(reversed(rows[lost:]))

    def _take_buffered(self) -> list[_Row]:
        with self._buffer_lock:
            rows = list(self._buffer)
            self._buffer.clear()
            return rows

    def _pending(self) -> int:
        with self._buffer_lock:
            in_flight = self._in_flight
            return len(self._buffer) + (len(in_flight.rows) if in_flight is not None else 0)

    async def _shutdown(self) -> None:
        """On the loop: stop the task once it has written what it can, write the rest another
        way if the pool is closed, and report what could not be written."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            # Not uncancellable(): the caller's own cancellation must reach it now. The task goes on
            # writing without us (it was told to stop), and a later close waits for it again.
            await asyncio.wait([task])
        failure = None if task is None or task.cancelled() else task.exception()
        if task is None or task.cancelled() or failure is not None:
            # The task did not get to its last write (never started, cancelled as its loop
            # ended, or failed): what it held is still in flight or buffered.
            await self._write()
        if self._pending() and not self._database.is_open:
            await self._write_to_file()
        self._give_up("")
        if failure is not None:
            raise failure

    def _give_up(self, why: str) -> None:
        """Count what is still buffered or in flight as lost and say so."""
        with self._buffer_lock:
            self._done = True
            lost = len(self._buffer)
            self._buffer.clear()
            if self._in_flight is not None:
                lost += len(self._in_flight.rows)
                self._in_flight = None
            self.dropped += lost
        if lost:
            warnings.warn(
                f"SqlLogSink: {lost} log record(s) could not be written to the logs table of "
                f"{self._database.name} ({self._database.path}) and are lost{why}"
                + (f": {self.last_error}" if self.last_error else ""),
                RuntimeWarning,
                stacklevel=3,
            )

    def _start_closing(self) -> asyncio.Task[None]:
        """On the loop: the task that closes the sink, started once (again only if it was
        cancelled before it could end)."""
        closing = self._closing_task
        if closing is None or closing.cancelled():
            closing = self._closing_task = start_background(
                self._shutdown(), name="async_store.logsink.close"
            )
        return closing

    async def _close_on_loop(self) -> None:
        """Close (or wait for the close under way) without taking ``logging``'s locks."""
        closing = self._start_closing()
        # The caller's cancellation propagates from here; the close goes on without it.
        await asyncio.wait([closing])
        closing.result()

    async def aclose(self) -> None:
        """Stop the task after it has written everything still buffered (a batch in flight
        is never cut short). Idempotent.

        Cancelled, it raises at once and the close goes on in a task of its own, which a
        later ``aclose()`` waits for. Raises what the sink's task failed with, if it did."""
        await self._close_on_loop()
        super().close()

    def close(self) -> None:
        """Write out what is buffered, from any thread, without ever blocking the event loop
        (see the class docstring). Idempotent."""
        try:
            if not self._done:
                self._close_from_any_thread()
        finally:
            super().close()

    def _close_from_any_thread(self) -> None:
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is loop:
            # On the loop's own thread, which must not wait: a task finishes the work (kept
            # referenced; aclose() waits for it).
            self._start_closing()
            return
        if loop is not None and loop.is_running():
            if _holds_logging_lock():
                # The loop takes that lock whenever something on it logs at a level its
                # logger has not cached yet, or calls getLogger(): waiting for the loop here
                # could stall both until close_timeout. Leave the writing to the loop.
                with contextlib.suppress(RuntimeError):  # closed in between
                    loop.call_soon_threadsafe(self._start_closing)
                    return
            else:
                try:
                    future = asyncio.run_coroutine_threadsafe(self._close_on_loop(), loop)
                except RuntimeError:  # closed in between
                    pass
                else:
                    try:
                        future.result(self._close_timeout)
                    except concurrent.futures.TimeoutError:
                        pending = self._pending()
                        if pending:
                            warnings.warn(
                                f"SqlLogSink: the event loop did not write the last {pending} "
                                f"log record(s) within {self._close_timeout} s; they may be "
                                "lost",
                                RuntimeWarning,
                                stacklevel=3,
                            )
                        return
                    except Exception as exc:
                        self.last_error = f"{type(exc).__name__}: {exc}"
                    else:
                        return
        # No loop serves the sink any more (stopped, closed, or never started; interpreter
        # exit): write from a thread of our own, with a loop of its own, so that a loop that
        # runs in this thread or that is stopped mid-way is never touched. A batch the stopped
        # loop left in flight is written too, unless it is found committed.
        self._closing = True
        pending = self._pending()
        if pending:
            failure: list[BaseException] = []

            def write() -> None:
                try:
                    asyncio.run(self._write_to_file())
                except BaseException as exc:
                    failure.append(exc)

            thread = threading.Thread(target=write, name="async_store.logsink.close", daemon=True)
            thread.start()
            thread.join(self._close_timeout)
            if thread.is_alive():
                self._done = True
                warnings.warn(
                    f"SqlLogSink: the database gave no answer within {self._close_timeout} s; "
                    f"the last {pending} log record(s) may be lost",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return
            if failure:
                self.last_error = f"{type(failure[0]).__name__}: {failure[0]}"
        self._give_up(" at close")


def _holds_logging_lock() -> bool:
    """Whether this thread holds ``logging``'s module lock (a private RLock; False where it
    cannot be told)."""
    lock = getattr(logging, "_lock", None)
    is_owned = getattr(lock, "_is_owned", None)
    return bool(is_owned()) if callable(is_owned) else False
