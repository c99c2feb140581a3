"""A log record as JSON-ready data, as both log sinks store it (``logsinks``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["record_to_dict"]

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
