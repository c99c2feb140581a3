"""What runs on the writer's thread: ``BEGIN IMMEDIATE`` and its retries, the statement jobs of a
batch, the COMMIT, the savepoint of a ``transaction()`` block, and an exclusive job's function.
``Writer`` sends them there through its connection; a failure that loses the whole batch is
raised as ``BatchFailed``. The migrations take the write lock with ``begin_immediate`` too.

A COMMIT that fails on a deferred constraint (SQLite checks a ``DEFERRABLE INITIALLY DEFERRED``
foreign key only then) does not lose the batch: the transaction stays open, so the jobs of the
batch are rolled back and run again one by one, each committed alone, and only the one that
breaks the constraint fails, as if each had been issued alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ..errors import DatabaseBusy
from ._connection import end_savepoint, is_busy, rollback_if_open, sleep_before_retry
from ._counters import Counters
from ._writer_jobs import StatementJob

__all__ = [
    "BatchFailed",
    "Locking",
    "begin_block",
    "begin_immediate",
    "commit",
    "end_block",
    "run_batch",
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


class Locking:
    """How the writer takes SQLite's write lock: ``busy_retries`` retries of ``BEGIN
    IMMEDIATE`` ``busy_backoff`` seconds apart (doubled each time), counted in ``counters``;
    ``database`` names the database in the error."""

    __slots__ = ("backoff", "counters", "database", "retries")

    def __init__(self, retries: int, backoff: float, counters: Counters, database: str) -> None:
        self.retries = retries
        self.backoff = backoff
        self.counters = counters
        self.database = database


def begin_immediate(conn: sqlite3.Connection, locking: Locking) -> None:
    """``BEGIN IMMEDIATE``, retried with jittered exponential backoff while another process
    holds the lock past busy_timeout. Only BEGIN is retried: nothing has run yet."""
    retries = locking.retries
    for attempt in range(retries + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if is_busy(exc) and attempt < retries:
                locking.counters.busy_retries += 1
                # Sleeping blocks only the writer's own thread, which nothing else may use now.
                sleep_before_retry(locking.backoff, attempt)
                continue
            if is_busy(exc):
                raise DatabaseBusy(
                    f"{locking.database}: locked by another process past busy_timeout and "
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


def _run_jobs(conn: sqlite3.Connection, jobs: Sequence[StatementJob]) -> list[_Outcome[Any]]:
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
            end_savepoint(conn, "async_store_job", keep=False)
            outcomes.append(_Outcome(error=exc))
        else:
            end_savepoint(conn, "async_store_job", keep=True)
            outcomes.append(_Outcome(value))
    return outcomes


def _run_alone(conn: sqlite3.Connection, job: StatementJob, locking: Locking) -> _Outcome[Any]:
    """``job`` as a transaction of its own: BEGIN IMMEDIATE, the job, COMMIT."""
    try:
        begin_immediate(conn, locking)
        value = job.fn(conn)
        conn.execute("COMMIT")
    except Exception as exc:
        rollback_if_open(conn)
        return _Outcome(error=exc)
    return _Outcome(value)


def _deferred_violation(exc: BaseException, conn: sqlite3.Connection) -> bool:
    """A COMMIT refused by a deferred constraint: SQLite keeps the transaction open."""
    return isinstance(exc, sqlite3.IntegrityError) and conn.in_transaction


def _commit_or_redo(
    conn: sqlite3.Connection, jobs: Sequence[StatementJob], locking: Locking
) -> list[_Outcome[Any]] | None:
    """COMMIT the open transaction; ``None`` once committed. If a deferred constraint refuses
    it, roll everything back and run ``jobs`` again one by one (see the module docstring);
    their outcomes are returned. Any other failure raises ``BatchFailed``."""
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        if not (_deferred_violation(exc, conn) and len(jobs) > 1):
            rollback_if_open(conn)
            raise BatchFailed(exc, "COMMIT") from exc
        conn.execute("ROLLBACK")
        return [_run_alone(conn, job, locking) for job in jobs]
    return None


def run_batch(
    conn: sqlite3.Connection, jobs: Sequence[StatementJob], locking: Locking
) -> list[_Outcome[Any]]:
    """BEGIN IMMEDIATE, every job in its savepoint, COMMIT: one hop for a whole batch."""
    try:
        begin_immediate(conn, locking)
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
    outcomes = _run_jobs(conn, jobs)
    return _commit_or_redo(conn, jobs, locking) or outcomes


def commit(conn: sqlite3.Connection) -> None:
    """COMMIT the open transaction; if that fails, roll back what is left of it and raise
    ``BatchFailed``."""
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        rollback_if_open(conn)
        raise BatchFailed(exc, "COMMIT") from exc


def begin_block(conn: sqlite3.Connection, savepoint: str, locking: Locking) -> None:
    """Open the transaction of a ``transaction()`` block, and its savepoint ``savepoint``."""
    begin_immediate(conn, locking)
    try:
        conn.execute(f"SAVEPOINT {savepoint}")
    except BaseException:
        rollback_if_open(conn)
        raise


_AFTER_BLOCK = "async_store_after_block"


def end_block(
    conn: sqlite3.Connection,
    savepoint: str,
    *,
    keep: bool,
    jobs: Sequence[StatementJob],
    locking: Locking,
) -> tuple[BaseException | None, list[_Outcome[Any]]]:
    """Close the savepoint of a ``transaction()`` block (rolled back first unless ``keep``),
    run the statement ``jobs`` that queued behind it, and COMMIT them together. Returns the
    block's error (``None`` when its work committed) and the jobs' outcomes.

    If a deferred constraint refuses the COMMIT, the jobs are rolled back to a savepoint taken
    after the block, and the block's work alone is committed: the block fails only if that
    COMMIT is refused too. The jobs then run again one by one. ``BatchFailed`` when the whole
    transaction is lost otherwise (the COMMIT failed for another reason)."""
    if not conn.in_transaction:
        # SQLite rolled the block's transaction back (disk full, I/O error): the block's work
        # is lost, the statements behind it are not.
        lost = sqlite3.OperationalError("the transaction was rolled back by SQLite")
        return lost, run_batch(conn, jobs, locking) if jobs else []
    if not jobs and not keep:
        # Nothing to commit: a COMMIT of the emptied transaction would still write to the WAL
        # and tell every other connection (PRAGMA data_version) that the database changed.
        conn.execute("ROLLBACK")
        return None, []
    end_savepoint(conn, savepoint, keep=keep)
    if not jobs:
        commit(conn)
        return None, []
    conn.execute(f"SAVEPOINT {_AFTER_BLOCK}")
    outcomes = _run_jobs(conn, jobs)
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        if not _deferred_violation(exc, conn):
            rollback_if_open(conn)
            raise BatchFailed(exc, "COMMIT") from exc
    else:
        return None, outcomes
    end_savepoint(conn, _AFTER_BLOCK, keep=False)
    block_error: BaseException | None = None
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        rollback_if_open(conn)
        block_error = exc
    return block_error, [_run_alone(conn, job, locking) for job in jobs]
