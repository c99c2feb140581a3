"""Backups of SQLite databases: verified ``VACUUM INTO`` copies (``_copy``), what a restorable
backup holds (``_contents``), and restore, offline (``_restore``) and online
(``_online_restore``). Their configuration, manifest and retention are backend-neutral
(``async_store.backups``); the service reaches this package through :data:`BACKUPS`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from ...backups._manifest import BackupFile, BackupManifest
from ...database import Database
from ...migrations import MigrationSet
from ...migrations.runner import MigrationWork
from ..database import SqliteDatabase
from ._contents import check_target
from ._copy import create_backup, verify_backup
from ._online_restore import restore_online
from ._restore import restore_offline

__all__ = ["restore_offline", "verify_backup"]

log = logging.getLogger("async_store.backup")


class SqliteBackups:
    """SQLite's backups, as the service asks for them (``BackupBackend``)."""

    async def create(
        self, databases: Sequence[Database], root: Path, *, mode: str, event_database: Database
    ) -> BackupManifest:
        """Back up every database."""
        sqlite = [_sqlite(database) for database in databases]
        return await create_backup(sqlite, root, mode=mode, event_database=_sqlite(event_database))

    async def tidy_after(self, databases: Sequence[Database]) -> None:
        """Truncate each WAL that no reader holds (what that checkpoint did is the database's
        ``last_checkpoint``); a failure is logged."""
        for database in map(_sqlite, databases):
            if database.statistics().readers_busy == 0 and not database.in_transaction:
                try:
                    result = await database.checkpoint("TRUNCATE", wait=False, source="backup")
                except Exception as exc:  # the backup itself is done and verified
                    log.warning("%s: checkpoint after the backup failed: %s", database.name, exc)
                else:
                    if result.busy:
                        log.info(
                            "%s: the WAL could not be truncated after the backup: a reader "
                            "(of this or another process) holds it",
                            database.name,
                        )

    async def verify(
        self, directory: Path, *, migration_sets: Sequence[MigrationSet] | None = None
    ) -> BackupManifest:
        return await verify_backup(directory, migration_sets=migration_sets)

    def check_target(
        self, backup: Path, mode: str, target_mode: str, targets: Collection[str]
    ) -> None:
        check_target(backup, mode, target_mode, targets)

    async def restore_online(
        self,
        databases: Sequence[Database],
        backup: Path,
        files: Mapping[str, BackupFile],
        migrations: Mapping[str, MigrationWork],
        *,
        before: Callable[[], None],
    ) -> None:
        sqlite = [_sqlite(database) for database in databases]
        await restore_online(sqlite, backup, files, migrations, before=before)


def _sqlite(database: Database) -> SqliteDatabase:
    if not isinstance(database, SqliteDatabase):
        raise TypeError(f"{database!r} is not a SQLite database")
    return database


BACKUPS = SqliteBackups()
"""What the service asks for backups of SQLite databases."""
