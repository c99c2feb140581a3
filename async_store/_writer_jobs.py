"""The jobs callers queue for the writer: a ``StatementJob`` (``execute``, ``execute_many``), a
``TransactionLease`` (a ``transaction()`` block) or an ``ExclusiveJob`` (migrations,
checkpoints). Each carries the futures its caller awaits, and ``waiting``, which the writer uses
to count its queue. ``Writer`` serves them in ``_writer``; their functions run on the writer's
thread in ``_writer_thread``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

__all__ = ["ExclusiveJob", "StatementJob", "TransactionLease"]


class StatementJob:
    """A function of the writer's connection, run as one transaction of a group commit."""

    __slots__ = ("atomic", "fn", "future", "sql", "waiting")

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
        self.waiting = False


class TransactionLease:
    """The writer's connection, lent to one ``transaction()`` block inside a savepoint."""

    __slots__ = ("committed", "finished", "granted", "savepoint", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.granted: asyncio.Future[None] = loop.create_future()
        """Resolved by the writer once the savepoint is open."""
        self.finished: asyncio.Future[bool] = loop.create_future()
        """Resolved by the block: True to keep its work, False to roll it back."""
        self.committed: asyncio.Future[None] = loop.create_future()
        """Resolved by the writer once the batch holding the block has ended."""
        self.savepoint = ""
        self.waiting = False


class ExclusiveJob:
    """A function of the writer's connection, run alone between batches: it manages its own
    transactions."""

    __slots__ = ("fn", "future", "waiting")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.future = future
        self.waiting = False
