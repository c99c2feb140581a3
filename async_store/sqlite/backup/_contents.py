"""What a backup must hold to be restored: databases of this library, laid out for its mode.

A manifest can describe any file truthfully (its size and sha256 are easy to compute), so a
backup is judged by its contents as well. Each copy must carry this library's migration record:
a ``schema_migrations`` table of the columns the runner writes, the built-in set of its
database (both sets in MVP mode's one file), each version known to this code with the checksum
this code ships, without gaps, none newer than this code. The sets a backup holds must be the
ones its mode puts in that file; a restore also needs the backup's mode to be the target's:
an MVP backup has no events file to restore, and a production backup's event log has no place
in an MVP file.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path

from ...errors import BackupError
from ...migrations._record import RecordProblem, judge_record
from ...migrations._sets import BUILTIN_SETS, MigrationSet
from .._migration_record import applied_rows

__all__ = ["MODE_DATABASES", "check_layout", "check_target", "record_problem"]

MODE_DATABASES: dict[str, tuple[str, ...]] = {
    "mvp": ("app_meta",),
    "production": ("app_meta", "events"),
}
"""The databases a backup of each mode holds, one file each."""

_RECORD_COLUMNS = {"migration_set", "version", "name", "checksum", "applied_at", "duration_ms"}


@functools.cache
def _builtin(name: str) -> MigrationSet:
    return MigrationSet.builtin(name)


def _builtin_sets_of(mode: str, database: str) -> tuple[str, ...]:
    """The built-in sets the file of ``database`` holds in ``mode``."""
    return BUILTIN_SETS if mode == "mvp" else (database,)


def check_layout(path: Path, mode: str, databases: Sequence[str]) -> None:
    """Refuse a manifest (at ``path``) whose mode is unknown or whose databases are not the
    ones that mode backs up."""
    expected = MODE_DATABASES.get(mode) if isinstance(mode, str) else None
    if expected is None:
        raise BackupError(f"{path}: unknown mode {mode!r:.40}; a backup is 'mvp' or 'production'")
    if sorted(databases) != sorted(expected):
        raise BackupError(
            f"{path}: a {mode} backup holds {' and '.join(expected)}, but the manifest lists "
            f"{', '.join(databases)}"
        )


def check_target(backup: Path, mode: str, target_mode: str, targets: Collection[str]) -> None:
    """Refuse to restore a backup of ``mode`` into databases ``targets`` of ``target_mode``;
    the message says what would be missing or lost. Raises :class:`BackupError`."""
    held = MODE_DATABASES.get(mode, ()) if isinstance(mode, str) else ()
    missing = [name for name in targets if name not in held]
    extra = [name for name in held if name not in targets]
    if not missing and not extra:
        return
    reasons = []
    if missing:
        reasons.append(f"it holds no copy of {', '.join(missing)}")
    if extra:
        reasons.append(
            f"it holds {', '.join(extra)}, which {_a(target_mode)} store has no file for "
            "(that data would be lost)"
        )
    raise BackupError(
        f"{backup}: {_a(mode)} backup cannot be restored into {_a(target_mode)} store: "
        f"{'; '.join(reasons)}; nothing was replaced"
    )


def _a(mode: str) -> str:
    return "an MVP-mode" if mode == "mvp" else f"a {mode}-mode"


def record_problem(
    conn: sqlite3.Connection,
    *,
    mode: str,
    database: str,
    migration_sets: Sequence[MigrationSet] | None,
) -> str:
    """Why the database on ``conn`` (the copy of ``database`` in a backup of ``mode``) is not
    one of this library's, or is newer than this code; ``""`` when it is fine.

    ``migration_sets``: the application's own sets. Given (even empty), a set in the record
    that is neither built in nor among them is refused; ``None``: the caller does not know
    the application's sets, and those it finds are only checked for gaps."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")}
    if not columns:
        return "no schema_migrations table: not a database of async_store"
    if not columns >= _RECORD_COLUMNS:
        return (
            f"its schema_migrations table has columns {', '.join(sorted(columns))}, not "
            "async_store's: not a database of async_store"
        )
    applied: dict[str, dict[int, str]] = {}
    for (set_name, version), row in applied_rows(conn).items():
        applied.setdefault(set_name, {})[version] = row.checksum
    builtin = _builtin_sets_of(mode, database)
    for name in builtin:
        if name not in applied:
            return (
                f"no record of async_store's {name} migrations, which the {database} file of "
                f"{_a(mode)} backup holds"
            )
    known = {name: _builtin(name) for name in builtin}
    own = None
    if migration_sets is not None:
        own = {s.name: s for s in migration_sets if mode == "mvp" or s.database == database}
    # The set user_version follows in this file.
    tracked = "events" if mode == "production" and database == "events" else "app_meta"
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    for name in sorted(applied):
        if name in BUILTIN_SETS and name not in known:
            return (
                f"it holds the {name} migrations, which {mode} mode keeps in the "
                f"{name} database, not in {database}"
            )
        migration_set = known.get(name) or (own or {}).get(name)
        problem = judge_record(
            applied[name], migration_set, user_version=user_version if name == tracked else None
        )
        if problem is not None:
            return _describe(problem, name, migration_set)
        if migration_set is None and own is not None:
            return f"it holds migration set {name!r}, which this service does not know"
    return ""


def _describe(problem: RecordProblem, name: str, migration_set: MigrationSet | None) -> str:
    """A backup's words for a record it will not restore."""
    if problem.kind == "invalid":
        return f"the {name} migration record holds version {problem.version}"
    if problem.kind == "gap":
        return f"the {name} migration record has a gap: version {problem.version} is missing"
    assert migration_set is not None  # the other problems are judged against the code
    if problem.kind == "newer" and problem.version > migration_set.latest:
        return (
            f"it is at {name} version {problem.version}, newer than this code (which knows "
            f"versions up to {migration_set.latest}); upgrade async_store"
        )
    if problem.kind == "edited":
        migration = migration_set.migrations[problem.version - 1]
        return (
            f"its {name} version {problem.version} was applied from other SQL than "
            f"{migration.source}/up.sql (checksum {problem.checksum[:12]}…)"
        )
    # newer by user_version (a built-in set is recorded, so "foreign" cannot happen here)
    return (
        f"its user_version is {problem.user_version}, newer than this code's {name} "
        f"migrations (up to {migration_set.latest}); upgrade async_store"
    )
