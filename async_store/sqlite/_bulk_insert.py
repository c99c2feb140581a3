"""``insert_rows``: many rows of one INSERT as one write, in multi-row statements. The SQLite
side of the bulk insert that ``repositories._documents`` asks the backend for
(``async_store.database.backend_of``); exposed by ``async_store.sqlite``.

A statement of 100 rows is one step of SQLite's virtual machine per row but one call from
Python, where ``executemany`` returns to Python (and takes the GIL back) for every row: a 10,000
chunk ingest runs about a third faster this way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..database import Database
from ..errors import QueryError
from ._connection import execute_rows
from .database import SqliteDatabase

__all__ = ["insert_rows"]

_MAX_PARAMETERS = 999
"""Parameters one statement may hold: SQLite's oldest limit (SQLITE_MAX_VARIABLE_NUMBER before
3.32), so the statements run on any SQLite a user may have."""

_MAX_ROWS = 100
"""Rows per statement: past about a hundred, longer statements gain nothing measurable."""


async def insert_rows(database: Database, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``statement``, an ``INSERT ... VALUES (?, ...)`` of one row, for each of ``rows``, in
    order, as one write: part of the current task's ``transaction()`` block, else a transaction
    of its own. Every row is written or none is. Raises what ``execute_many`` raises."""
    if not isinstance(database, SqliteDatabase):
        raise TypeError(f"{database!r} is not a database of the sqlite backend")
    many, per_statement = _multi_row(statement)
    await database.run_in_transaction(
        functools.partial(
            execute_rows, one=statement, many=many, per_statement=per_statement, rows=rows
        ),
        statement,
    )


@functools.lru_cache(maxsize=32)
def _multi_row(statement: str) -> tuple[str, int]:
    """``statement`` repeated for as many rows as one statement takes, and that number."""
    head, keyword, values = statement.partition(" VALUES ")
    values = values.strip()
    if not keyword or not (values.startswith("(") and values.endswith(")")):
        raise QueryError(f"not an INSERT ... VALUES (...) of one row: {statement}")
    per_statement = max(1, min(_MAX_ROWS, _MAX_PARAMETERS // max(1, values.count("?"))))
    return f"{head} VALUES {', '.join([values] * per_statement)}", per_statement
