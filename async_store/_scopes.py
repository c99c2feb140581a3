"""The scopes ``Database`` opens for a block of calls, and the handles they yield:
``transaction()`` yields a ``Transaction`` on the writer (a nested ``transaction()`` is a
SAVEPOINT of it), ``read()`` a ``ReadSnapshot`` on one reader. ``Transaction`` and
``ReadSnapshot`` are re-exported by ``async_store.database``.

``stream_rows``, the row stream behind ``iterate()``, lives here too: a reader, a transaction and
a snapshot all stream through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from ._connection import Connection, Row
from ._queries import Parameters, QueryMethods
from ._shield import finish
from ._writer_jobs import TransactionLease
from .errors import PoolClosed, StoreError, translate

if TYPE_CHECKING:
    # For annotations only: ``database`` imports this module to open its scopes.
    from .database import Database

__all__ = ["ReadContext", "ReadSnapshot", "Transaction", "TransactionContext", "stream_rows"]

T = TypeVar("T")


class Transaction(QueryMethods):
    """The handle ``transaction()`` yields: the query methods, run on the writer inside the
    transaction, and ``transaction()`` for a nested SAVEPOINT.

    A statement whose caller is cancelled still runs to its end on the writer (stopping a
    write half-way could roll back other callers' work). So that it is not committed behind
    its caller's back, the (nested) transaction it ran in is marked: when that block ends
    normally it is rolled back instead, and raises :class:`StoreError`.
    """

    __slots__ = ("_active", "_connection", "_database", "_depth", "_poisoned", "_savepoints")

    def __init__(self, database: Database, connection: Connection) -> None:
        self._database = database
        self._connection = connection
        self._active = True
        self._savepoints = 0
        self._depth = 0
        self._poisoned: int | None = None
        """The shallowest nesting depth a cancelled statement ran at, if any."""

    def _check(self) -> Connection:
        if not self._active:
            raise PoolClosed(f"{self._database.name}: this transaction has already ended")
        return self._connection

    async def _read(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        connection = self._check()
        try:
            return await connection.run(fn)
        except asyncio.CancelledError:
            self._poison()
            raise
        except Exception as exc:
            raise translate(exc, database=self._database.name, sql=sql) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        # In a savepoint of its own, so a write that fails half-way (the last row of an
        # execute_many, the last stream of an append_many) leaves nothing behind in the
        # transaction, exactly as it would outside one.
        return await self._read(functools.partial(_in_savepoint, fn), sql)

    def _poison(self) -> None:
        if self._poisoned is None or self._depth < self._poisoned:
            self._poisoned = self._depth

    def _take_poison(self, depth: int) -> bool:
        """Whether a cancelled statement ran at ``depth`` or deeper; clears the mark, since
        the caller rolls that level back."""
        if self._poisoned is not None and self._poisoned >= depth:
            self._poisoned = None
            return True
        return False

    def _iterate(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        return stream_rows(self._check(), sql, parameters, chunk_size, on_reader=False)

    def transaction(self) -> TransactionContext:
        """A nested SAVEPOINT: its work is undone alone if its block raises."""
        return TransactionContext(self._database)


class ReadSnapshot(QueryMethods):
    """The handle ``read()`` yields: reads on one reader, inside one read transaction."""

    __slots__ = ("_active", "_connection", "_database")

    def __init__(self, database: Database, connection: Connection) -> None:
        self._database = database
        self._connection = connection
        self._active = True

    async def _read(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        if not self._active:
            raise PoolClosed(f"{self._database.name}: this read snapshot has already ended")
        try:
            return await self._connection.run(fn)
        except Exception as exc:
            raise translate(exc, database=self._database.name, sql=sql, on_reader=True) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        raise StoreError(
            f"{self._database.name}: read() is read-only; use execute() or transaction() "
            f"[sql: {sql}]"
        )

    def _iterate(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        return stream_rows(self._connection, sql, parameters, chunk_size, on_reader=True)


class TransactionContext:
    """What ``transaction()`` returns: on entry it takes a lease of the writer (see
    ``TransactionLease``) or, inside a transaction of the same task, opens a SAVEPOINT of it;
    on exit it keeps or undoes that level's work."""

    __slots__ = ("_database", "_lease", "_savepoint", "_started", "_token", "_tx")

    def __init__(self, database: Database) -> None:
        self._database = database
        self._lease: TransactionLease | None = None
        self._tx: Transaction | None = None
        self._savepoint: str | None = None
        self._token: object = None
        self._started = 0.0

    async def __aenter__(self) -> Transaction:
        database = self._database
        outer = database._current.get()
        if outer is not None and outer._active:
            connection = outer._check()
            outer._savepoints += 1
            name = f"async_store_nested_{id(outer):x}_{outer._savepoints}"
            await finish(connection.run(lambda conn: conn.execute(f"SAVEPOINT {name}")))
            self._savepoint = name
            self._tx = outer
            outer._depth += 1
            return outer
        writer = database._open_parts()[0]
        self._started = time.perf_counter()
        self._lease = await writer.lease()
        self._tx = Transaction(database, writer.connection)
        self._token = database._current.set(self._tx)
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        assert tx is not None
        keep = exc_type is None
        if self._savepoint is not None:
            depth = tx._depth
            tx._depth -= 1
            cancelled_inside = tx._take_poison(depth)
            await self._close_savepoint(tx, self._savepoint, keep=keep and not cancelled_inside)
            if keep and cancelled_inside:
                raise _cancelled_statement(self._database.name)
            return
        lease = self._lease
        assert lease is not None
        self._database._current.reset(self._token)  # type: ignore[arg-type]
        tx._active = False
        cancelled_inside = tx._take_poison(0)
        lease.finished.set_result(keep and not cancelled_inside)
        if keep and cancelled_inside:
            with contextlib.suppress(StoreError):
                await finish(lease.committed)
            self._database.metrics.record("transaction", time.perf_counter() - self._started)
            raise _cancelled_statement(self._database.name)
        try:
            if keep:
                await asyncio.shield(lease.committed)
            else:
                with contextlib.suppress(StoreError):
                    await finish(lease.committed)
        except StoreError as error:
            self._database.metrics.count_error(error)
            raise
        finally:
            self._database.metrics.record("transaction", time.perf_counter() - self._started)

    async def _close_savepoint(self, tx: Transaction, name: str, *, keep: bool) -> None:
        def close(conn: sqlite3.Connection) -> None:
            if not keep:
                conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")

        try:
            await finish(tx._connection.run(close))
        except Exception as exc:
            raise translate(exc, database=self._database.name, sql=f"RELEASE {name}") from exc


class ReadContext:
    """What ``read()`` returns: on entry it reserves a reader and begins a read transaction on
    it or, inside a transaction of the same task, yields that transaction; on exit it gives the
    reader back, which ends the read transaction."""

    __slots__ = ("_connection", "_database", "_snapshot")

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: Connection | None = None
        self._snapshot: ReadSnapshot | Transaction | None = None

    async def __aenter__(self) -> ReadSnapshot | Transaction:
        database = self._database
        outer = database._current.get()
        if outer is not None and outer._active:
            self._snapshot = outer
            return outer
        readers = database._open_parts()[1]
        connection = await readers.acquire()
        try:
            await connection.run(lambda conn: conn.execute("BEGIN"))
        except BaseException as exc:
            await readers.release(connection)
            if isinstance(exc, Exception):
                raise translate(exc, database=database.name, sql="BEGIN") from exc
            raise
        self._connection = connection
        self._snapshot = ReadSnapshot(database, connection)
        return self._snapshot

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, snapshot = self._connection, self._snapshot
        if connection is None or not isinstance(snapshot, ReadSnapshot):
            return
        snapshot._active = False
        readers = self._database._readers
        assert readers is not None
        await readers.release(connection)


async def stream_rows(
    connection: Connection,
    sql: str,
    parameters: Parameters,
    chunk_size: int,
    *,
    on_reader: bool,
) -> AsyncGenerator[Row, None]:
    """Yield the rows of ``sql`` run on ``connection``, fetched ``chunk_size`` at a time; errors
    come back translated (``on_reader`` says whether the connection is a reader), and the cursor
    is closed however the iteration ends."""
    name = connection.database
    try:
        cursor = await connection.run(lambda conn: conn.execute(sql, parameters))
    except Exception as exc:
        raise translate(exc, database=name, sql=sql, on_reader=on_reader) from exc
    try:
        while True:
            try:
                rows = await connection.run(lambda conn: cursor.fetchmany(chunk_size))
            except Exception as exc:
                raise translate(exc, database=name, sql=sql, on_reader=on_reader) from exc
            for row in rows:
                yield row
            if len(rows) < chunk_size:
                return
    finally:
        await finish(connection.run(lambda conn: cursor.close()))


def _in_savepoint(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    conn.execute("SAVEPOINT async_store_write")
    try:
        result = fn(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK TO async_store_write")
            conn.execute("RELEASE async_store_write")
        raise
    conn.execute("RELEASE async_store_write")
    return result


def _cancelled_statement(name: str) -> StoreError:
    return StoreError(
        f"{name}: a statement of this transaction was cancelled while it ran; the transaction "
        "was rolled back instead of committing work its caller gave up on"
    )
