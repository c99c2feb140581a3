"""Backups, as the service sees them on any backend: where they go, how often and how many are
kept (``_retention``: :class:`BackupConfig`, :class:`BackupScheduler`, ``list_backups``), and a
backup's manifest (``_manifest``). Making, verifying and restoring a backup is a backend's
piece (SQLite: ``async_store.sqlite.backup``)."""

from ._manifest import BackupFile, BackupManifest
from ._retention import BackupConfig, BackupScheduler, list_backups

__all__ = ["BackupConfig", "BackupFile", "BackupManifest", "BackupScheduler", "list_backups"]
