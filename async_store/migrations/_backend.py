"""What a backend gives the migration runner: the statements in its own dialect.

The runner (``runner``) decides what to apply, in which order, and refuses what the rules in
``_record`` refuse; a backend's :class:`MigrationBackend` (``backend_of(database).MIGRATIONS``;
SQLite's is ``sqlite._migrations``) splits a file into statements, holds one connection alone
for the runner and hands it a :class:`MigrationSession` on it: the migration lock, the record's
table, ``user_version``, foreign keys.

The session's methods block: the runner's walk runs where the backend runs it (SQLite: on the
writer's thread, as one job that has the writer alone).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

from ..config import DatabaseConfig
from ..database import Database
from ._record import StoreFacts
from ._sets import Migration

__all__ = ["MigrationBackend", "MigrationSession"]

T = TypeVar("T")


class MigrationSession(Protocol):
    """One connection of a store, held alone by the runner; every method blocks."""

    def read(self, *, tables: bool = False) -> StoreFacts:
        """The record and ``user_version`` (and, with ``tables``, the names of the tables and
        views) read in one snapshot: inside :meth:`locked`, the lock's transaction."""
        ...

    def locked(self, *, foreign_keys_off: bool) -> AbstractContextManager[None]:
        """The migration lock and a write transaction for the block: it commits when the block
        ends normally and rolls back when it raises. ``foreign_keys_off``: foreign keys are
        switched off for the block (outside its transaction) and back on after, read back
        (:class:`MigrationError` when they stay off)."""
        ...

    def create_record(self) -> None:
        """Create the record's table (``schema_migrations``) if it does not exist."""
        ...

    def execute(self, statement: str, *, label: str) -> None:
        """Run one statement of a migration; raises the :class:`StoreError` it causes
        (``label`` names it in the message)."""
        ...

    def foreign_key_violations(self) -> list[str]:
        """Each row that breaks a foreign key, described (``child rowid 3 → parent``)."""
        ...

    def record_applied(
        self,
        migration: Migration,
        *,
        applied_at: str,
        duration_ms: float,
        baselined: bool = False,
    ) -> None:
        """Add ``migration`` to the record. ``baselined``: recorded without running (a
        baseline), which the record shows with ``_sets.BASELINE_NOTE`` after its name."""
        ...

    def record_reverted(self, migration: Migration) -> None:
        """Remove ``migration`` from the record."""
        ...

    def set_user_version(self, version: int) -> None:
        """Set the store's ``user_version``."""
        ...


class MigrationBackend(Protocol):
    """A backend's piece of the migration runner."""

    folder: str
    """The folder of its SQL: ``migrations/<folder>/<set>`` (``sqlite``)."""

    def split_statements(self, sql: str, source: str = "<sql>") -> list[str]:
        """Split a file's SQL into complete statements, dropping comment-only pieces; raise
        :class:`MigrationError` naming ``source`` when the last is unterminated."""
        ...

    def run(self, database: Database, work: Callable[[MigrationSession], T]) -> Awaitable[T]:
        """Run ``work`` with a session on ``database``'s connection, held alone, and return its
        result; refused inside a ``transaction()`` block of ``database``."""
        ...

    def refuse_foreign(self, config: DatabaseConfig) -> Awaitable[None]:
        """Raise :class:`MigrationError` if the store ``config`` names belongs to another
        application, before the database is opened (which may change it); reads only."""
        ...
