"""Stored timestamps: ISO-8601 UTC text with microseconds and ``Z``, in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from async_store._clock import TIMESTAMP_FORMAT, format_utc, utc_now


def test_utc_now_is_the_current_utc_time_in_the_stored_format() -> None:
    before = datetime.now(UTC)
    text = utc_now()
    after = datetime.now(UTC)

    moment = datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    assert before - timedelta(microseconds=1) <= moment <= after
    assert text == format_utc(moment)
    assert len(text) == len("2026-01-01T00:00:00.000000Z")
