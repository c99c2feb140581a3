"""What a backend gives the service for backups: making them, verifying them and restoring
them (SQLite: ``async_store.sqlite.backup``, ``backend_of(database).BACKUPS``). A backend
without one has no backups of its own (a server's are made with the server's tools)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ..database import Database
from ..migrations import MigrationSet
from ..migrations.runner import MigrationWork
from ._manifest import BackupFile, BackupManifest

__all__ = ["BackupBackend"]


class BackupBackend(Protocol):
    """A backend's backups."""

    async def create(
        self, databases: Sequence[Database], root: Path, *, mode: str, event_database: Database
    ) -> BackupManifest:
        """Back up ``databases`` into a new folder under ``root``, verified, and return its
        manifest; :class:`BackupError` leaves nothing behind."""
        ...

    async def tidy_after(self, databases: Sequence[Database]) -> None:
        """What follows a backup once it is taken, when it is cheap (SQLite: truncate each WAL
        no reader holds); never raises."""
        ...

    async def verify(
        self, directory: Path, *, migration_sets: Sequence[MigrationSet] | None = None
    ) -> BackupManifest:
        """Check a backup against its manifest and this code; :class:`BackupError` says
        what is wrong."""
        ...

    def check_target(
        self, backup: Path, mode: str, target_mode: str, targets: Collection[str]
    ) -> None:
        """Refuse (:class:`BackupError`) a backup of ``mode`` that cannot replace the
        databases ``targets`` of a service in ``target_mode``."""
        ...

    async def restore_online(
        self,
        databases: Sequence[Database],
        backup: Path,
        files: Mapping[str, BackupFile],
        migrations: Mapping[str, MigrationWork],
        *,
        before: Callable[[], None],
    ) -> None:
        """Replace each of the open ``databases`` with its copy in ``backup``, then run its
        ``migrations``; ``before()`` runs once every writer is held."""
        ...
