"""``transaction()`` on SQLite: the ``SqliteTransaction`` handle it yields, on the writer
inside the transaction; ``TransactionContext``, which takes a lease of the writer on entry (or,
inside a transaction of the same task, opens a SAVEPOINT of it) and keeps or undoes that level's
work on exit; and ``TaskTransactions``, which tells which transaction of a database the current
task is in (``database`` routes the task's calls there).

Tasks started inside a block inherit its transaction (asyncio copies context variables); the
nested blocks they open are tracked here as levels, so that the savepoints of two tasks never
interleave (see ``SqliteTransaction``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

from .._futures import resolve
from .._shield import uncancellable
from ..database import Database, Parameters, Row, Transaction, TransactionBlock
from ..errors import DatabaseError, PoolClosed, PoolTimeout, StoreError
from ._connection import Connection, end_savepoint, in_savepoint
from ._errors import translate
from ._queries import SqliteQueries, stream_rows
from ._writer_jobs import TransactionLease

if TYPE_CHECKING:
    from ._writer import Writer

__all__ = ["Level", "SqliteTransaction", "TaskTransactions", "TransactionContext"]

T = TypeVar("T")
P = ParamSpec("P")

_Tokens: TypeAlias = "tuple[Token[SqliteTransaction | None], Token[Level | None]]"
"""What ``TaskTransactions.enter`` returns and ``leave`` takes back."""

log = logging.getLogger("async_store.database")


class SqliteTransaction(SqliteQueries, Transaction):
    """The handle ``transaction()`` yields: the query methods, run on the writer inside the
    transaction, and ``transaction()`` for a nested SAVEPOINT.

    A statement whose caller is cancelled still runs to its end on the writer (stopping a
    write half-way could roll back other callers' work). So that it is not committed behind
    its caller's back, the (nested) transaction it ran in is marked: when that block ends
    normally it is rolled back instead, and raises :class:`StoreError`.

    Tasks started inside the block inherit it (asyncio copies context variables). They may
    query it together; a nested block is theirs alone while it is open: a call from a task
    outside it (one that was not started inside it) waits for it to end, up to
    ``acquire_timeout``, so the savepoints of two tasks never interleave.
    """

    __slots__ = (
        "_active",
        "_after_commit",
        "_connection",
        "_database",
        "_lease",
        "_levels",
        "_poisoned",
        "_savepoints",
        "_tasks",
        "_turns",
        "_writer",
    )

    def __init__(
        self,
        database: Database,
        tasks: TaskTransactions,
        writer: Callable[[], Writer],
        connection: Connection,
        lease: TransactionLease,
    ) -> None:
        self._database = database
        self._tasks = tasks
        self._writer = writer
        self._connection = connection
        self._lease = lease
        self._active = True
        self._savepoints = 0
        self._levels: list[Level] = []
        """The nested blocks open now, outermost first."""
        self._turns: asyncio.Future[None] | None = None
        """Resolved when a nested block ends (wakes the calls waiting for their turn)."""
        self._poisoned: int | None = None
        """The shallowest nesting depth a cancelled statement ran at, if any."""
        self._after_commit: list[Callable[[], object]] = []

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once this transaction commits (never if it rolls back); an
        exception from it is logged, not raised."""
        self._after_commit.append(callback)

    def _blocked(self, level: Level | None) -> bool:
        """Whether a caller at nesting ``level`` must wait: a nested block of another task is
        open inside it."""
        levels = self._levels
        return (
            self._active
            and self._lease.expired is None
            and (level is None or level.open)
            and (levels[-1] if levels else None) is not level
        )

    async def _turn(self, level: Level | None) -> bool:
        """Wait until a caller at ``level`` may go on (see ``_blocked``); False if that took
        longer than ``acquire_timeout``."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._database.config.acquire_timeout):
                while self._blocked(level):
                    if self._turns is None:
                        self._turns = loop.create_future()
                    await asyncio.shield(self._turns)
        except TimeoutError:
            return False
        return True

    async def _check(self) -> Connection:
        """The connection, once the current task may use it; raises when it never may."""
        level = self._tasks.level_in(self)
        if self._blocked(level) and not await self._turn(level):
            owner = self._levels[-1].task if self._levels else "?"
            raise PoolTimeout(
                f"{self._database.name}: waited acquire_timeout "
                f"({self._database.config.acquire_timeout} s) for a nested transaction() "
                f"block of task {owner!r} on this transaction to end; a task may use a "
                "transaction while another task's nested block is open in it only if it was "
                "started inside that block"
            )
        expired = self._lease.expired
        if expired is not None:
            raise type(expired)(str(expired))
        if not self._active:
            raise PoolClosed(f"{self._database.name}: this transaction has already ended")
        if level is not None and not level.open:
            raise StoreError(
                f"{self._database.name}: the nested transaction() block this task was started "
                "in has ended; start the task's own transaction() instead"
            )
        return self._connection

    def _next_turn(self) -> None:
        turns, self._turns = self._turns, None
        if turns is not None:
            resolve(turns, None)

    async def _read(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        connection = await self._check()
        self._lease.last_sql = sql
        try:
            return await connection.run(functools.partial(_still_open, fn, self._database.name))
        except asyncio.CancelledError:
            self._poison()
            raise
        except Exception as exc:
            raise translate(exc, database=self._database.name, sql=sql) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        # In a savepoint of its own, so a write that fails half-way (the last row of an
        # execute_many, the last stream of an append_many) leaves nothing behind in the
        # transaction, exactly as it would outside one.
        return await self._read(functools.partial(_write_in_savepoint, fn), sql)

    def _poison(self) -> None:
        depth = len(self._levels)
        if self._poisoned is None or depth < self._poisoned:
            self._poisoned = depth

    def _take_poison(self, depth: int) -> bool:
        """Whether a cancelled statement ran at ``depth`` or deeper; clears the mark, since
        the caller rolls that level back."""
        if self._poisoned is not None and self._poisoned >= depth:
            self._poisoned = None
            return True
        return False

    def _close_levels(self, depth: int) -> None:
        """Mark the nested blocks from ``depth`` on as ended (their tasks' calls then raise)."""
        for level in self._levels[depth:]:
            level.open = False
        del self._levels[depth:]

    async def _iterate(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        connection = await self._check()
        self._lease.last_sql = sql
        async for row in stream_rows(connection, sql, parameters, chunk_size, on_reader=False):
            yield row

    def transaction(self, *, force_rollback: bool = False) -> TransactionContext:
        """A nested SAVEPOINT: its work is undone alone if its block raises (or, with
        ``force_rollback=True``, whenever it ends)."""
        return TransactionContext(
            self._database, self._tasks, self._writer, force_rollback=force_rollback
        )


class TaskTransactions:
    """Which transaction of one database the current task is in, and which nested block of it.
    Context variables: a task started inside a block inherits both."""

    __slots__ = ("_level", "_tx")

    def __init__(self, name: str) -> None:
        self._tx: ContextVar[SqliteTransaction | None] = ContextVar(
            f"async_store.{name}.transaction", default=None
        )
        self._level: ContextVar[Level | None] = ContextVar(
            f"async_store.{name}.savepoint", default=None
        )

    def current(self) -> SqliteTransaction | None:
        """The transaction the current task is in, while it is open."""
        tx = self._tx.get()
        return tx if tx is not None and tx._active else None

    def level_in(self, tx: SqliteTransaction) -> Level | None:
        """The nested block of ``tx`` the current task is in (``None``: none of them)."""
        level = self._level.get()
        return level if level is not None and level.tx is tx else None

    def enter(self, tx: SqliteTransaction) -> _Tokens:
        return self._tx.set(tx), self._level.set(None)

    def leave(self, tokens: _Tokens) -> None:
        self._tx.reset(tokens[0])
        self._level.reset(tokens[1])

    def enter_level(self, level: Level) -> Token[Level | None]:
        return self._level.set(level)

    def leave_level(self, token: Token[Level | None]) -> None:
        self._level.reset(token)


class Level:
    """One nested ``transaction()`` block: its savepoint, the task that opened it, and
    whether it is still open."""

    __slots__ = ("name", "open", "task", "tx")

    def __init__(self, tx: SqliteTransaction, name: str, task: str) -> None:
        self.tx = tx
        self.name = name
        self.task = task
        self.open = True


async def _end_turn(
    tx: SqliteTransaction, level: Level | None
) -> tuple[bool, asyncio.CancelledError | None]:
    """For a block at ``level`` that ends: wait for the nested blocks of other tasks inside it
    to end first. Returns whether they did within ``acquire_timeout``, and a cancellation that
    arrived meanwhile (the block then ends rolled back, and raises it afterwards)."""
    try:
        return not tx._blocked(level) or await tx._turn(level), None
    except asyncio.CancelledError as exc:
        return False, exc


class TransactionContext(TransactionBlock):
    """What ``transaction()`` returns: on entry it takes a lease of the writer (see
    ``TransactionLease``) or, inside a transaction of the same task, opens a SAVEPOINT of it;
    on exit it keeps or undoes that level's work."""

    __slots__ = (
        "_database",
        "_force_rollback",
        "_lease",
        "_level",
        "_level_token",
        "_started",
        "_tasks",
        "_tokens",
        "_tx",
        "_writer",
    )

    def __init__(
        self,
        database: Database,
        tasks: TaskTransactions,
        writer: Callable[[], Writer],
        *,
        force_rollback: bool = False,
    ) -> None:
        self._database = database
        self._tasks = tasks
        self._writer = writer
        self._force_rollback = force_rollback
        """The writer to lease; raises :class:`PoolClosed` when the database is not open."""
        self._lease: TransactionLease | None = None
        self._tx: SqliteTransaction | None = None
        self._level: Level | None = None
        self._tokens: _Tokens | None = None
        self._level_token: Token[Level | None] | None = None
        self._started = 0.0

    async def __aenter__(self) -> SqliteTransaction:
        outer = self._tasks.current()
        if outer is not None:
            return await self._enter_nested(outer)
        writer = self._writer()
        self._started = time.perf_counter()
        self._lease = await writer.lease()
        self._tx = SqliteTransaction(
            self._database, self._tasks, self._writer, writer.connection, self._lease
        )
        self._tokens = self._tasks.enter(self._tx)
        return self._tx

    async def _enter_nested(self, outer: SqliteTransaction) -> SqliteTransaction:
        connection = await outer._check()
        outer._savepoints += 1
        name = f"async_store_nested_{id(outer):x}_{outer._savepoints}"
        task = asyncio.current_task()
        level = Level(outer, name, task.get_name() if task is not None else "?")
        # Open before the SAVEPOINT is sent: from now on other tasks' calls wait for its end.
        outer._levels.append(level)
        try:
            await uncancellable(connection.run(lambda conn: conn.execute(f"SAVEPOINT {name}")))
        except BaseException as exc:
            outer._close_levels(outer._levels.index(level))
            outer._next_turn()
            if isinstance(exc, Exception):
                raise translate(exc, database=self._database.name, sql="SAVEPOINT") from exc
            raise
        self._tx = outer
        self._level = level
        self._level_token = self._tasks.enter_level(level)
        return outer

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._end(keep=exc_type is None and not self._force_rollback)

    async def _end(self, *, keep: bool) -> None:
        if self._tx is None:
            raise StoreError(f"{self._database.name}: this transaction() block was never started")
        if self._level is not None:
            level, self._level = self._level, None
            await self._exit_nested(level, keep=keep)
        else:
            if self._lease is None:
                raise StoreError(f"{self._database.name}: this transaction() block has ended")
            try:
                await self._exit_outer(keep=keep)
            finally:
                self._lease = None

    def __await__(self) -> Generator[Any, None, TransactionContext]:
        return self.start().__await__()

    async def start(self) -> TransactionContext:
        """Begin the block without ``async with`` (``tx = await db.transaction()``, as in
        encode/databases); end it with :meth:`commit` or :meth:`rollback`."""
        if self._tx is not None:
            raise StoreError(f"{self._database.name}: this transaction() block was started already")
        await self.__aenter__()
        return self

    async def commit(self) -> None:
        """End a block begun with ``await``/:meth:`start`, keeping its work."""
        await self._end(keep=True)

    async def rollback(self) -> None:
        """End a block begun with ``await``/:meth:`start`, undoing its work."""
        await self._end(keep=False)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """``@db.transaction()``: every call of ``fn`` runs in a block of its own."""
        database, force_rollback = self._database, self._force_rollback

        @functools.wraps(fn)
        async def in_transaction(*args: P.args, **kwargs: P.kwargs) -> T:
            async with database.transaction(force_rollback=force_rollback):
                return await fn(*args, **kwargs)

        return in_transaction

    async def _exit_nested(self, level: Level, *, keep: bool) -> None:
        tx = self._tx
        assert tx is not None
        assert self._level_token is not None
        self._tasks.leave_level(self._level_token)
        # Nested blocks of tasks started inside this one end first (they are part of it).
        waited, cancelled = await _end_turn(tx, level)
        try:
            expired = tx._lease.expired
            if expired is not None:  # the writer rolled the whole transaction back already
                if keep:
                    raise type(expired)(str(expired))
                return
            if not level.open or not tx._active:  # the block around it ended first
                if keep:
                    raise StoreError(
                        f"{self._database.name}: this nested transaction() block ended after "
                        "the block around it (of another task), which took its work along"
                    )
                return
            depth = tx._levels.index(level)
            cancelled_inside = tx._take_poison(depth + 1)
            tx._close_levels(depth)
            await self._close_savepoint(
                tx, level.name, keep=keep and waited and not cancelled_inside
            )
        finally:
            tx._next_turn()
        if cancelled is not None:
            raise cancelled
        if keep and not waited:
            raise StoreError(
                f"{self._database.name}: a nested transaction() block of another task started "
                f"inside this one was still open after acquire_timeout "
                f"({self._database.config.acquire_timeout} s); both were rolled back"
            )
        if keep and cancelled_inside:
            raise _cancelled_statement(self._database.name)

    async def _exit_outer(self, *, keep: bool) -> None:
        tx, lease = self._tx, self._lease
        assert tx is not None
        assert lease is not None
        database = self._database
        # Nested blocks of tasks started inside the transaction end first (they are part of it).
        waited, cancelled = await _end_turn(tx, None)
        assert self._tokens is not None
        self._tasks.leave(self._tokens)
        tx._active = False
        tx._close_levels(0)
        tx._next_turn()
        cancelled_inside = tx._take_poison(0)
        lease.finished.set_result(keep and waited and not cancelled_inside)
        try:
            if not (keep and waited and not cancelled_inside):
                with contextlib.suppress(StoreError):
                    await uncancellable(lease.committed)
            else:
                await asyncio.shield(lease.committed)
        except StoreError as error:
            database.metrics.count_error(error)
            raise
        finally:
            database.metrics.record("transaction", time.perf_counter() - self._started)
        if cancelled is not None:
            raise cancelled
        if not keep:
            return
        if lease.expired is not None:
            database.metrics.count_error(lease.expired)
            raise type(lease.expired)(str(lease.expired))
        if not waited:
            raise StoreError(
                f"{database.name}: a nested transaction() block of another task started inside "
                f"this transaction was still open after acquire_timeout "
                f"({database.config.acquire_timeout} s); the transaction was rolled back"
            )
        if cancelled_inside:
            raise _cancelled_statement(database.name)
        for callback in tx._after_commit:
            try:
                callback()
            except Exception:
                log.exception("%s: a callback after commit failed", database.name)

    async def _close_savepoint(self, tx: SqliteTransaction, name: str, *, keep: bool) -> None:
        try:
            await uncancellable(
                tx._connection.run(functools.partial(end_savepoint, name=name, keep=keep))
            )
        except Exception as exc:
            raise translate(exc, database=self._database.name, sql=f"RELEASE {name}") from exc


def _still_open(fn: Callable[[sqlite3.Connection], T], name: str, conn: sqlite3.Connection) -> T:
    """Run ``fn`` in the block's transaction, unless SQLite has rolled it back (after a disk
    full or I/O error): run then, a write would commit on its own, outside the block."""
    if not conn.in_transaction:
        raise DatabaseError(
            f"{name}: SQLite rolled this transaction back after an earlier error (disk full, "
            "I/O error, ...); nothing more can run in it: end the block"
        )
    return fn(conn)


def _write_in_savepoint(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    return in_savepoint(conn, "async_store_write", fn)


def _cancelled_statement(name: str) -> StoreError:
    return StoreError(
        f"{name}: a statement of this transaction was cancelled while it ran; the transaction "
        "was rolled back instead of committing work its caller gave up on"
    )
