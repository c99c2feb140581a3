"""Embedded SQL migrations, applied on start-up on the writer's connection.

A *migration set* is a directory of versions, each a folder ``NNNN_name`` holding ``up.sql`` and
``down.sql``. The built-in sets ``app_meta`` and ``events`` ship inside the package; applications
add their own with :meth:`MigrationSet.from_directory` or :meth:`MigrationSet.from_package`.
Sets are read and checked when loaded (``_sets``); this module applies them and reports their
status, the same on every backend. The rules that judge a record are in ``_record``; the
statements come from the database's backend (``_backend``: SQLite's in ``sqlite._migrations``).

Rules (learned from the data loss users of other migration tools reported):

* ``schema_migrations(migration_set, version, name, checksum, applied_at, duration_ms)`` records
  what is applied; the checksum covers ``up.sql`` with a BOM stripped and CRLF turned into LF.
* The migration lock (SQLite: the write lock, ``BEGIN IMMEDIATE``) is taken before reading
  what is applied, so processes starting at once apply each version exactly once, and all of
  them start.
* A migration and its bookkeeping row commit in one transaction. Statements run one at a time
  (split by the backend: SQLite's ``sqlite3.complete_statement``), never through a script
  call that would commit on its own. Foreign keys are checked before COMMIT.
* A migration whose ``up.sql`` starts with the line ``-- async_store: foreign_keys=off`` (a table
  rebuild) runs with foreign keys switched off outside its transaction, then back on, read back.
* Refused with a :class:`MigrationError` naming the file, nothing changed: an applied migration
  edited since, a database newer than the code, a gap, files with transaction control, VACUUM or
  journal_mode/synchronous/foreign_keys PRAGMAs.
* A file with tables or a ``user_version`` but no migration record belongs to another
  application and is refused before anything is written to it: by the backend's
  ``refuse_foreign`` before the pool opens it (which would switch a rollback-journal file to
  WAL), else by the runner before its first migration. Unless one of the store's sets has a
  baseline: the store is then adopted (``_adoption``), its baselined versions recorded
  without running in the transaction of the first migration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from ..database import Database, backend_of
from ..errors import MigrationError, StoreError
from ._adoption import Adoption
from ._backend import MigrationBackend, MigrationSession
from ._record import RecordProblem, StoreFacts, foreign_reason, foreign_refusal, judge_record
from ._sets import BUILTIN_SETS as BUILTIN_SETS
from ._sets import FOREIGN_KEYS_OFF as FOREIGN_KEYS_OFF
from ._sets import Migration, MigrationSet
from ._sets import normalize as normalize

__all__ = ["Migration", "MigrationSet", "MigrationStatus", "migration_status"]

MigrationWork = Callable[[MigrationSession], list[str]]
"""The runner's walk for one database, run by its backend with a session on it."""


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


def migration_backend(database: Database) -> MigrationBackend:
    """The migration piece of ``database``'s backend."""
    backend: MigrationBackend = backend_of(database).MIGRATIONS
    return backend


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

    ``track_user_version`` names the set whose version ``user_version`` follows.
    Raises :class:`MigrationError`; a failing migration leaves the database as it was.
    """
    work = migration_work(
        database.name,
        sets,
        track_user_version=track_user_version,
        target=target,
        target_set=target_set,
    )
    try:
        return await migration_backend(database).run(database, work)
    except MigrationError:
        raise
    except StoreError as exc:
        raise MigrationError(f"{database.name}: migrations could not run: {exc}") from exc


def migration_work(
    database: str,
    sets: Iterable[MigrationSet],
    *,
    track_user_version: str | None,
    target: int | None = None,
    target_set: str | None = None,
) -> MigrationWork:
    """What :func:`apply_migrations` runs on the database called ``database``, as a function
    of a session, for a caller that holds the database's connection already (a restore)."""
    sets = list(sets)
    if target_set is not None and target_set not in {s.name for s in sets}:
        raise MigrationError(f"{database}: no migration set {target_set!r} on this database")

    def run(session: MigrationSession) -> list[str]:
        # No race with other processes migrating: their first migration commits its tables
        # and its record together, so a store never holds one without the other.
        reason = foreign_reason(session.read(tables=True))
        adoption: Adoption | None = None
        if reason is not None:
            if not any(s.baseline for s in sets):
                raise MigrationError(foreign_refusal(database, reason))
            adoption = Adoption(sets)
        done: list[str] = []
        for migration_set in sets:
            if target_set is not None and migration_set.name != target_set:
                continue
            goal = target if migration_set.name == target_set else None
            tracks = migration_set.name == track_user_version
            done += _migrate_set(session, database, migration_set, goal, tracks, adoption)
        if adoption is not None and adoption.pending:
            # Nothing was migrated (a walk of one set already at its target): adopt alone.
            with session.locked(foreign_keys_off=False):
                done += adoption.take(session, session.read())
        return done

    return run


