"""The health report's data types: :class:`DatabaseHealth` for one database and
:class:`HealthReport` for the whole service, JSON-ready through ``to_dict()``, and the
:class:`CheckpointResult` they carry (which ``SqliteDatabase.checkpoint()`` also returns).

``async_store.health`` fills them (and explains their statuses and checkpoints) and re-exports
them; ``_prometheus`` renders a report as Prometheus text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..database import Database
from ..metrics import LatencySummary
from ..statistics import PoolStatistics

__all__ = [
    "CheckpointResult",
    "DatabaseHealth",
    "HealthReport",
    "ReadFacts",
    "Status",
]

Status = Literal["ok", "degraded", "failing"]


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """What one ``PRAGMA wal_checkpoint`` reported: WAL frames, and how many were copied back."""

    busy: bool
    """The checkpoint could not finish: a reader or writer held the WAL it needed."""
    log_frames: int
    """Frames in the WAL when it ran (0 when the database is not in WAL mode)."""
    checkpointed_frames: int
    """Frames copied back into the database file."""
    mode: str = "PASSIVE"
    """``PASSIVE``, ``FULL``, ``RESTART`` or ``TRUNCATE``."""
    source: str = "health"
    """Who ran it: ``backup`` (after a backup), ``close``, ``health`` (the probe a health check
    runs), ``manual`` (``Database.checkpoint()``)."""
    at: str | None = None
    """When it ran: ISO-8601 UTC."""

    @property
    def starved(self) -> bool:
        """Frames were left behind: a reader holds a snapshot older than the WAL's end."""
        return self.checkpointed_frames < self.log_frames


class ReadFacts(Protocol):
    """The backend's piece health asks for (``backend_of(database).HEALTH_FACTS``): read
    ``database`` back into a :class:`DatabaseHealth`, around ``pool``, its statistics as they
    were when the check began. Raises :class:`StoreError` when it cannot be queried."""

    async def __call__(self, database: Database, pool: PoolStatistics) -> DatabaseHealth: ...


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    """One database as read back from SQLite and the file system."""

    name: str
    path: str
    size_bytes: int
    wal_bytes: int
    page_size: int
    page_count: int
    freelist_count: int
    max_page_count: int
    journal_mode: str
    synchronous: str
    schema_version: int
    schema_versions: dict[str, int]
    last_checkpoint: CheckpointResult | None
    """The newest checkpoint the library ran on this database (see :mod:`async_store.health`)."""
    pool: PoolStatistics
    errors: dict[str, int]
    checkpoint_probe: CheckpointResult | None = None
    """The ``PASSIVE`` checkpoint this health check ran."""

    def to_dict(self) -> dict[str, Any]:
        checkpoints = ("pool", "last_checkpoint", "checkpoint_probe")
        data = {name: getattr(self, name) for name in self.__slots__ if name not in checkpoints}
        data["last_checkpoint"] = _checkpoint_dict(self.last_checkpoint)
        data["checkpoint_probe"] = _checkpoint_dict(self.checkpoint_probe)
        data["pool"] = vars_of(self.pool)
        return data


def _checkpoint_dict(result: CheckpointResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "busy": result.busy,
        "log_frames": result.log_frames,
        "checkpointed_frames": result.checkpointed_frames,
        "mode": result.mode,
        "source": result.source,
        "at": result.at,
    }


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The whole service; ``to_dict()`` gives JSON-ready data."""

    status: Status
    reasons: tuple[str, ...]
    checked_at: str
    mode: str
    databases: dict[str, DatabaseHealth]
    event_position: int
    projector_lag: int | None
    last_backup_at: str | None
    last_backup_age_s: float | None
    backup_failures: int
    disk_free_bytes: int
    latency: dict[str, LatencySummary]
    errors: dict[str, int] = field(default_factory=dict)
    backup_failures_total: int = 0
    """Scheduled backups that failed since start (``backup_failures``: in a row, now)."""
    backups_taken: int = 0
    """Scheduled backups taken since start."""
    last_backup_error: str | None = None
    """Why the newest scheduled backup failed, while it is failing."""
    projection_error: str | None = None
    """The error projections are stuck on, if any."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "checked_at": self.checked_at,
            "mode": self.mode,
            "databases": {name: db.to_dict() for name, db in self.databases.items()},
            "event_position": self.event_position,
            "projector_lag": self.projector_lag,
            "last_backup_at": self.last_backup_at,
            "last_backup_age_s": self.last_backup_age_s,
            "backup_failures": self.backup_failures,
            "disk_free_bytes": self.disk_free_bytes,
            "latency": {kind: summary.to_dict() for kind, summary in self.latency.items()},
            "errors": dict(self.errors),
            "backup_failures_total": self.backup_failures_total,
            "backups_taken": self.backups_taken,
            "last_backup_error": self.last_backup_error,
            "projection_error": self.projection_error,
        }


def vars_of(stats: PoolStatistics) -> dict[str, Any]:
    data = {name: getattr(stats, name) for name in stats.__dataclass_fields__}
    hold = stats.writer_hold
    data["writer_hold"] = None if hold is None else dataclasses.asdict(hold)
    return data
