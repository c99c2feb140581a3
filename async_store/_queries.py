"""The query methods every handle shares (``Database``, ``Transaction``, ``ReadSnapshot``),
named as in encode/databases, and the functions that run them on a connection's thread."""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

from ._connection import Row
from .errors import QueryError

__all__ = ["Parameters", "QueryMethods"]

T = TypeVar("T")

Parameters: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Positional parameters for ``?`` placeholders, or a mapping for ``:name`` placeholders."""

_INSERT = re.compile(r"\s*(?:--[^\n]*\n\s*)*(?:insert|replace)\b", re.IGNORECASE)

DEFAULT_CHUNK_SIZE = 256
"""Rows fetched per hop by ``iterate()``: large enough to amortise the hop, small enough to keep
memory flat on a million-row scan."""


class QueryMethods(ABC):
    """``fetch_all``, ``fetch_one``, ``fetch_val``, ``execute``, ``execute_many``, ``iterate``."""

    __slots__ = ()

    @abstractmethod
    async def _read(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        """Run a reading function on a suitable connection."""

    @abstractmethod
    async def _write(self, fn: Callable[[sqlite3.Connection], T], sql: str) -> T:
        """Run a writing function as (part of) a transaction."""

    @abstractmethod
    def _iterate(
        self, sql: str, parameters: Parameters, chunk_size: int
    ) -> AsyncGenerator[Row, None]:
        """Stream the rows of a query."""

    async def fetch_all(self, query: str, parameters: Parameters | None = None) -> list[Row]:
        """Run a query and return every row (``[]`` when none).

        Raises :class:`QueryError` for wrong SQL or parameters."""
        params = _checked(parameters)
        return await self._read(lambda conn: conn.execute(query, params).fetchall(), query)

    async def fetch_one(self, query: str, parameters: Parameters | None = None) -> Row | None:
        """Run a query and return its first row, or ``None`` when it returns no row."""
        params = _checked(parameters)
        return await self._read(lambda conn: _first_row(conn, query, params), query)

    async def fetch_val(
        self, query: str, parameters: Parameters | None = None, column: int | str = 0
    ) -> Any:
        """Run a query and return one column of its first row (``None`` when no row)."""
        params = _checked(parameters)
        row = await self._read(lambda conn: _first_row(conn, query, params), query)
        if row is None:
            return None
        try:
            return row[column]
        except (IndexError, KeyError):
            raise QueryError(f"no column {column!r} in the result of: {query}") from None

    async def execute(self, query: str, parameters: Parameters | None = None) -> int | None:
        """Run one statement on the writer, committed (as its own transaction unless inside
        ``transaction()``). Returns the rowid of the row an ``INSERT``/``REPLACE`` wrote, else
        ``None``.

        Raises :class:`QueryError`, :class:`IntegrityViolation`, :class:`DatabaseFull`, ..."""
        params = _checked(parameters)
        inserts = _INSERT.match(query) is not None
        return await self._write(lambda conn: _execute(conn, query, params, inserts), query)

    async def execute_many(self, query: str, parameters: Iterable[Parameters]) -> int:
        """Run one statement for each parameter set, all in one transaction; return the number
        of rows changed. Either every row is written or none is."""
        rows = parameters if isinstance(parameters, list | tuple) else list(parameters)
        if rows and isinstance(rows[0], str | bytes):
            raise QueryError(f"execute_many() takes a list of parameter sets, got {rows[0]!r}")
        return await self._write(lambda conn: conn.executemany(query, rows).rowcount, query)

    def iterate(
        self,
        query: str,
        parameters: Parameters | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncGenerator[Row, None]:
        """Stream the rows of a query: ``async for row in db.iterate(...)``. The connection is
        held until the iteration ends (or the iterator is closed); rows arrive ``chunk_size`` per
        hop, so memory stays flat however many rows there are."""
        if chunk_size < 1:
            raise QueryError(f"chunk_size must be at least 1, not {chunk_size}")
        return self._iterate(query, _checked(parameters), chunk_size)


def _checked(parameters: Parameters | None) -> Parameters:
    if parameters is None:
        return ()
    if isinstance(parameters, str | bytes):
        raise QueryError(
            f"parameters must be a sequence or a mapping, not {type(parameters).__name__} "
            f"{parameters!r:.40}; write (value,) for a single parameter"
        )
    return parameters


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
    # that wrote a row owns it.
    return cursor.lastrowid if inserts and cursor.rowcount > 0 else None
