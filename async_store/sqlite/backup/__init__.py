"""Backups of SQLite databases: verified ``VACUUM INTO`` copies (``_copy``) with a manifest
(``_manifest``), what a restorable backup holds (``_contents``), retention and scheduling
(``_retention``), and restore, offline (``_restore``) and online (``_online_restore``)."""

from ._copy import BackupConfig, BackupFile, BackupManifest, verify_backup
from ._restore import restore_offline
from ._retention import BackupScheduler, list_backups

__all__ = [
    "BackupConfig",
    "BackupFile",
    "BackupManifest",
    "BackupScheduler",
    "list_backups",
    "restore_offline",
    "verify_backup",
]
