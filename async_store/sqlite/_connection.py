"""One SQLite connection on its own aiosqlite thread, opened with every PRAGMA set and read back.

aiosqlite is the library's only thread bridge. Each call here is one hop to the connection's
thread: a plain function of the ``sqlite3.Connection`` runs there, so a batch of statements costs
one hop, not one per statement.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .._files import create_private_dirs
from .._shield import uncancellable
from ..config import DatabaseConfig
from ..errors import Interrupted, PragmaMismatch
from ._errors import translate
from ._row import SqliteRow

__all__ = [
    "MANAGED_PRAGMAS",
    "Connection",
    "Outcome",
    "Row",
    "Ticket",
    "create_private_dirs",
    "end_savepoint",
    "execute_rows",
    "in_savepoint",
    "is_busy",
    "open_connection",
    "rollback_if_open",
    "run_on_file",
    "sleep_before_retry",
]

T = TypeVar("T")

Row = SqliteRow
"""A result row: ``row["column"]``, ``row[0]``, ``row.column``, ``row._mapping``, ``keys()``."""

_SYNCHRONOUS_CODES = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
_TEMP_STORE_MEMORY = 2

MANAGED_PRAGMAS = frozenset(
    {
        "busy_timeout",
        "journal_mode",
        "synchronous",
        "foreign_keys",
        "cache_size",
        "temp_store",
        "mmap_size",
        "wal_autocheckpoint",
        "journal_size_limit",
        "trusted_schema",
        "query_only",
    }
)
"""The PRAGMAs set and read back on every connection; a query may read them, not set them."""

# trusted_schema=OFF keeps a tampered schema from calling functions with side effects. Before
# SQLite 3.41 it also forbade json_valid() in CHECK constraints, which the schema relies on, so
# there the library keeps it ON (it registers no functions of its own that a schema could abuse).
_TRUSTED_SCHEMA = 0 if sqlite3.sqlite_version_info >= (3, 41, 0) else 1


class Connection:
    """A ``sqlite3.Connection`` owned by one aiosqlite worker thread.

    Calls queue on the thread in FIFO order. A reader connection is *interruptible*: when the
    caller of :meth:`run` is cancelled, its own call is skipped if it has not started, or
    stopped by SQLite's progress handler if it is running; no other call is touched.
    """

    __slots__ = ("_aio", "_raw", "_running", "database", "reader")

    def __init__(
        self, aio: aiosqlite.Connection, raw: sqlite3.Connection, *, database: str, reader: bool
    ) -> None:
        self._aio = aio
        self._raw = raw
        self._running = _Running()
        self.database = database
        self.reader = reader

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the connection's thread (one hop) and return its result.

        Exceptions come back untranslated. On a reader, cancelling the caller skips or
        interrupts ``fn``; on the writer, ``fn`` runs to its end (interrupting a write could
        roll back the transaction of other callers), and work submitted later runs after it.
        """
        if not self.reader:
            # aiosqlite exposes no public "run this function on the connection's thread";
            # `_execute` is that primitive (every public aiosqlite method is built on it).
            return await self._aio._execute(fn, self._raw)  # type: ignore[no-untyped-call,no-any-return]
        ticket = Ticket()
        try:
            return await self._aio._execute(_guarded, self._raw, fn, ticket, self._running)  # type: ignore[no-untyped-call,no-any-return]
        except asyncio.CancelledError:
            ticket.cancelled = True
            raise

    def submit_each(
        self, calls: Sequence[tuple[Callable[[sqlite3.Connection], Any], Ticket]]
    ) -> asyncio.Future[list[Outcome]]:
        """Queue every ``fn(connection)`` of ``calls`` on this reader's thread as one call, before
        returning (so nothing submitted later runs first); they run in order, each as
        :meth:`run` would with its own ticket (set ``ticket.cancelled`` to skip or interrupt
        it), and one failing does not stop the others. The future holds one ``(ok, value or
        error)`` per call."""
        # aiosqlite's own queue, as its `_execute` uses it (a pair of a future to answer and a
        # function to call); `_execute` is a coroutine, which would queue the call only once
        # it is first awaited.
        if not self._aio._running or self._aio._connection is None:
            raise ValueError("Connection closed")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        call = functools.partial(_each, self._raw, calls, self._running)
        self._aio._tx.put_nowait((future, call))
        return future

    def stop_all(self) -> None:
        """On a reader: stop the call running now and skip every call queued behind it, in a
        group or not; their callers get :class:`Interrupted`. For a pool closing past its grace
        period: the connection serves nothing more."""
        self._running.stopping = True
        self._raw.interrupt()

    def interrupt(self) -> None:
        """Stop whatever statement runs on the connection now (``sqlite3_interrupt``: safe
        from any thread, a no-op when none runs)."""
        self._raw.interrupt()

    async def close(self) -> None:
        """Finish queued work, close the connection and stop its thread."""
        await self._aio.close()


class Ticket:
    """One call on a reader; ``cancelled`` is set from the event loop's thread when its caller
    is cancelled."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


# SQLite calls the progress handler every this many virtual-machine steps: often enough to stop
# a cancelled scan within a fraction of a millisecond, rarely enough to cost nothing measurable.
_PROGRESS_STEPS = 10_000


class _Running:
    """A reader's thread as the event loop sees it: the call running now, and whether every
    call is to stop (the pool closing past its grace period)."""

    __slots__ = ("stopping", "ticket")

    def __init__(self) -> None:
        self.ticket: Ticket | None = None
        self.stopping = False


def _stop_requested(running: _Running) -> bool:
    ticket = running.ticket
    return running.stopping or (ticket is not None and ticket.cancelled)


def _guarded(
    conn: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    ticket: Ticket,
    running: _Running,
) -> T:
    if ticket.cancelled:
        raise Interrupted("the caller was cancelled before the statement started")
    if running.stopping:
        raise Interrupted("the database closed before the statement started")
    running.ticket = ticket
    try:
        return fn(conn)
    finally:
        running.ticket = None


Outcome = tuple[bool, Any]
"""(True, the value a call returned) or (False, the error it raised)."""


def _each(
    conn: sqlite3.Connection,
    calls: Sequence[tuple[Callable[[sqlite3.Connection], Any], Ticket]],
    running: _Running,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for fn, ticket in calls:
        try:
            outcomes.append((True, _guarded(conn, fn, ticket, running)))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


async def open_connection(config: DatabaseConfig, *, reader: bool) -> Connection:
    """Open a connection to ``config.path`` with every PRAGMA of ``MANAGED_PRAGMAS`` set, read
    each one back, and return it. Raises :class:`PragmaMismatch` when SQLite does not keep a
    setting, and the translated error when the file cannot be opened or is not a database."""
    path = Path(config.path)

    opened: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        # Runs on the connection's own thread, like every later call.
        _create_owner_only(path)
        raw = sqlite3.connect(path, timeout=config.busy_timeout, isolation_level=None)
        raw.row_factory = SqliteRow
        opened.append(raw)
        return raw

    try:
        aio = await _start(connect)
    except Exception as exc:
        raise translate(exc, database=f"{config.name} ({path})") from exc
    raw = opened[0]
    connection = Connection(aio, raw, database=config.name, reader=reader)
    try:
        await aio._execute(_configure, raw, config, connection._running if reader else None)  # type: ignore[no-untyped-call]
    except BaseException as exc:
        await uncancellable(aio.close())
        if isinstance(exc, Exception):
            raise translate(exc, database=f"{config.name} ({path})") from exc
        raise
    return connection


def _configure(conn: sqlite3.Connection, config: DatabaseConfig, running: _Running | None) -> None:
    """Set every PRAGMA, then read each back; on a reader (``running`` given) install the
    progress handler that stops a cancelled call. Runs on the connection's thread."""
    reader = running is not None
    if running is not None:
        conn.set_progress_handler(lambda: _stop_requested(running), _PROGRESS_STEPS)
    wanted: dict[str, Any] = {
        "busy_timeout": round(config.busy_timeout * 1000),
        "journal_mode": "wal",
        "synchronous": _SYNCHRONOUS_CODES[config.synchronous],
        "foreign_keys": 1,
        "cache_size": -config.cache_size_kib,
        "temp_store": _TEMP_STORE_MEMORY,
        "mmap_size": config.mmap_size,
        "wal_autocheckpoint": config.wal_autocheckpoint,
        "journal_size_limit": config.journal_size_limit,
        "trusted_schema": _TRUSTED_SCHEMA,
        "query_only": 1 if reader else 0,
    }
    assert wanted.keys() == MANAGED_PRAGMAS
    conn.execute(f"PRAGMA busy_timeout = {wanted['busy_timeout']}").fetchall()
    # journal_mode next: WAL is a property of the file, and readers should find it set.
    _switch_to_wal(conn, config)
    for name, value in wanted.items():
        if name not in ("busy_timeout", "journal_mode"):
            conn.execute(f"PRAGMA {name} = {value}").fetchall()
    for name, value in wanted.items():
        row = conn.execute(f"PRAGMA {name}").fetchone()
        actual = row[0] if row is not None else None
        if isinstance(actual, str):
            actual = actual.lower()
        if actual != value:
            raise PragmaMismatch(
                f"{config.name} ({config.path}): PRAGMA {name} was set to {value!r} "
                f"but reads back {actual!r}"
            )


