"""Timestamps as the store writes them: ISO-8601 UTC text with microseconds and a ``Z``, so that
text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["TIMESTAMP_FORMAT", "format_utc", "utc_now"]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_utc(moment: datetime) -> str:
    """``moment`` (timezone-aware) as stored text."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def utc_now() -> str:
    """The current time as stored text."""
    return datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
