"""What runs on the writer's thread: ``BEGIN IMMEDIATE`` and its retries, the statement jobs of a
batch, the COMMIT, the savepoint of a ``transaction()`` block, and an exclusive job's function.
``Writer`` sends them there through its connection; a failure that loses the whole batch is
raised as ``BatchFailed``. The migrations take the write lock with ``begin_immediate`` too."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._connection import is_busy, rollback_if_open, sleep_before_retry
from ._writer_jobs import StatementJob
from .errors import DatabaseBusy
from .statistics import Counters

__all__ = [
    "BatchFailed",
    "begin_immediate",
    "close_savepoint",
    "commit",
    "run_batch",
    "run_jobs",
    "without_cursor",
]

T = TypeVar("T")


class _Outcome(Generic[T]):
    __slots__ = ("error", "value")

    def __init__(self, value: T | None = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class BatchFailed(Exception):
    """The whole batch is lost: its COMMIT failed, or SQLite rolled the transaction back."""

    def __init__(
        self, cause: BaseException, sql: str | None = None, *, rolled_back: bool = True
    ) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.sql = sql
        self.rolled_back = rolled_back


def begin_immediate(
    conn: sqlite3.Connection, retries: int, backoff: float, counters: Counters, database: str
) -> None:
    """``BEGIN IMMEDIATE``, retried with jittered exponential backoff while another process
    holds the lock past busy_timeout. Only BEGIN is retried: nothing has run yet. ``database``
    names the database in the error."""
    for attempt in range(retries + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if is_busy(exc) and attempt < retries:
                counters.busy_retries += 1
                # Sleeping blocks only the writer's own thread, which nothing else may use now.
                sleep_before_retry(backoff, attempt)
                continue
            if is_busy(exc):
                raise DatabaseBusy(
                    f"{database}: locked by another process past busy_timeout and "
                    f"{retries} {'retry' if retries == 1 else 'retries'} ({exc})"
                ) from exc
            raise


def without_cursor(fn: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> Any:
    """Run ``fn``; a cursor it returns is read to its end and closed here, on the connection's
    thread (left open, its statement would keep locks and block the next checkpoint)."""
    result = fn(conn)
    if isinstance(result, sqlite3.Cursor):
        rows = result.fetchall()
        result.close()
        return rows
    return result


def run_jobs(conn: sqlite3.Connection, jobs: list[StatementJob]) -> list[_Outcome[Any]]:
    """Run each job in its own savepoint inside the open transaction (an atomic job needs
    none: SQLite undoes a failing statement by itself)."""
    outcomes: list[_Outcome[Any]] = []
    for job in jobs:
        if job.atomic:
            try:
                outcomes.append(_Outcome(job.fn(conn)))
            except Exception as exc:
                if not conn.in_transaction:
                    raise BatchFailed(exc, job.sql) from exc
                outcomes.append(_Outcome(error=exc))
            continue
        conn.execute("SAVEPOINT async_store_job")
        try:
            value = job.fn(conn)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled back the whole transaction (disk full, I/O error, ...).
                raise BatchFailed(exc, job.sql) from exc
            conn.execute("ROLLBACK TO async_store_job")
            conn.execute("RELEASE async_store_job")
            outcomes.append(_Outcome(error=exc))
        else:
            conn.execute("RELEASE async_store_job")
            outcomes.append(_Outcome(value))
    return outcomes


def run_batch(
    conn: sqlite3.Connection,
    jobs: list[StatementJob],
    retries: int,
    backoff: float,
    counters: Counters,
    database: str,
) -> list[_Outcome[Any]]:
    """BEGIN IMMEDIATE, every job in its savepoint, COMMIT: one hop for a whole batch."""
    try:
        begin_immediate(conn, retries, backoff, counters, database)
    except Exception as exc:
        raise BatchFailed(exc, "BEGIN IMMEDIATE", rolled_back=False) from exc
    if len(jobs) == 1:
        # Alone in its transaction, a job needs no savepoint: a failure rolls back just it.
        # (Inside a savepoint SQLite also journals every page the job changes, which made a
        # large execute_many or append several times slower.)
        try:
            value = jobs[0].fn(conn)
        except Exception as exc:
            rollback_if_open(conn)
            return [_Outcome(error=exc)]
        commit(conn)
        return [_Outcome(value)]
    outcomes = run_jobs(conn, jobs)
    commit(conn)
    return outcomes


def commit(conn: sqlite3.Connection) -> None:
    """COMMIT the open transaction; if that fails, roll back what is left of it and raise
    ``BatchFailed``."""
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise BatchFailed(exc, "COMMIT") from exc


def close_savepoint(conn: sqlite3.Connection, name: str, *, keep: bool) -> None:
    """Release the savepoint ``name`` of a ``transaction()`` block, rolled back to first unless
    ``keep``; ``BatchFailed`` if SQLite has rolled the whole transaction back."""
    if not conn.in_transaction:
        raise BatchFailed(
            sqlite3.OperationalError("the transaction was rolled back by SQLite"), name
        )
    if not keep:
        conn.execute(f"ROLLBACK TO {name}")
    conn.execute(f"RELEASE {name}")
