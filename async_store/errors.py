"""The errors async_store raises: one tree, rooted at :class:`StoreError`, whatever the backend.

This module imports no driver. Each backend translates its driver's exceptions into this tree at
one boundary of its own (SQLite: ``sqlite/_errors.py``, by extended result code); a driver's
exception never leaks out of the library.

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

"""

from __future__ import annotations

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


def shorten_sql(sql: str, limit: int = 200) -> str:
    """``sql`` on one line, cut to ``limit`` characters, for a message (internal)."""
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
