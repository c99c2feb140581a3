"""``read()``: the ``ReadSnapshot`` handle it yields (reads on one reader, inside one read
transaction) and ``ReadContext``, which reserves the reader on entry and gives it back on exit.
``ReadSnapshot`` is re-exported by ``async_store.database``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from ..database import Database, Parameters, ReadSnapshot, Row
from ..errors import PoolClosed, ReadOnlyQuery
from ._connection import Connection
from ._errors import translate
from ._queries import SqliteQueries, stream_rows
from ._transaction import SqliteTransaction, TaskTransactions

if TYPE_CHECKING:
    from ._readers import ReaderPool

__all__ = ["ReadContext", "SqliteReadSnapshot"]

T = TypeVar("T")


class SqliteReadSnapshot(SqliteQueries, ReadSnapshot):
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
        raise ReadOnlyQuery(
            f"{self._database.name}: read() is read-only; use execute() or transaction() "
            f"[sql: {sql}]"
        )

    def _iterate(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        return stream_rows(self._connection, sql, parameters, chunk_size, on_reader=True)


class ReadContext:
    """What ``read()`` returns: on entry it reserves a reader and begins a read transaction on
    it or, inside a transaction of the same task, yields that transaction; on exit it gives the
    reader back, which ends the read transaction."""

    __slots__ = ("_connection", "_database", "_pool", "_readers", "_snapshot", "_tasks")

    def __init__(
        self,
        database: Database,
        tasks: TaskTransactions,
        readers: Callable[[], ReaderPool],
    ) -> None:
        self._database = database
        self._tasks = tasks
        self._readers = readers
        """The reader pool; raises :class:`PoolClosed` when the database is not open."""
        self._pool: ReaderPool | None = None
        self._connection: Connection | None = None
        self._snapshot: SqliteReadSnapshot | SqliteTransaction | None = None

    async def __aenter__(self) -> SqliteReadSnapshot | SqliteTransaction:
        database = self._database
        outer = self._tasks.current()
        if outer is not None:
            self._snapshot = outer
            return outer
        readers = self._pool = self._readers()
        connection = await readers.acquire()
        try:
            await connection.run(lambda conn: conn.execute("BEGIN"))
        except BaseException as exc:
            await readers.release(connection)
            if isinstance(exc, Exception):
                raise translate(exc, database=database.name, sql="BEGIN") from exc
            raise
        self._connection = connection
        self._snapshot = SqliteReadSnapshot(database, connection)
        return self._snapshot

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, snapshot = self._connection, self._snapshot
        if connection is None or not isinstance(snapshot, SqliteReadSnapshot):
            return
        snapshot._active = False
        assert self._pool is not None
        await self._pool.release(connection)
