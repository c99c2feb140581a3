"""Timestamps as the store writes them: ISO-8601 UTC text with microseconds and a ``Z``, so that
text order is time order."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["TIMESTAMP_FORMAT", "format_utc", "utc_now"]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_second: tuple[int, str] = (-1, "")
"""The last whole second formatted by ``utc_now`` and its text (one tuple: swapped whole, so
threads never see a second with another second's text)."""


def format_utc(moment: datetime) -> str:
    """``moment`` (timezone-aware) as stored text."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def utc_now() -> str:
    """The current time as stored text (formats the date once a second: appends and mutations
    take a timestamp each)."""
    global _second
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    second, text = _second
    if second != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second = (seconds, text)
    return f"{text}.{micros:06d}Z"
