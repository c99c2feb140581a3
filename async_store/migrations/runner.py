"""Embedded SQL migrations, applied on start-up on the writer's connection.

A *migration set* is a directory of versions, each a folder ``NNNN_name`` holding ``up.sql`` and
``down.sql``. The built-in sets ``app_meta`` and ``events`` ship inside the package; applications
add their own with :meth:`MigrationSet.from_directory` or :meth:`MigrationSet.from_package`.
Sets are read and checked when loaded (``_sets``); this module applies them and reports their
status. The record's table lives in ``sqlite._migration_record``, and the check that tells
another application's file apart in ``sqlite._foreign_files``.

Rules (learned from the data loss users of other migration tools reported):

* ``schema_migrations(migration_set, version, name, checksum, applied_at, duration_ms)`` records
  what is applied; the checksum covers ``up.sql`` with a BOM stripped and CRLF turned into LF.
* The write lock (``BEGIN IMMEDIATE``) is taken before reading what is applied, so processes
  starting at once apply each version exactly once, and all of them start.
* A migration and its bookkeeping row commit in one transaction. Statements run one at a time
  (split with ``sqlite3.complete_statement``), never through ``executescript()``, which would
  commit on its own. ``PRAGMA foreign_key_check`` runs before COMMIT.
* A migration whose ``up.sql`` starts with the line ``-- async_store: foreign_keys=off`` (a table
  rebuild) runs with foreign keys switched off outside its transaction, then back on, read back.
* Refused with a :class:`MigrationError` naming the file, nothing changed: an applied migration
  edited since, a database newer than the code, a gap, files with transaction control, VACUUM or
  journal_mode/synchronous/foreign_keys PRAGMAs.
* A file with tables or a ``user_version`` but no migration record belongs to another
  application and is refused before anything is written to it: by :func:`refuse_foreign_file`
  before the pool opens it (which would switch a rollback-journal file to WAL), else by the
  runner before its first migration.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ..errors import MigrationError, StoreError
from ..sqlite._errors import translate
from ..sqlite._foreign_files import foreign_reason
from ..sqlite._foreign_files import refuse_foreign_file as refuse_foreign_file
from ..sqlite._migration_record import CREATE_TABLE, applied_rows
from ..sqlite._writer_thread import Locking, begin_immediate
from ..sqlite.database import SqliteDatabase as Database
from ..statistics import Counters
from ._sets import BUILTIN_SETS as BUILTIN_SETS
from ._sets import FOREIGN_KEYS_OFF as FOREIGN_KEYS_OFF
from ._sets import Migration, MigrationSet
from ._sets import normalize as normalize
from ._sets import split_statements as split_statements

__all__ = ["Migration", "MigrationSet", "MigrationStatus", "migration_status"]


@dataclass(frozen=True)
class MigrationStatus:
    """One version of one set, as found in a database."""

    migration_set: str
    version: int
    name: str
    applied: bool
    applied_at: str | None
    checksum_ok: bool | None
    """False when the applied migration's file was edited since; None when not applied."""


async def apply_migrations(
    database: Database,
    sets: Iterable[MigrationSet],
    *,
    track_user_version: str | None,
    target: int | None = None,
    target_set: str | None = None,
) -> list[str]:
    """Bring every set in ``sets`` to its newest version on ``database`` or, when
    ``target_set`` is given, that set alone to ``target`` (up or down; ``None`` = newest).
    Returns the labels of the migrations applied or reverted.

    ``track_user_version`` names the set whose version ``PRAGMA user_version`` follows.
    Raises :class:`MigrationError`; a failing migration leaves the database as it was.
    """
    job = migration_job(
        database,
        sets,
        track_user_version=track_user_version,
        target=target,
        target_set=target_set,
    )
    try:
        return await database.run_on_writer(job)
    except MigrationError:
        raise
    except StoreError as exc:
        raise MigrationError(f"{database.name}: migrations could not run: {exc}") from exc


def migration_job(
    database: Database,
    sets: Iterable[MigrationSet],
    *,
    track_user_version: str | None,
    target: int | None = None,
    target_set: str | None = None,
) -> Callable[[sqlite3.Connection], list[str]]:
    """What :func:`apply_migrations` runs on the writer's thread, as a function of the
    writer's connection, for a caller that already holds the writer (a restore)."""
    sets = list(sets)
    if target_set is not None and target_set not in {s.name for s in sets}:
        raise MigrationError(f"{database.name}: no migration set {target_set!r} on this database")
    config = database.config
    locking = Locking(config.busy_retries, config.busy_backoff, Counters(), database.name)

    def run(conn: sqlite3.Connection) -> list[str]:
        # No race with other processes migrating: their first migration commits its tables
        # and its record together, so a file never holds one without the other.
        reason = foreign_reason(conn)
        if reason is not None:
            raise MigrationError(f"{database.name}: {reason}; it belongs to another application")
        done: list[str] = []
        for migration_set in sets:
            if target_set is not None and migration_set.name != target_set:
                continue
            goal = target if migration_set.name == target_set else None
            tracks = migration_set.name == track_user_version
            done += _migrate_set(conn, migration_set, goal, tracks, locking)
        return done

    return run