def _switch_to_wal(conn: sqlite3.Connection, config: DatabaseConfig) -> None:
    """``PRAGMA journal_mode = wal``, retried with jittered backoff like ``BEGIN IMMEDIATE``:
    processes opening a new file at once each hold its read lock while asking to switch it, and
    SQLite answers all but one BUSY at once, without waiting (waiting could deadlock)."""
    for attempt in range(config.busy_retries + 1):
        try:
            conn.execute("PRAGMA journal_mode = wal").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == config.busy_retries:
                raise
            sleep_before_retry(config.busy_backoff, attempt)


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (_SQLITE_BUSY, _SQLITE_LOCKED)


_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def sleep_before_retry(base: float, attempt: int) -> None:
    """Sleep before retry ``attempt`` (0, 1, ...) of a lock: ``base`` doubled per attempt,
    jittered by ±50% so that processes retrying together drift apart. Blocks only the
    connection's own thread."""
    time.sleep(base * (2**attempt) * random.uniform(0.5, 1.5))


def _create_owner_only(path: Path) -> None:
    """Create missing parent directories (0700) and the database file itself (0600), so the
    WAL and shared-memory files SQLite creates beside it inherit owner-only permissions."""
    create_private_dirs(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def execute_rows(
    conn: sqlite3.Connection,
    one: str,
    many: str,
    per_statement: int,
    rows: Sequence[Sequence[Any]],
) -> None:
    """Run ``one`` (a statement of one row's parameters) for each of ``rows``, in order:
    ``per_statement`` rows at a time through ``many`` (the same statement for that many rows,
    their parameters one row after another), the rest through executemany. A statement of many
    rows is one step on the thread, where executemany steps, and takes the GIL back, per row."""
    whole = len(rows) - len(rows) % per_statement
    for start in range(0, whole, per_statement):
        chunk = rows[start : start + per_statement]
        conn.execute(many, list(itertools.chain.from_iterable(chunk)))
    conn.executemany(one, rows[whole:])


def end_savepoint(conn: sqlite3.Connection, name: str, *, keep: bool) -> None:
    """Release the savepoint ``name``, rolled back to first unless ``keep``."""
    if not keep:
        conn.execute(f"ROLLBACK TO {name}")
    conn.execute(f"RELEASE {name}")


def in_savepoint(conn: sqlite3.Connection, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(conn)`` inside the savepoint ``name``: if it raises, its work alone is undone
    (unless SQLite rolled the whole transaction back, which leaves no savepoint to undo)."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        result = fn(conn)
    except BaseException:
        if conn.in_transaction:
            end_savepoint(conn, name, keep=False)
        raise
    end_savepoint(conn, name, keep=True)
    return result


def rollback_if_open(conn: sqlite3.Connection) -> None:
    """End whatever transaction the connection is in; runs on the connection's thread."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


async def _start(connect: Callable[[], sqlite3.Connection]) -> aiosqlite.Connection:
    """Start an aiosqlite thread and open its connection there with ``connect``. A cancellation
    waits for the open to end, closes the connection and stops the thread, then goes on:
    aiosqlite, cancelled while opening, stops the thread but leaves a connection opened
    meanwhile open for good."""
    aio = aiosqlite.Connection(connect, 64)
    # A daemon thread: a service that is never closed must not hang the interpreter at exit.
    # Committed data is safe either way; SQLite recovers from the WAL on the next open.
    aio._thread.daemon = True
    try:
        await uncancellable(aio)
    except BaseException:
        await uncancellable(aio.close())
        raise
    return aio


async def run_on_file(path: Path, fn: Callable[[sqlite3.Connection], T], *, readonly: bool) -> T:
    """Open a plain connection to ``path`` (read-only: the file must exist and is never
    changed), run ``fn`` on its thread, close it. For backups and restores, which work on
    files outside the pool. Errors come back untranslated."""
    opened: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        if readonly:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            raw = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            raw = sqlite3.connect(path, isolation_level=None)
        opened.append(raw)
        return raw

    aio = await _start(connect)
    try:
        return await aio._execute(fn, opened[0])  # type: ignore[no-untyped-call,no-any-return]
    finally:
        # To its end even under an anyio cancel scope, which cancels every await anew: the
        # close waits for ``fn`` on the thread, so the caller may then remove the file.
        await uncancellable(aio.close())
