"""The errors async_store raises, and the one place sqlite3 errors are translated.

Every error is a :class:`StoreError`; ``sqlite3`` exceptions never leak out of the library.

::

    StoreError
    ├── ConfigError (also ValueError)         invalid configuration, caught on construction
    ├── PoolClosed                            the database or service is closed or closing
    ├── PoolTimeout (also TimeoutError)       the writer or a reader did not become free within
    │                                         acquire_timeout; nothing was left queued
    ├── TransactionTimeout (also TimeoutError) a transaction() block held the writer past
    │                                         transaction_timeout and was rolled back
    ├── QueryError                            the SQL or its parameters are wrong
    │   └── ReadOnlyQuery                     a write sent to a read-only reader connection
    ├── IntegrityViolation                    a constraint rejected the change
    │   ├── UniqueViolation                   UNIQUE or PRIMARY KEY
    │   ├── ForeignKeyViolation
    │   ├── CheckViolation
    │   └── NotNullViolation
    ├── DatabaseError                         the database itself could not do the work
    │   ├── DatabaseBusy                      another process held the lock past every retry
    │   ├── DatabaseFull                      disk full, or max_page_count reached
    │   ├── DatabaseCorrupt                   a malformed database file
    │   │   └── NotADatabase                  the file is not an SQLite database at all
    │   ├── DatabaseReadOnly                  the file or directory cannot be written
    │   ├── DatabaseIOError                   the operating system reported an I/O error
    │   ├── CannotOpen                        the file cannot be opened
    │   ├── Interrupted                       the statement was interrupted (a cancelled read)
    │   └── PragmaMismatch                    a PRAGMA did not read back as it was set
    ├── MigrationError                        a migration cannot be applied; nothing was changed
    ├── ConcurrencyError                      an event stream was not at the expected version
    ├── InvalidDelta                          a state change was refused; nothing was changed
    │   ├── EntityExists                      an Add for an id that exists
    │   ├── EntityNotFound                    an Update/Remove (or a reference) to a missing id
    │   └── EntityInUse                       a Remove of an entity others still refer to
    ├── StateManagerClosed                    the state manager is closed or its consumer died
    ├── StateManagerFull                      mutate_nowait() found the queue full
    └── BackupError                           a backup or restore failed; the message says what
                                              was replaced (nothing, unless it names it)

:func:`translate` maps a ``sqlite3`` exception to this tree: the most specific match wins,
by SQLite's extended result code first, then its primary code, then the exception class.
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "BackupError",
    "CannotOpen",
    "CheckViolation",
    "ConcurrencyError",
    "ConfigError",
    "DatabaseBusy",
    "DatabaseCorrupt",
    "DatabaseError",
    "DatabaseFull",
    "DatabaseIOError",
    "DatabaseReadOnly",
    "EntityExists",
    "EntityInUse",
    "EntityNotFound",
    "ForeignKeyViolation",
    "IntegrityViolation",
    "Interrupted",
    "InvalidDelta",
    "MigrationError",
    "NotADatabase",
    "NotNullViolation",
    "PoolClosed",
    "PoolTimeout",
    "PragmaMismatch",
    "QueryError",
    "ReadOnlyQuery",
    "StateManagerClosed",
    "StateManagerFull",
    "StoreError",
    "TransactionTimeout",
    "UniqueViolation",
]


class StoreError(Exception):
    """The root of every error async_store raises."""


class ConfigError(StoreError, ValueError):
    """A configuration value is invalid; raised when the configuration is constructed."""


class PoolClosed(StoreError):
    """The database or service is closed (or closing) and takes no new work."""


class PoolTimeout(StoreError, TimeoutError):
    """The writer or a reader did not become free within the configured ``acquire_timeout``;
    the caller's work was withdrawn from the queue (nothing of it ran)."""


class TransactionTimeout(StoreError, TimeoutError):
    """A ``transaction()`` block held the writer longer than ``transaction_timeout``: the
    writer rolled its work back, and the block's next call (or its end) raises this."""


class QueryError(StoreError):
    """The SQL statement or its parameters are wrong: a syntax error, an unknown table or
    column, the wrong number or type of parameters."""


class ReadOnlyQuery(QueryError):
    """A statement that writes was sent to a reader; use ``execute()`` or ``transaction()``."""


class IntegrityViolation(StoreError):
    """A constraint rejected the change; the transaction's other work is unaffected."""


class UniqueViolation(IntegrityViolation):
    """A UNIQUE or PRIMARY KEY constraint failed."""


class ForeignKeyViolation(IntegrityViolation):
    """A FOREIGN KEY constraint failed."""


class CheckViolation(IntegrityViolation):
    """A CHECK constraint failed."""


class NotNullViolation(IntegrityViolation):
    """A NOT NULL constraint failed."""


class DatabaseError(StoreError):
    """The database could not do the work for a reason outside the statement itself."""


class DatabaseBusy(DatabaseError):
    """Another process held the database lock past ``busy_timeout`` and every retry."""


class DatabaseFull(DatabaseError):
    """The disk is full or the database reached ``max_page_count``; nothing was written."""


class DatabaseCorrupt(DatabaseError):
    """The database file is malformed."""


class NotADatabase(DatabaseCorrupt):
    """The file is not an SQLite database (or is encrypted)."""


class DatabaseReadOnly(DatabaseError):
    """The database file or its directory cannot be written."""


class DatabaseIOError(DatabaseError):
    """The operating system reported an I/O error."""


class CannotOpen(DatabaseError):
    """The database file cannot be opened."""


class Interrupted(DatabaseError):
    """The statement was interrupted, for example because its caller was cancelled."""


class PragmaMismatch(DatabaseError):
    """A PRAGMA set on a new connection read back with a different value."""


class MigrationError(StoreError):
    """A migration cannot be applied (edited, out of order, failing, or too new a database).
    The database is left exactly as it was."""


class ConcurrencyError(StoreError):
    """An event stream was not at the version the append expected."""


class InvalidDelta(StoreError):
    """The state manager refused a change; the state is untouched."""


class EntityExists(InvalidDelta):
    """An Add named an id that exists already."""


class EntityNotFound(InvalidDelta):
    """An Update, a Remove, a setting deletion or a reference named an id that does not
    exist."""


class EntityInUse(InvalidDelta):
    """A Remove named an entity that other entities still refer to."""


class StateManagerClosed(StoreError):
    """The state manager is closed, or its consumer stopped; see ``__cause__``."""


class StateManagerFull(StoreError):
    """``StateManager.mutate_nowait`` found the queue full."""


class BackupError(StoreError):
    """A backup, verification or restore failed. No live file was replaced, except by an
    online restore whose later copy failed after an earlier one replaced its database: its
    message names the databases replaced and those not, and says how to recover."""


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
    The library's one translation boundary, internal (not in ``__all__``).

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


def shorten_sql(sql: str, limit: int = 200) -> str:
    """``sql`` on one line, cut to ``limit`` characters, for a message (internal)."""
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