async def migration_status(
    database: Database, sets: Iterable[MigrationSet]
) -> list[MigrationStatus]:
    """Every known version of every set, applied or pending, as recorded in ``database``."""
    sets = list(sets)

    def read(conn: sqlite3.Connection) -> list[MigrationStatus]:
        applied = applied_rows(conn)
        result = []
        for migration_set in sets:
            for migration in migration_set.migrations:
                row = applied.get((migration_set.name, migration.version))
                result.append(
                    MigrationStatus(
                        migration_set.name,
                        migration.version,
                        migration.name,
                        row is not None,
                        row[1] if row else None,
                        (row[0] == migration.checksum) if row else None,
                    )
                )
        return result

    return await database.run_on_writer(read)


def _migrate_set(
    conn: sqlite3.Connection,
    migration_set: MigrationSet,
    target: int | None,
    tracks_user_version: bool,
    locking: Locking,
) -> list[str]:
    """Runs on the writer's thread. One transaction per migration, each taken under the write
    lock after re-reading what is applied."""
    database = locking.database
    goal = migration_set.latest if target is None else target
    if not 0 <= goal <= migration_set.latest:
        raise MigrationError(
            f"{database}: {migration_set.name} has versions 1..{migration_set.latest}; "
            f"cannot migrate to {goal}"
        )
    done: list[str] = []
    while True:
        # A first look, in a read transaction so that its two reads (the record and
        # user_version) see one snapshot while other processes migrate; it is taken again
        # under the write lock before anything changes.
        conn.execute("BEGIN")
        try:
            current = _current_version(conn, migration_set, database, tracks_user_version)
        finally:
            conn.execute("ROLLBACK")
        if current == goal:
            return done
        direction: Literal["up", "down"] = "up" if current < goal else "down"
        migration = migration_set.migrations[current if direction == "up" else current - 1]
        fk_off = migration.foreign_keys_off(direction)
        if fk_off:
            conn.execute("PRAGMA foreign_keys = OFF")
        try:
            begin_immediate(conn, locking)
            try:
                # Re-read under the write lock: another process may have moved on meanwhile.
                if _current_version(conn, migration_set, database, tracks_user_version) != current:
                    conn.execute("ROLLBACK")
                    continue
                _run_one(conn, migration, direction, tracks_user_version)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if fk_off:
                conn.execute("PRAGMA foreign_keys = ON")
                if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                    raise MigrationError(f"{database}: foreign_keys did not switch back on")
        done.append(f"{'applied' if direction == 'up' else 'reverted'} {migration.label}")


def _current_version(
    conn: sqlite3.Connection, migration_set: MigrationSet, database: str, tracks: bool
) -> int:
    """The set's applied version, after checking the record against the code."""
    applied = {
        version: row
        for (name, version), row in applied_rows(conn).items()
        if name == migration_set.name
    }
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    known = {m.version: m for m in migration_set.migrations}
    newest = max(applied, default=0)
    if tracks and user_version > newest and not applied:
        raise MigrationError(
            f"{database}: the file has user_version {user_version} but no async_store migration "
            f"record for the {migration_set.name} set; it belongs to another application"
        )
    if newest > migration_set.latest or (tracks and user_version > migration_set.latest):
        raise MigrationError(
            f"{database}: the database is at {migration_set.name} version "
            f"{max(newest, user_version if tracks else 0)}, newer than this code "
            f"(which knows versions up to {migration_set.latest}); upgrade async_store"
        )
    for version in range(1, newest + 1):
        if version not in applied:
            raise MigrationError(
                f"{database}: {migration_set.name} version {version} is missing from "
                f"schema_migrations while {newest} is applied; the record has a gap"
            )
        checksum = applied[version][0]
        if checksum != known[version].checksum:
            raise MigrationError(
                f"{database}: {known[version].source}/up.sql was edited after it was applied "
                f"(checksum {checksum[:12]}… recorded, {known[version].checksum[:12]}… now); "
                "add a new migration instead of editing an applied one"
            )
    return newest


def _run_one(
    conn: sqlite3.Connection,
    migration: Migration,
    direction: Literal["up", "down"],
    tracks_user_version: bool,
) -> None:
    conn.execute(CREATE_TABLE)
    source = f"{migration.source}/{direction}.sql"
    started = time.perf_counter()
    for number, statement in enumerate(migration.statements(direction), start=1):
        try:
            conn.execute(statement)
        except sqlite3.Error as exc:
            error = translate(exc, database=migration.migration_set)
            raise MigrationError(
                f"{source}: statement {number} failed: {error}; nothing was changed"
            ) from exc
    violations = conn.execute("PRAGMA foreign_key_check").fetchall()
    if violations:
        listed = ", ".join(f"{row[0]} rowid {row[1]} → {row[2]}" for row in violations[:5])
        raise MigrationError(
            f"{source}: leaves {len(violations)} foreign key violation(s) ({listed}); "
            "nothing was changed"
        )
    if direction == "up":
        conn.execute(
            "INSERT INTO schema_migrations(migration_set, version, name, checksum, applied_at,"
            " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (
                migration.migration_set,
                migration.version,
                migration.name,
                migration.checksum,
                datetime.now(UTC).isoformat(timespec="microseconds"),
                round((time.perf_counter() - started) * 1000, 3),
            ),
        )
        new_version = migration.version
    else:
        conn.execute(
            "DELETE FROM schema_migrations WHERE migration_set = ? AND version = ?",
            (migration.migration_set, migration.version),
        )
        new_version = migration.version - 1
    if tracks_user_version:
        conn.execute(f"PRAGMA user_version = {int(new_version)}")
