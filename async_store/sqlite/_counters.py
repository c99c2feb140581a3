"""The writer's and the readers' counters: the mutable numbers behind
:class:`~async_store.statistics.PoolStatistics`, which ``SqliteDatabase.statistics()`` copies
into a snapshot."""

from __future__ import annotations

__all__ = ["Counters"]


class Counters:
    """The mutable counters behind :class:`PoolStatistics`; only touched on the event loop's
    thread, except ``busy_retries`` (an int increment under the GIL on the writer's thread)."""

    __slots__ = (
        "acquire_timeouts",
        "acquire_waits",
        "batches",
        "busy_retries",
        "failed_transactions",
        "largest_batch",
        "transaction_timeouts",
        "transactions",
    )

    def __init__(self) -> None:
        self.batches = 0
        self.transactions = 0
        self.failed_transactions = 0
        self.largest_batch = 0
        self.busy_retries = 0
        self.acquire_waits = 0
        self.acquire_timeouts = 0
        self.transaction_timeouts = 0

    def record_batch(self, committed: int, failed: int) -> None:
        self.batches += 1
        self.transactions += committed
        self.failed_transactions += failed
        self.largest_batch = max(self.largest_batch, committed + failed)
