"""The migration record (``schema_migrations``) as every backend reads it, and the rules that
judge it, written once: whether a store is this library's (:func:`foreign_reason`) and whether
a set's record agrees with the code (:func:`judge_record`). The runner refuses to migrate on
a problem, a backup's verification refuses the copy; each words the refusal for its reader.
Backends read the record (``sqlite._migration_record``); nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._sets import MigrationSet

__all__ = [
    "Applied",
    "Record",
    "RecordProblem",
    "StoreFacts",
    "foreign_reason",
    "foreign_refusal",
    "newest_versions",
    "judge_record",
]


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied version, as recorded."""

    checksum: str
    applied_at: str


Record: TypeAlias = Mapping[tuple[str, int], Applied]
"""The record of a store: (migration set, version) → what was applied."""


def newest_versions(record: Record) -> dict[str, int]:
    """Migration set → its newest applied version, sets in name order."""
    newest: dict[str, int] = {}
    for name, version in record:
        newest[name] = max(version, newest.get(name, version))
    return dict(sorted(newest.items()))


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What a backend reads of a store's record, in one snapshot."""

    record: Record
    user_version: int
    tables: tuple[str, ...] = ()
    """The tables and views, by name (read when asked for)."""


def foreign_reason(facts: StoreFacts) -> str | None:
    """Why a store is not an async_store database (``None``: it is one, or is empty). It is
    ours when it holds a migration record, or when it is empty: no ``user_version`` and no
    tables or views but ``schema_migrations``."""
    if facts.record:
        return None
    if facts.user_version:
        return f"the file has user_version {facts.user_version} but no async_store migration record"
    tables = facts.tables
    if tables and tables != ("schema_migrations",):
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        return f"the file holds tables ({shown}) but no async_store migration record"
    return None


def foreign_refusal(database: str, reason: str) -> str:
    """The words that refuse another application's store: ``reason`` from
    :func:`foreign_reason`, and how to adopt the store instead."""
    return (
        f"{database}: {reason}; it belongs to another application. To adopt it, give the "
        "migration set that describes its tables a baseline (MigrationSet.from_directory(..., "
        "baseline=N)): versions up to N are then recorded as applied without running"
    )


@dataclass(frozen=True, slots=True)
class RecordProblem:
    """What is wrong with a set's record, judged against the code (:func:`judge_record`)."""

    kind: Literal["foreign", "invalid", "gap", "newer", "edited"]
    """``foreign``: a ``user_version`` but no record of the set it follows; ``invalid``: a
    version below 1; ``gap``: a version missing below the newest; ``newer``: a version (or a
    ``user_version``) this code does not know; ``edited``: a version applied from other SQL
    than the code's."""
    version: int
    """``invalid``, ``gap``, ``edited``: the version at fault; else the newest recorded."""
    user_version: int = 0
    """The store's ``user_version`` when it follows the set, else 0."""
    checksum: str = ""
    """``edited``: the checksum recorded."""


def judge_record(
    checksums: Mapping[int, str],
    migration_set: MigrationSet | None,
    *,
    user_version: int | None = None,
) -> RecordProblem | None:
    """The first problem of a set's record (its applied versions → their recorded checksums),
    or ``None``. ``migration_set``: the code's set of that name (``None``: unknown, so only
    the record's own order is checked). ``user_version``: the store's, when it follows the
    set."""
    newest = max(checksums, default=0)
    tracked = user_version or 0
    if user_version is not None and tracked > newest and not checksums:
        return RecordProblem("foreign", newest, tracked)
    lowest = min(checksums, default=1)
    if lowest < 1:
        return RecordProblem("invalid", lowest, tracked)
    for version in range(1, newest + 1):
        if version not in checksums:
            return RecordProblem("gap", version, tracked)
    if migration_set is None:
        return None
    if newest > migration_set.latest or tracked > migration_set.latest:
        return RecordProblem("newer", newest, tracked)
    for migration in migration_set.migrations[:newest]:
        recorded = checksums[migration.version]
        if recorded != migration.checksum:
            return RecordProblem("edited", migration.version, tracked, recorded)
    return None
