"""Logging sinks: the library logs through stdlib ``logging`` under ``async_store.*``; these
handlers send records (the library's or the application's) to a JSONL file or the ``logs`` table.

Neither writes on the caller's path: ``emit`` only hands the record over (to a writer thread for
the file, to a batching task for the table), and both write out what they hold when closed.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import queue
from pathlib import Path

from .._files import create_private_dirs
from ._records import record_to_dict as record_to_dict
from ._sql import SqlLogSink as SqlLogSink

__all__ = ["JsonlSink", "SqlLogSink"]


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
