"""The jobs callers queue for the writer: a ``StatementJob`` (``execute``, ``execute_many``), a
``TransactionLease`` (a ``transaction()`` block) or an ``ExclusiveJob`` (migrations,
checkpoints). Each carries the futures its caller awaits, ``deadline`` (the loop time at which a
caller still queued gives up with ``PoolTimeout``) and ``waiting`` (queued, and its caller still
waiting). ``Writer`` serves them in ``_writer``; their functions run on the writer's thread in
``_writer_thread``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from ..errors import StoreError

__all__ = ["ExclusiveJob", "StatementJob", "TransactionLease"]


class StatementJob:
    """A function of the writer's connection, run as one transaction of a group commit."""

    __slots__ = ("atomic", "deadline", "fn", "future", "sql", "waiting")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        sql: str,
        future: asyncio.Future[Any],
        atomic: bool,
    ) -> None:
        self.fn = fn
        self.sql = sql
        self.future = future
        self.atomic = atomic
        """When ``fn`` fails there is nothing of it to undo (one statement at most, or a
        savepoint of its own): it needs no savepoint from the writer in a group commit."""
        self.deadline = 0.0
        self.waiting = False


class TransactionLease:
    """The writer's connection, lent to one ``transaction()`` block inside a savepoint."""

    __slots__ = (
        "committed",
        "deadline",
        "expired",
        "finished",
        "granted",
        "last_sql",
        "savepoint",
        "task",
        "waiting",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, task: str) -> None:
        self.granted: asyncio.Future[None] = loop.create_future()
        """Resolved by the writer once the savepoint is open."""
        self.finished: asyncio.Future[bool] = loop.create_future()
        """Resolved by the block: True to keep its work, False to roll it back."""
        self.committed: asyncio.Future[None] = loop.create_future()
        """Resolved by the writer once the batch holding the block has ended."""
        self.expired: StoreError | None = None
        """Set by the writer when it rolled the block back without waiting for its end (past
        ``transaction_timeout``, or the database closing): the block's later calls raise it."""
        self.task = task
        """The name of the task that entered the block (health names it)."""
        self.last_sql: str | None = None
        """The newest statement the block ran (health shows it)."""
        self.savepoint = ""
        self.deadline = 0.0
        self.waiting = False


class ExclusiveJob:
    """A function of the writer's connection, run alone between batches: it manages its own
    transactions."""

    __slots__ = ("deadline", "fn", "future", "waiting")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.future = future
        self.deadline = 0.0
        self.waiting = False
