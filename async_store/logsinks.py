"""Logging sinks: the library logs through stdlib ``logging`` under ``async_store.*``; these
handlers send records (the library's or the application's) to a JSONL file or the ``logs`` table.

Neither writes on the caller's path: ``emit`` only hands the record over (to a writer thread for
the file, to a batching task for the table), and both write out what they hold when closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import logging.handlers
import os
import queue
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._connection import create_private_dirs
from ._shield import finish
from ._tasks import start_background
from .database import Database
from .errors import StoreError

__all__ = ["JsonlSink", "SqlLogSink", "record_to_dict"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """A log record as JSON-ready data: time, level, logger, message, and any ``extra``."""
    data: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    if record.exc_info and record.exc_info[0] is not None:
        data["exception"] = logging.Formatter().formatException(record.exc_info)
    extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    if extra:
        data["extra"] = {k: v if _jsonable(v) else repr(v) for k, v in extra.items()}
    return data


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_to_dict(record), ensure_ascii=False)


class _OwnerOnlyRotatingFile(logging.handlers.RotatingFileHandler):
    """Log files created 0600 (the records may say what the application stores), whatever
    the umask; rotation opens each new file the same way."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


class JsonlSink(logging.handlers.QueueHandler):
    """One JSON object per line in ``path``, rotated when it passes ``max_bytes`` (keeping
    ``backup_count`` old files). Records are written by a background thread; ``close()``
    writes every queued record before returning."""

    def __init__(
        self, path: str | Path, *, max_bytes: int = 10 * 1024 * 1024, backup_count: int = 5
    ) -> None:
        self._records: queue.Queue[logging.LogRecord] = queue.Queue()
        super().__init__(self._records)
        create_private_dirs(Path(path).parent)
        self._file = _OwnerOnlyRotatingFile(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
        )
        self._file.setFormatter(_JsonFormatter())
        self._listener = logging.handlers.QueueListener(
            self._records, self._file, respect_handler_level=False
        )
        self._listener.start()
        self._closed = False

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Keep the record as it is (QueueHandler would pre-format it as text): the file
        # handler formats it to JSON on the writer thread.
        return record

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._listener.stop()  # drains the queue first
            self._file.close()
        super().close()


class SqlLogSink(logging.Handler):
    """Batches records into the app_meta ``logs`` table from a background task.

    ``emit`` appends to a bounded buffer (``max_buffered`` records; beyond it the oldest are
    dropped and counted in ``dropped``) from any thread; the task writes a batch every
    ``flush_interval`` seconds or ``batch_size`` records, in one transaction. Start it with
    ``await sink.start()`` on the event loop; ``await sink.aclose()`` writes the rest.
    """

    def __init__(
        self,
        database: Database,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_buffered: int = 10_000,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self._database = database
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._buffer: deque[tuple[str, str, str, str, str]] = deque(maxlen=max_buffered)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self.written = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = start_background(self._run(), name="async_store.logsink")

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
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(row)
        if len(self._buffer) >= self._batch_size and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed
                self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self._write()
        await self._write()

    async def _write(self) -> None:
        while self._buffer:
            batch = [
                self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
            ]
            try:
                await self._database.execute_many(
                    "INSERT INTO logs(created_at, level, logger, message, extra)"
                    " VALUES (?, ?, ?, ?, ?)",
                    batch,
                )
            except StoreError:
                # Logging about a failed log write would come straight back here.
                self.dropped += len(batch)
                return
            self.written += len(batch)

    async def aclose(self) -> None:
        """Stop the task after it has written everything still buffered (a batch in flight
        is never cut short)."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None:
            await finish(task)
            self._task = None
        else:
            await self._write()
        self.close()
