"""Directories created owner-only (0700), for the database files, backups and log files alike.

Backend-neutral: ``sqlite._connection`` creates a database's directory with it, the backup code
a backup's, and ``logsinks`` a log file's.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["create_private_dirs"]


def create_private_dirs(path: Path) -> None:
    """Create ``path`` and every missing parent, each 0700. (``mkdir(parents=True)`` gives the
    parents the umask's default instead: 0777 under ``umask 0``, a folder anyone could use to
    swap the database directory.)"""
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise
