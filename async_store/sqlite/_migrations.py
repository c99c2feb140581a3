"""The migration runner's statements on SQLite (``MIGRATIONS``, the backend's piece of
``async_store.migrations``): splitting a file with ``sqlite3.complete_statement``, the runner's
walk run on the writer's thread as one job that has the writer alone, the migration lock
(``BEGIN IMMEDIATE``), ``PRAGMA user_version`` and ``foreign_keys``, and the refusal of another
application's file before the pool opens it.

The record's table and its reading are in ``_migration_record``; the rules, the walk and the
order are the runner's (``migrations.runner``), the same on every backend.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..config import DatabaseConfig
from ..database import Database
from ..errors import MigrationError
from ..migrations._backend import MigrationBackend, MigrationSession
from ..migrations._record import StoreFacts, foreign_reason, foreign_refusal
from ..migrations._sets import BASELINE_NOTE, Migration
from ._connection import run_on_file
from ._counters import Counters
from ._errors import translate
from ._migration_record import CREATE_TABLE, read_facts
from ._writer_thread import Locking, begin_immediate
from .database import SqliteDatabase

__all__ = ["MIGRATIONS", "SqliteMigrationSession", "split_statements"]

T = TypeVar("T")

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_HEADER = b"SQLite format 3\x00"


def split_statements(sql: str, source: str = "<sql>") -> list[str]:
    """Split SQL into complete statements with ``sqlite3.complete_statement`` (which knows
    strings, comments and trigger bodies). Comment-only pieces are dropped."""
    statements: list[str] = []
    buffer = ""
    for piece in re.split(r"(;)", sql):
        buffer += piece
        if piece == ";" and sqlite3.complete_statement(buffer):
            if _COMMENTS.sub("", buffer).strip(" \t\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if _COMMENTS.sub("", buffer).strip():
        raise MigrationError(f"{source}: the last statement is not terminated by ';'")
    return statements


class SqliteMigrationSession:
    """The runner's session on a connection the caller has alone (the writer's, on its
    thread): a :class:`~async_store.migrations._backend.MigrationSession`."""

    __slots__ = ("_conn", "_locking")

    def __init__(self, conn: sqlite3.Connection, config: DatabaseConfig) -> None:
        self._conn = conn
        self._locking = Locking(config.busy_retries, config.busy_backoff, Counters(), config.name)

    def read(self, *, tables: bool = False) -> StoreFacts:
        return read_facts(self._conn, tables=tables)

    @contextlib.contextmanager
    def locked(self, *, foreign_keys_off: bool) -> Iterator[None]:
        conn = self._conn
        # A table rebuild: PRAGMA foreign_keys does nothing inside a transaction.
        if foreign_keys_off:
            conn.execute("PRAGMA foreign_keys = OFF")
        try:
            begin_immediate(conn, self._locking)
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if foreign_keys_off:
                conn.execute("PRAGMA foreign_keys = ON")
                if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                    raise MigrationError(
                        f"{self._locking.database}: foreign_keys did not switch back on"
                    )

    def create_record(self) -> None:
        self._conn.execute(CREATE_TABLE)

    def execute(self, statement: str, *, label: str) -> None:
        try:
            self._conn.execute(statement)
        except sqlite3.Error as exc:
            raise translate(exc, database=label) from exc

    def foreign_key_violations(self) -> list[str]:
        rows = self._conn.execute("PRAGMA foreign_key_check").fetchall()
        return [f"{row[0]} rowid {row[1]} → {row[2]}" for row in rows]

    def record_applied(
        self,
        migration: Migration,
        *,
        applied_at: str,
        duration_ms: float,
        baselined: bool = False,
    ) -> None:
        name = f"{migration.name} {BASELINE_NOTE}" if baselined else migration.name
        self._conn.execute(
            "INSERT INTO schema_migrations(migration_set, version, name, checksum, applied_at,"
            " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (
                migration.migration_set,
                migration.version,
                name,
                migration.checksum,
                applied_at,
                duration_ms,
            ),
        )

    def record_reverted(self, migration: Migration) -> None:
        self._conn.execute(
            "DELETE FROM schema_migrations WHERE migration_set = ? AND version = ?",
            (migration.migration_set, migration.version),
        )

    def set_user_version(self, version: int) -> None:
        self._conn.execute(f"PRAGMA user_version = {int(version)}")


def session_job(
    config: DatabaseConfig, work: Callable[[MigrationSession], T]
) -> Callable[[sqlite3.Connection], T]:
    """``work`` as a function of the writer's connection, for code that holds the writer
    already (an online restore)."""

    def job(conn: sqlite3.Connection) -> T:
        return work(SqliteMigrationSession(conn, config))

    return job


class SqliteMigrations:
    """SQLite's :class:`~async_store.migrations._backend.MigrationBackend`."""

    folder = "sqlite"

    def split_statements(self, sql: str, source: str = "<sql>") -> list[str]:
        return split_statements(sql, source)

    async def run(self, database: Database, work: Callable[[MigrationSession], T]) -> T:
        assert isinstance(database, SqliteDatabase)
        return await database.run_on_writer(session_job(database.config, work))

    async def refuse_foreign(self, config: DatabaseConfig) -> None:
        """Refuse another application's SQLite file (tables or a ``user_version``, but no
        migration record), reading it only. Run before the pool opens the file: switching a
        rollback-journal file to WAL rewrites its header, and a file that is not ours must be
        refused exactly as it was found. A file in WAL mode already is left to the runner,
        which refuses it before writing anything."""
        path = config.path
        try:
            with path.open("rb") as handle:
                header = handle.read(100)
        except OSError:
            return  # missing (created on open) or unreadable (the open reports it)
        if len(header) < 100 or not header.startswith(_HEADER) or header[18:20] != b"\x01\x01":
            return
        try:
            facts = await run_on_file(path, _read_all_facts, readonly=True)
        except sqlite3.Error:
            return  # damaged: the pool's open reports it
        reason = foreign_reason(facts)
        if reason is not None:
            raise MigrationError(foreign_refusal(config.name, reason))


def _read_all_facts(conn: sqlite3.Connection) -> StoreFacts:
    return read_facts(conn, tables=True)


MIGRATIONS: MigrationBackend = SqliteMigrations()
"""The SQLite backend's piece of the migration runner."""
