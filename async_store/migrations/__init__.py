"""Embedded SQL migrations: ``_sets`` reads and checks a set from disk, ``runner`` applies and
reverts them on start-up."""

from .runner import Migration, MigrationSet, MigrationStatus, migration_status

__all__ = ["Migration", "MigrationSet", "MigrationStatus", "migration_status"]