async def migration_status(
    database: Database, sets: Iterable[MigrationSet]
) -> list[MigrationStatus]:
    """Every known version of every set, applied or pending, as recorded in ``database``."""
    sets = list(sets)

    def read(session: MigrationSession) -> list[MigrationStatus]:
        applied = session.read().record
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
                        row.applied_at if row else None,
                        (row.checksum == migration.checksum) if row else None,
                    )
                )
        return result

    return await migration_backend(database).run(database, read)


class _MovedOn(Exception):
    """Another process migrated between the first look and the lock."""


def _migrate_set(
    session: MigrationSession,
    database: str,
    migration_set: MigrationSet,
    target: int | None,
    tracks_user_version: bool,
    adoption: Adoption | None = None,
) -> list[str]:
    """One transaction per migration, each taken under the migration lock after re-reading
    what is applied. The first of them takes a pending ``adoption`` in."""
    goal = migration_set.latest if target is None else target
    if not 0 <= goal <= migration_set.latest:
        raise MigrationError(
            f"{database}: {migration_set.name} has versions 1..{migration_set.latest}; "
            f"cannot migrate to {goal}"
        )
    done: list[str] = []
    while True:
        # Until an adoption is taken in, user_version is the other application's.
        tracks = tracks_user_version and (adoption is None or not adoption.pending)
        # A first look, in one snapshot (the record and user_version) while other processes
        # migrate; it is taken again under the lock before anything changes.
        current = _current_version(session.read(), migration_set, database, tracks)
        if current == goal:
            return done
        direction: Literal["up", "down"] = "up" if current < goal else "down"
        migration = migration_set.migrations[current if direction == "up" else current - 1]
        try:
            with session.locked(foreign_keys_off=migration.foreign_keys_off(direction)):
                # Re-read under the lock: another process may have moved on meanwhile.
                found = session.read()
                if _current_version(found, migration_set, database, tracks) != current:
                    raise _MovedOn
                if adoption is not None and adoption.pending:
                    adopted = adoption.take(session, found)
                    done += adopted
                    if adopted and migration_set.name in adoption.sets:
                        continue  # this set is at its baseline now: commit, then look again
                _run_one(session, migration, direction, tracks_user_version)
        except _MovedOn:
            continue
        done.append(f"{'applied' if direction == 'up' else 'reverted'} {migration.label}")


def _current_version(
    facts: StoreFacts, migration_set: MigrationSet, database: str, tracks: bool
) -> int:
    """The set's applied version, after checking the record against the code."""
    checksums = {
        version: applied.checksum
        for (name, version), applied in facts.record.items()
        if name == migration_set.name
    }
    problem = judge_record(
        checksums, migration_set, user_version=facts.user_version if tracks else None
    )
    if problem is not None:
        raise MigrationError(_refusal(problem, migration_set, database, max(checksums, default=0)))
    return max(checksums, default=0)


def _refusal(
    problem: RecordProblem, migration_set: MigrationSet, database: str, newest: int
) -> str:
    """The runner's words for a record it will not migrate."""
    name = migration_set.name
    if problem.kind == "foreign":
        return foreign_refusal(
            database,
            f"the file has user_version {problem.user_version} but no async_store migration "
            f"record for the {name} set",
        )
    if problem.kind == "newer":
        return (
            f"{database}: the database is at {name} version "
            f"{max(problem.version, problem.user_version)}, newer than this code "
            f"(which knows versions up to {migration_set.latest}); upgrade async_store"
        )
    if problem.kind == "edited":
        migration = migration_set.migrations[problem.version - 1]
        return (
            f"{database}: {migration.source}/up.sql was edited after it was applied "
            f"(checksum {problem.checksum[:12]}… recorded, {migration.checksum[:12]}… now); "
            "add a new migration instead of editing an applied one"
        )
    # A gap (a version below 1 cannot be recorded: the record's table refuses it).
    return (
        f"{database}: {name} version {problem.version} is missing from schema_migrations "
        f"while {newest} is applied; the record has a gap"
    )


def _run_one(
    session: MigrationSession,
    migration: Migration,
    direction: Literal["up", "down"],
    tracks_user_version: bool,
) -> None:
    session.create_record()
    source = f"{migration.source}/{direction}.sql"
    started = time.perf_counter()
    for number, statement in enumerate(migration.statements(direction), start=1):
        try:
            session.execute(statement, label=migration.migration_set)
        except StoreError as exc:
            raise MigrationError(
                f"{source}: statement {number} failed: {exc}; nothing was changed"
            ) from exc
    violations = session.foreign_key_violations()
    if violations:
        raise MigrationError(
            f"{source}: leaves {len(violations)} foreign key violation(s) "
            f"({', '.join(violations[:5])}); nothing was changed"
        )
    if direction == "up":
        session.record_applied(
            migration,
            applied_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        new_version = migration.version
    else:
        session.record_reverted(migration)
        new_version = migration.version - 1
    if tracks_user_version:
        session.set_user_version(new_version)
