"""A backup's manifest: :class:`BackupFile` and :class:`BackupManifest`, the name and format
of ``manifest.json``, and the reading that refuses a manifest whose entries name a file outside
the backup folder or are not what a backup writes.

A backend makes backups and verifies them against their manifest (SQLite:
``async_store.sqlite.backup``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackupError

__all__ = ["FORMAT", "MANIFEST", "BackupFile", "BackupManifest"]

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class BackupFile:
    """One database's copy in a backup."""

    name: str
    """File name inside the backup folder (``app_meta.db``)."""
    database: str
    """The database it copies (``app_meta`` or ``events``)."""
    size_bytes: int
    sha256: str
    user_version: int
    schema_versions: dict[str, int]
    """Migration set → newest applied version, from ``schema_migrations``."""


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds; ``files`` has one verified copy per database."""

    directory: Path
    created_at: str
    mode: str
    files: tuple[BackupFile, ...]
    event_position: int
    duration_ms: float
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "created_at": self.created_at,
            "mode": self.mode,
            "event_position": self.event_position,
            "duration_ms": self.duration_ms,
            "files": [vars(f).copy() for f in self.files],
        }

    @classmethod
    def read(cls, directory: Path) -> BackupManifest:
        """The manifest of the backup in ``directory``; :class:`BackupError` when missing or
        unreadable."""
        path = directory / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise BackupError(f"{path}: unknown manifest format {data.get('format')!r:.40}")
            files = tuple(BackupFile(**item) for item in data["files"])
            manifest = cls(
                directory,
                data["created_at"],
                data["mode"],
                files,
                data["event_position"],
                data["duration_ms"],
            )
        except BackupError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"{path}: not a readable async_store backup manifest: {exc}") from exc
        _check_entries(path, files)
        return manifest


def _check_entries(path: Path, files: Sequence[BackupFile]) -> None:
    """Refuse a manifest whose entries could make a verify or a restore read or replace a file
    outside the backup folder (a name with a path in it), or that are not what a backup
    writes."""
    if not files:
        raise BackupError(f"{path}: the manifest lists no files")
    names: set[str] = set()
    databases: set[str] = set()
    for item in files:
        name = item.name
        if (
            not isinstance(name, str)
            or name in ("", ".", "..")
            or name != os.path.basename(name)
            or "\\" in name
            or "\x00" in name
            or name == MANIFEST
        ):
            raise BackupError(
                f"{path}: {name!r:.80} is not a plain file name inside the backup; refused"
            )
        checks = {
            "database": isinstance(item.database, str) and item.database != "",
            "size_bytes": _is_count(item.size_bytes),
            "sha256": isinstance(item.sha256, str),
            "user_version": _is_count(item.user_version),
            "schema_versions": isinstance(item.schema_versions, dict)
            and all(isinstance(k, str) and _is_count(v) for k, v in item.schema_versions.items()),
        }
        wrong = [field for field, ok in checks.items() if not ok]
        if wrong:
            raise BackupError(f"{path}: {name}: malformed {', '.join(wrong)} in the manifest")
        if name in names or item.database in databases:
            raise BackupError(f"{path}: {name} ({item.database}) is listed twice")
        names.add(name)
        databases.add(item.database)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
