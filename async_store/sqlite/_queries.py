"""The query methods every handle shares (``Database``, ``Transaction``, ``ReadSnapshot``),
named as in encode/databases, the functions that run them on a connection's thread, and
``stream_rows``, the row stream behind ``iterate()`` on a reader, a transaction or a snapshot."""

from __future__ import annotations

import re
import sqlite3
from abc import abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeVar

from .._shield import uncancellable
from .._sqlalchemy import CoreRow, Prepared, Shape, Statements
from ..database import Column, Parameters, Query, QueryMethods, Row
from ..errors import QueryError, ReadOnlyQuery
from ._connection import MANAGED_PRAGMAS, Connection
from ._errors import translate
from ._parameters import adapted, adapted_rows

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import Dialect

__all__ = ["STATEMENTS", "SqliteQueries", "stream_rows"]

T = TypeVar("T")


DEFAULT_CHUNK_SIZE = 256
"""Rows fetched per hop by ``iterate()``: large enough to amortise the hop, small enough to keep
memory flat on a million-row scan."""


class SqliteQueries(QueryMethods):
    """``fetch_all``, ``fetch_one``, ``fetch_val``, ``execute``, ``execute_many``, ``iterate`` on
    SQLite connections, through the three hooks each handle implements."""

    __slots__ = ()

    @abstractmethod
    def _read(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> Awaitable[T]:
        """Run a reading function on a suitable connection."""

    @abstractmethod
    async def _write(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        """Run a writing function as (part of) a transaction."""

    @abstractmethod
    def _iterate(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        """Stream the rows of a query."""

    def _fetch(
        self, fn: Callable[[sqlite3.Connection], T], sql: str, writes: bool = False
    ) -> Awaitable[T]:
        # A statement that writes (INSERT ... RETURNING) runs on the writer, as its own
        # transaction or in the caller's. One behind a WITH may write or not: the reader
        # tells, its query_only stopping a write before it changed anything. A plain read
        # gets the reader pool's own awaitable, no coroutine around it (the hot path).
        if writes:
            return self._write(fn, sql)
        leading = _LEADING.match(sql)
        if leading is None:
            return self._read(fn, sql)
        if leading.group(1).upper() == "WITH":
            return self._read_or_write(fn, sql)
        return self._write(fn, sql)

    async def _read_or_write(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        try:
            return await self._read(fn, sql)
        except ReadOnlyQuery:
            return await self._write(fn, sql)

    async def fetch_all(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        values: Parameters | None = None,
    ) -> list[Row]:
        """Run a query and return every row (``[]`` when none).

        Raises :class:`QueryError` for wrong SQL or parameters."""
        if values is not None:
            parameters = _values(parameters, values)
        if isinstance(query, str):
            params = adapted(parameters)
            _check_sql(query)
            return await self._fetch(lambda conn: conn.execute(query, params).fetchall(), query)
        core = STATEMENTS.prepare(query, parameters)
        rows = await self._fetch(lambda conn: _core_rows(conn, core), core.sql, core.shape.writes)
        return rows  # type: ignore[return-value]  # CoreRow is a Row

    async def fetch_one(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        values: Parameters | None = None,
    ) -> Row | None:
        """Run a query and return its first row, or ``None`` when it returns no row."""
        if values is not None:
            parameters = _values(parameters, values)
        if isinstance(query, str):
            params = adapted(parameters)
            _check_sql(query)
            return await self._fetch(lambda conn: _first_row(conn, query, params), query)
        core = STATEMENTS.prepare(query, parameters)
        rows = await self._fetch(
            lambda conn: _core_rows(conn, core, 1), core.sql, core.shape.writes
        )
        return rows[0] if rows else None

    async def fetch_val(
        self,
        query: Query,
        parameters: Parameters | None = None,
        column: Column = 0,
        *,
        values: Parameters | None = None,
    ) -> Any:
        """Run a query and return one column of its first row (``None`` when no row)."""
        if values is not None:
            parameters = _values(parameters, values)
        row: Any
        if isinstance(query, str):
            params = adapted(parameters)
            _check_sql(query)
            sql = query
            row = await self._fetch(lambda conn: _first_row(conn, sql, params), sql)
        else:
            core = STATEMENTS.prepare(query, parameters)
            sql = core.sql
            rows = await self._fetch(lambda conn: _core_rows(conn, core, 1), sql, core.shape.writes)
            row = rows[0] if rows else None
        if row is None:
            return None
        try:
            return row[column]
        except (IndexError, KeyError):
            raise QueryError(f"no column {column!r} in the result of: {sql}") from None

    async def execute(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        values: Parameters | None = None,
    ) -> int | None:
        """Run one statement on the writer, committed (as its own transaction unless inside
        ``transaction()``). Returns the rowid of the row an ``INSERT``/``REPLACE`` wrote, else
        the number of rows the statement changed (0 for an insert that was ignored).

        Raises :class:`QueryError`, :class:`IntegrityViolation`, :class:`DatabaseFull`, ..."""
        if values is not None:
            parameters = _values(parameters, values)
        if isinstance(query, str):
            sql, params = query, adapted(parameters)
            _check_sql(sql)
            inserts = _INSERT.match(sql) is not None
        else:
            core = STATEMENTS.prepare(query, parameters)
            sql, params = core.sql, core.values
            inserts = core.shape.inserts or _INSERT.match(sql) is not None
        return await self._write(lambda conn: _execute(conn, sql, params, inserts), sql)

    async def execute_many(
        self,
        query: Query,
        parameters: Iterable[Parameters] | None = None,
        *,
        values: Iterable[Parameters] | None = None,
    ) -> int:
        """Run one statement for each parameter set, all in one transaction; return the number
        of rows changed. Either every row is written or none is."""
        if values is not None:
            parameters = _values(parameters, values)
        if parameters is None:
            raise QueryError("execute_many() takes a list of parameter sets")
        if isinstance(query, str):
            _check_sql(query)
        if isinstance(parameters, str | bytes) or not isinstance(parameters, Iterable):
            raise QueryError(
                f"execute_many() takes a list of parameter sets, not {type(parameters).__name__}"
            )
        rows = parameters if isinstance(parameters, list | tuple) else list(parameters)
        if rows and isinstance(rows[0], str | bytes):
            raise QueryError(
                "execute_many() takes a list of parameter sets; its first item is a "
                f"{type(rows[0]).__name__}"
            )
        if isinstance(query, str):
            sql, ready = query, adapted_rows(rows)
        else:
            shape, ready = STATEMENTS.prepare_many(query, rows)
            sql = shape.sql
        return await self._write(lambda conn: conn.executemany(sql, ready).rowcount, sql)

    def iterate(
        self,
        query: Query,
        parameters: Parameters | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        values: Parameters | None = None,
    ) -> AsyncGenerator[Row, None]:
        """Stream the rows of a query: ``async for row in db.iterate(...)``. The connection is
        held until the iteration ends (or the iterator is closed); rows arrive ``chunk_size`` per
        hop, so memory stays flat however many rows there are."""
        if values is not None:
            parameters = _values(parameters, values)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise QueryError(f"chunk_size must be an int of at least 1, not {chunk_size!r:.40}")
        if isinstance(query, str):
            params = adapted(parameters)
            _check_sql(query)
            return self._iterate(query, params, chunk_size)
        core = STATEMENTS.prepare(query, parameters)
        return _core_stream(self._iterate(core.sql, core.values, chunk_size), core.shape)


# PRAGMAs a query may read but not set: those set and verified on every connection, the ones
# migrations own (user_version), one that would lock every reader out (locking_mode), and the two
# that let a statement corrupt the file (writable_schema, schema_version).
_REFUSED_PRAGMAS = MANAGED_PRAGMAS | {
    "locking_mode",
    "schema_version",
    "user_version",
    "writable_schema",
}

# Statements that would take the connection's transaction or configuration away from the pool.
# Python's sqlite3 runs one statement per call, so its first keyword (after comments) says what
# it is. Matching misses cost one failed regex step for the usual SELECT/INSERT/UPDATE/DELETE.
# Possessive: whitespace and comments are never given back, so a failed match is linear.
_GAP = r"(?:\s++|--[^\n]*+\n?|/\*(?:[^*]|\*(?!/))*+(?:\*/)?)*+"
_CONTROL = re.compile(
    # EXPLAIN too: SQLite applies a flag PRAGMA while compiling, so EXPLAIN PRAGMA sets it.
    rf"{_GAP}(?:EXPLAIN\b{_GAP}(?:QUERY\b{_GAP}PLAN\b{_GAP})?)?(BEGIN|COMMIT|END|ROLLBACK|PRAGMA|SAVEPOINT|RELEASE|ATTACH|DETACH|VACUUM)\b",
    re.IGNORECASE | re.DOTALL,
)
_NAME = r"(?:\"(?:[^\"]|\"\")*\"|\[[^\]]*\]|`(?:[^`]|``)*`|'(?:[^']|'')*'|[A-Za-z_][A-Za-z0-9_$]*)"
_PRAGMA_SET = re.compile(rf"{_GAP}({_NAME})(?:{_GAP}\.{_GAP}({_NAME}))?{_GAP}[=(]", re.DOTALL)
_ROLLBACK_TO = re.compile(rf"{_GAP}(?:TRANSACTION{_GAP})?TO\b", re.IGNORECASE | re.DOTALL)
_SAVEPOINT_NAME = re.compile(rf"{_GAP}(?:SAVEPOINT\b{_GAP})?({_NAME})", re.IGNORECASE | re.DOTALL)


_INSERT = re.compile(rf"{_GAP}(?:INSERT|REPLACE)\b", re.IGNORECASE)
_LEADING = re.compile(rf"{_GAP}(INSERT|REPLACE|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


def _check_sql(query: object) -> None:
    """Refuse what is not SQL text, and the statements that would break the pool: transaction
    control (the writer owns the transaction, and a reader left inside one would serve a stale
    snapshot), savepoints under the library's own names, and setting a PRAGMA the library set
    and verified when the connection opened."""
    if not isinstance(query, str):
        raise QueryError(f"the SQL must be a str, not {type(query).__name__}")
    match = _CONTROL.match(query)
    if match is None:
        return
    keyword = match.group(1).upper()
    rest = query[match.end() :]
    if keyword == "PRAGMA":
        setting = _PRAGMA_SET.match(rest)
        if setting is not None:
            name = _unquote(setting.group(2) or setting.group(1)).lower()
            if name in _REFUSED_PRAGMAS:
                raise QueryError(
                    f"PRAGMA {name} cannot be set through a query: async_store sets it on every "
                    "connection, or owns it (user_version, locking_mode), or it can corrupt the "
                    "file; the pool's settings are in DatabaseConfig"
                )
        return
    if keyword in ("ATTACH", "DETACH", "VACUUM"):
        raise QueryError(
            f"{keyword} cannot be sent as a query: it would change one pooled connection (or "
            "write a file) behind the pool's back; use sql.backup() for a copy"
        )
    rollback_to = _ROLLBACK_TO.match(rest) if keyword == "ROLLBACK" else None
    if rollback_to is not None:
        rest = rest[rollback_to.end() :]
    if keyword in ("SAVEPOINT", "RELEASE") or rollback_to is not None:
        name_match = _SAVEPOINT_NAME.match(rest)
        if name_match is not None and _unquote(name_match.group(1)).lower().startswith(
            "async_store"
        ):
            raise QueryError(f"savepoint names starting with async_store are reserved: {query!r}")
        return
    raise QueryError(
        f"{keyword} cannot be sent as a query: the library begins, commits and rolls back "
        "transactions itself; use transaction() for a transaction and a nested transaction() "
        "for a savepoint"
    )


def _unquote(name: str) -> str:
    if name[:1] in ('"', "`", "'"):
        quote = name[0]
        return name[1:-1].replace(quote * 2, quote)
    if name[:1] == "[":
        return name[1:-1]
    return name


def _values(parameters: T | None, values: T) -> T:
    """``values=``, the keyword encode/databases named the parameters with."""
    if parameters is not None:
        raise QueryError("give the parameters once: positionally or as values=, not both")
    return values


def _first_row(conn: sqlite3.Connection, query: str, params: Parameters) -> Row | None:
    cursor = conn.execute(query, params)
    try:
        row: Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def _execute(conn: sqlite3.Connection, query: str, params: Parameters, inserts: bool) -> int | None:
    cursor = conn.execute(query, params)
    # sqlite3 reports the connection's last insert rowid after any statement; only an insert
    # that wrote a row owns it. Otherwise: the rows changed (0 for an insert that was ignored,
    # as encode/databases returns on SQLite; -1, for a statement that changes no table, is 0).
    changed = max(cursor.rowcount, 0)
    return cursor.lastrowid if inserts and changed > 0 else changed


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
        await uncancellable(connection.run(lambda conn: cursor.close()))


def _sqlalchemy_dialect() -> Dialect:
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    # The sqlite3 module tells the dialect which SQLite it compiles for (RETURNING from 3.35).
    return SQLiteDialect_pysqlite(paramstyle="qmark", dbapi=sqlite3)


def _adapted_values(values: list[Any]) -> list[Any]:
    ready = adapted(values)
    return ready if isinstance(ready, list) else list(ready)


STATEMENTS = Statements(_sqlalchemy_dialect, check=_check_sql, adapt=_adapted_values)
"""SQLAlchemy Core statements compiled for SQLite, a shape at a time."""


def _core_rows(conn: sqlite3.Connection, core: Prepared, size: int | None = None) -> list[CoreRow]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: the statement's row is built from them here
    try:
        cursor.execute(core.sql, core.values)
        raw = cursor.fetchall() if size is None else cursor.fetchmany(size)
        return core.shape.rows(lambda: [column[0] for column in cursor.description or ()], raw)
    finally:
        cursor.close()


async def _core_stream(rows: AsyncGenerator[Row, None], shape: Shape) -> AsyncGenerator[Row, None]:
    async with aclosing(rows):
        async for row in rows:
            yield shape.rows(row.keys, (tuple(row),))[0]
