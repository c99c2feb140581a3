"""The SQLite backend's one translation boundary: :func:`translate` maps a ``sqlite3``
exception to the :class:`StoreError` tree. The most specific match wins: SQLite's extended
result code first, then its primary code, then the exception class."""

from __future__ import annotations

import sqlite3

from ..errors import (
    CannotOpen,
    CheckViolation,
    DatabaseBusy,
    DatabaseCorrupt,
    DatabaseFull,
    DatabaseIOError,
    DatabaseReadOnly,
    ForeignKeyViolation,
    IntegrityViolation,
    Interrupted,
    NotADatabase,
    NotNullViolation,
    QueryError,
    ReadOnlyQuery,
    StoreError,
    UniqueViolation,
    shorten_sql,
)

__all__ = ["translate"]


# Extended result codes (https://www.sqlite.org/rescode.html): the most specific match.
_EXTENDED: dict[int, type[StoreError]] = {
    1555: UniqueViolation,  # SQLITE_CONSTRAINT_PRIMARYKEY
    2067: UniqueViolation,  # SQLITE_CONSTRAINT_UNIQUE
    787: ForeignKeyViolation,  # SQLITE_CONSTRAINT_FOREIGNKEY
    275: CheckViolation,  # SQLITE_CONSTRAINT_CHECK
    1299: NotNullViolation,  # SQLITE_CONSTRAINT_NOTNULL
}

# Primary result codes: the low byte of the extended code.
_PRIMARY: dict[int, type[StoreError]] = {
    1: QueryError,  # SQLITE_ERROR: syntax error, no such table, ...
    5: DatabaseBusy,  # SQLITE_BUSY
    6: DatabaseBusy,  # SQLITE_LOCKED
    8: DatabaseReadOnly,  # SQLITE_READONLY
    9: Interrupted,  # SQLITE_INTERRUPT
    10: DatabaseIOError,  # SQLITE_IOERR
    11: DatabaseCorrupt,  # SQLITE_CORRUPT
    13: DatabaseFull,  # SQLITE_FULL
    14: CannotOpen,  # SQLITE_CANTOPEN
    19: IntegrityViolation,  # SQLITE_CONSTRAINT
    20: QueryError,  # SQLITE_MISMATCH: datatype mismatch
    21: QueryError,  # SQLITE_MISUSE
    25: QueryError,  # SQLITE_RANGE: parameter index out of range
    26: NotADatabase,  # SQLITE_NOTADB
}

_SQLITE_READONLY = 8


def translate(
    exc: BaseException, *, database: str, sql: str | None = None, on_reader: bool = False
) -> StoreError:
    """Return the :class:`StoreError` for a ``sqlite3`` exception, ready to ``raise ... from exc``.
    The SQLite backend's one translation boundary.

    ``database`` names the database in the message; ``sql`` (when given) is quoted, shortened.
    ``on_reader`` says the statement ran on a ``query_only`` reader, where a read-only refusal
    means the statement tried to write. A :class:`StoreError` is returned unchanged.
    """
    if isinstance(exc, StoreError):
        return exc
    kind: type[StoreError] = StoreError
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        kind = _EXTENDED.get(code) or _PRIMARY.get(code & 0xFF, StoreError)
    elif isinstance(exc, sqlite3.IntegrityError):
        kind = IntegrityViolation
    elif isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError | sqlite3.DataError):
        kind = QueryError
    elif isinstance(exc, OverflowError | TypeError | ValueError):
        # sqlite3 raises these for parameters it cannot bind (too-large ints, wrong types).
        kind = QueryError
    elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        kind = NotADatabase
    is_readonly_reader = on_reader and isinstance(code, int) and code & 0xFF == _SQLITE_READONLY
    message = f"{database}: {exc}"
    if sql is not None:
        message += f" [sql: {shorten_sql(sql)}]"
    if is_readonly_reader:
        kind = ReadOnlyQuery
        message += " (reads run on read-only connections; use execute() or transaction())"
    return kind(message)
