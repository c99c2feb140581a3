"""Pool statistics: synchronous, free of I/O, read through ``Database.statistics()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import shorten_sql

__all__ = ["PoolStatistics", "WriterHold"]


@dataclass(frozen=True, slots=True)
class WriterHold:
    """What holds a database's writer now, and since when."""

    kind: Literal["transaction", "batch", "exclusive"]
    """``transaction``: a ``transaction()`` block; ``batch``: a group commit of statements;
    ``exclusive``: work that needs the writer alone (a migration, a checkpoint, a backup)."""
    task: str
    """The task that entered the ``transaction()`` block; for other kinds, the writer's."""
    since: str
    """When the writer was taken: ISO-8601 UTC."""
    held_seconds: float
    """Seconds it has been held so far."""
    last_sql: str | None
    """The newest statement of the block (the first of a batch); ``None`` before the first."""

    def describe(self) -> str:
        """One line for a message: what holds the writer, for how long, its last SQL."""
        holder = {
            "transaction": f"held by a transaction() block of task {self.task!r}",
            "batch": "busy with a group commit",
            "exclusive": "busy with work that needs it alone",
        }[self.kind]
        text = f"{holder} for {self.held_seconds:.3f} s since {self.since}"
        if self.last_sql is not None:
            text += f", last SQL: {shorten_sql(self.last_sql)}"
        return text


@dataclass(frozen=True, kw_only=True)
class PoolStatistics:
    """A snapshot of one database's pool and writer."""

    database: str
    """The database's name (``app_meta``, ``events``)."""
    readers_total: int
    """Reader connections open (the pool opens them as load asks, up to ``readers_limit``)."""
    readers_limit: int
    """Reader connections the pool may open (``DatabaseConfig.readers``)."""
    readers_busy: int
    """Readers lent out (or being reset after a cancelled read)."""
    readers_idle: int
    """Readers free to lend."""
    writer_queue_depth: int
    """Write jobs waiting behind the writer."""
    batches: int
    """Group commits completed (successful or not)."""
    transactions: int
    """Transactions committed."""
    failed_transactions: int
    """Transactions rolled back: their own error, a cancellation, or a failed batch."""
    mean_batch_size: float
    """Transactions per group commit, on average."""
    largest_batch: int
    """The most transactions one group commit held."""
    busy_retries: int
    """``BEGIN IMMEDIATE`` retries after another process held the lock past busy_timeout."""
    acquire_waits: int
    """Reads that found no free reader and waited."""
    acquire_timeouts: int
    """Waits that ended in :class:`PoolTimeout`: for a free reader, or for the writer."""
    transaction_timeouts: int = 0
    """``transaction()`` blocks the writer rolled back past ``transaction_timeout``."""
    writer_hold: WriterHold | None = None
    """What holds the writer now (``None`` when it is idle)."""
