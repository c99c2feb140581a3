"""Backups of SQLite databases: verified ``VACUUM INTO`` copies (``_copy``), what a restorable
backup holds (``_contents``), and restore, offline (``_restore``) and online
(``_online_restore``). Their configuration, manifest and retention are backend-neutral
(``async_store.backups``)."""

from ._copy import verify_backup
from ._restore import restore_offline

__all__ = ["restore_offline", "verify_backup"]
