"""Latency histograms and error counters: cheap enough to record on every operation.

A histogram has fixed logarithmic buckets (10 per decade, 1 µs to 1000 s), so recording is one
``log10`` and one increment, memory is constant, and a quantile is read as the upper edge of
its bucket: at most ~26% (one bucket) above the true value, never below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["KINDS", "LatencyHistogram", "LatencySummary", "Metrics"]

KINDS = ("read", "write", "transaction", "append", "mutate")
"""The operation kinds health reports latencies for."""

_PER_DECADE = 10
_LOWEST = 1e-6
_BUCKETS = 9 * _PER_DECADE + 1  # 1 µs .. 1000 s, and one overflow bucket


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Quantiles of one operation kind, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    sum_ms: float = 0.0
    """All the durations added up (with ``count``, the mean; Prometheus's ``_sum``)."""

    def to_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "sum_ms": self.sum_ms,
        }


class LatencyHistogram:
    """Durations of one kind of operation."""

    __slots__ = ("_buckets", "_count", "_max", "_sum_ns")

    def __init__(self) -> None:
        self._buckets = [0] * _BUCKETS
        self._count = 0
        self._max = 0.0
        # Whole nanoseconds: integer sums are exact, so merging equals recording in one.
        self._sum_ns = 0

    def record(self, seconds: float) -> None:
        index = 0 if seconds <= _LOWEST else int(math.log10(seconds / _LOWEST) * _PER_DECADE) + 1
        self._buckets[min(index, _BUCKETS - 1)] += 1
        self._count += 1
        self._sum_ns += round(seconds * 1e9)
        if seconds > self._max:
            self._max = seconds

    @property
    def count(self) -> int:
        return self._count

    def quantile(self, q: float) -> float:
        """The ``q`` quantile in seconds (the upper edge of its bucket, capped at the maximum
        seen); 0 when nothing was recorded."""
        if self._count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for index, count in enumerate(self._buckets):
            seen += count
            if seen >= rank:
                if index == _BUCKETS - 1:
                    return self._max  # the overflow bucket has no upper edge
                upper = _LOWEST * 10 ** (index / _PER_DECADE)
                return min(upper, self._max)
        return self._max

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s recordings to this histogram."""
        for index, count in enumerate(other._buckets):
            self._buckets[index] += count
        self._count += other._count
        self._sum_ns += other._sum_ns
        self._max = max(self._max, other._max)

    def summary(self) -> LatencySummary:
        return LatencySummary(
            count=self._count,
            p50_ms=round(self.quantile(0.50) * 1000, 4),
            p95_ms=round(self.quantile(0.95) * 1000, 4),
            p99_ms=round(self.quantile(0.99) * 1000, 4),
            max_ms=round(self._max * 1000, 4),
            sum_ms=round(self._sum_ns / 1e6, 4),
        )


class Metrics:
    """Latencies per operation kind and errors per kind, shared by a service's parts."""

    __slots__ = ("errors", "latency")

    def __init__(self) -> None:
        self.latency = {kind: LatencyHistogram() for kind in KINDS}
        self.errors: dict[str, int] = {}

    def record(self, kind: str, seconds: float) -> None:
        histogram = self.latency.get(kind)
        if histogram is None:
            histogram = self.latency[kind] = LatencyHistogram()
        histogram.record(seconds)

    def count_error(self, error: BaseException) -> None:
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    @classmethod
    def merged(cls, parts: list[Metrics]) -> Metrics:
        """One view of several services' parts (each database keeps its own)."""
        total = cls()
        for part in parts:
            for kind, histogram in part.latency.items():
                total.latency.setdefault(kind, LatencyHistogram()).merge(histogram)
            for name, count in part.errors.items():
                total.errors[name] = total.errors.get(name, 0) + count
        return total
