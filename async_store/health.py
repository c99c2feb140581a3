"""Health: what an operator needs to know about a running service, as a ``HealthReport`` and as
Prometheus text.

``status`` is ``ok``, ``degraded`` (serving, but something needs attention: disk nearly full, a
checkpoint starved by a long read, a backup overdue or failing, projections lagging) or
``failing`` (a database cannot be queried); ``reasons`` says which.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .database import Database
from .errors import StoreError
from .metrics import KINDS, LatencySummary, Metrics
from .statistics import PoolStatistics

__all__ = ["CheckpointResult", "DatabaseHealth", "HealthReport", "collect", "metrics_text"]

Status = Literal["ok", "degraded", "failing"]

LOW_DISK_BYTES = 256 * 1024 * 1024
"""Free space below this (or below 5% of the disk) makes the service degraded."""
NEAR_FULL = 0.9
"""page_count / max_page_count above this makes the service degraded."""
PROJECTION_LAG = 1000
"""Events the projections may trail the state before the service is degraded."""


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """``PRAGMA wal_checkpoint(PASSIVE)``: WAL frames, and how many were copied back."""

    busy: bool
    log_frames: int
    checkpointed_frames: int

    @property
    def starved(self) -> bool:
        """Frames were left behind: a reader holds a snapshot older than the WAL's end."""
        return self.checkpointed_frames < self.log_frames


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
    pool: PoolStatistics
    errors: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        data = {
            name: getattr(self, name)
            for name in self.__slots__
            if name not in ("pool", "last_checkpoint")
        }
        data["last_checkpoint"] = (
            None
            if self.last_checkpoint is None
            else {
                "busy": self.last_checkpoint.busy,
                "log_frames": self.last_checkpoint.log_frames,
                "checkpointed_frames": self.last_checkpoint.checkpointed_frames,
            }
        )
        data["pool"] = vars_of(self.pool)
        return data


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
        }


def vars_of(stats: PoolStatistics) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in stats.__dataclass_fields__}


_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _read_database(conn: sqlite3.Connection) -> dict[str, Any]:
    """Runs on the writer's thread, between batches."""

    def pragma(name: str) -> Any:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    busy, log_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    versions: dict[str, int] = {}
    if conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone():
        versions = dict(
            conn.execute(
                "SELECT migration_set, max(version) FROM schema_migrations GROUP BY migration_set"
            ).fetchall()
        )
    return {
        "page_size": pragma("page_size"),
        "page_count": pragma("page_count"),
        "freelist_count": pragma("freelist_count"),
        "max_page_count": pragma("max_page_count"),
        "journal_mode": pragma("journal_mode"),
        "synchronous": _SYNCHRONOUS.get(pragma("synchronous"), "?"),
        "schema_version": pragma("user_version"),
        "schema_versions": versions,
        "checkpoint": CheckpointResult(bool(busy), max(log_frames, 0), max(checkpointed, 0)),
    }


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


async def _database_health(database: Database, reasons: list[str]) -> DatabaseHealth | None:
    try:
        facts = await database.run_on_writer(_read_database)
    except StoreError as exc:
        reasons.append(f"failing: {database.name} cannot be queried: {exc}")
        return None
    health = DatabaseHealth(
        name=database.name,
        path=str(database.path),
        size_bytes=_file_size(database.path),
        wal_bytes=_file_size(Path(f"{database.path}-wal")),
        page_size=facts["page_size"],
        page_count=facts["page_count"],
        freelist_count=facts["freelist_count"],
        max_page_count=facts["max_page_count"],
        journal_mode=facts["journal_mode"],
        synchronous=facts["synchronous"],
        schema_version=facts["schema_version"],
        schema_versions=facts["schema_versions"],
        last_checkpoint=facts["checkpoint"],
        pool=database.statistics(),
        errors=dict(database.metrics.errors),
    )
    if health.page_count >= health.max_page_count * NEAR_FULL:
        reasons.append(
            f"degraded: {database.name} uses {health.page_count} of its {health.max_page_count} "
            "pages (max_page_count): nearly full"
        )
    checkpoint = health.last_checkpoint
    if checkpoint is not None and checkpoint.starved:
        reasons.append(
            f"degraded: {database.name} checkpoint starved: {checkpoint.checkpointed_frames} of "
            f"{checkpoint.log_frames} WAL frames copied back (a long read holds an old snapshot)"
        )
    return health


async def collect(
    databases: tuple[Database, ...],
    *,
    mode: str,
    events: Database,
    projector_lag: int | None,
    projector_error: str | None,
    last_backup_at: datetime | None,
    backup_interval: float | None,
    backup_failures: int,
) -> HealthReport:
    """Read every fact of the report (one short job on each writer, no table scans)."""
    reasons: list[str] = []
    try:
        position = int(await events.fetch_val("SELECT coalesce(max(position), 0) FROM events"))
    except StoreError:
        position = 0
    # After the read above, so the pool statistics in the report are the pools as they are now.
    found: dict[str, DatabaseHealth] = {}
    for database in databases:
        health = await _database_health(database, reasons)
        if health is not None:
            found[database.name] = health
    usage = shutil.disk_usage(databases[0].path.parent)
    if usage.free < min(LOW_DISK_BYTES, usage.total * 0.05) or usage.free < LOW_DISK_BYTES // 4:
        reasons.append(f"degraded: only {usage.free:,} bytes free on the data disk")
    now = datetime.now(UTC)
    age = None if last_backup_at is None else (now - last_backup_at).total_seconds()
    if backup_interval is not None and (age is None or age > 2 * backup_interval):
        reasons.append("degraded: no backup within twice the backup interval")
    if backup_failures:
        reasons.append(f"degraded: {backup_failures} scheduled backup(s) failed in a row")
    if projector_lag is not None and projector_lag > PROJECTION_LAG:
        reasons.append(f"degraded: projections trail the state by {projector_lag} events")
    if projector_error is not None:
        reasons.append(f"degraded: projection error: {projector_error}")
    merged = Metrics.merged([database.metrics for database in databases])
    status: Status = "ok"
    if any(reason.startswith("failing") for reason in reasons):
        status = "failing"
    elif reasons:
        status = "degraded"
    return HealthReport(
        status=status,
        reasons=tuple(reasons),
        checked_at=now.isoformat(timespec="seconds"),
        mode=mode,
        databases=found,
        event_position=position,
        projector_lag=projector_lag,
        last_backup_at=None if last_backup_at is None else last_backup_at.isoformat(),
        last_backup_age_s=None if age is None else round(age, 3),
        backup_failures=backup_failures,
        disk_free_bytes=usage.free,
        latency={kind: merged.latency[kind].summary() for kind in KINDS},
        errors=merged.errors,
    )


def _number(value: float) -> str:
    """Exact for whole numbers (a byte count must not lose digits), shortest repr otherwise."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def metrics_text(report: HealthReport) -> str:
    """The report in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP async_store_{name} {help_text}")
        lines.append(f"# TYPE async_store_{name} {kind}")
        for labels, value in samples:
            lines.append(f"async_store_{name}{labels} {_number(value)}")

    status_value = {"ok": 0, "degraded": 1, "failing": 2}[report.status]
    metric("status", "gauge", "0 ok, 1 degraded, 2 failing.", [("", status_value)])
    dbs = report.databases.values()

    def per_db(attribute: str) -> list[tuple[str, float]]:
        return [(f'{{database="{db.name}"}}', float(getattr(db, attribute))) for db in dbs]

    def per_pool(attribute: str) -> list[tuple[str, float]]:
        return [(f'{{database="{db.name}"}}', float(getattr(db.pool, attribute))) for db in dbs]

    metric("database_size_bytes", "gauge", "Database file size.", per_db("size_bytes"))
    metric("wal_size_bytes", "gauge", "WAL file size.", per_db("wal_bytes"))
    metric("page_count", "gauge", "Pages in the database.", per_db("page_count"))
    metric("freelist_pages", "gauge", "Unused pages in the database.", per_db("freelist_count"))
    metric("schema_version", "gauge", "PRAGMA user_version.", per_db("schema_version"))
    metric("readers_busy", "gauge", "Readers in use.", per_pool("readers_busy"))
    metric("readers_idle", "gauge", "Readers free.", per_pool("readers_idle"))
    metric("writer_queue_depth", "gauge", "Write jobs waiting.", per_pool("writer_queue_depth"))
    metric("batches_total", "counter", "Group commits.", per_pool("batches"))
    metric("transactions_total", "counter", "Committed transactions.", per_pool("transactions"))
    metric(
        "failed_transactions_total",
        "counter",
        "Rolled-back transactions.",
        per_pool("failed_transactions"),
    )
    metric("busy_retries_total", "counter", "BEGIN IMMEDIATE retries.", per_pool("busy_retries"))
    metric("event_position", "gauge", "Newest event position.", [("", report.event_position)])
    if report.projector_lag is not None:
        metric("projector_lag", "gauge", "Events not yet projected.", [("", report.projector_lag)])
    metric(
        "disk_free_bytes", "gauge", "Free space on the data disk.", [("", report.disk_free_bytes)]
    )
    if report.last_backup_age_s is not None:
        metric(
            "last_backup_age_seconds",
            "gauge",
            "Age of the newest backup.",
            [("", report.last_backup_age_s)],
        )
    metric(
        "errors_total",
        "counter",
        "Errors raised, by kind.",
        [(f'{{kind="{kind}"}}', float(count)) for kind, count in sorted(report.errors.items())],
    )
    samples: list[tuple[str, float]] = []
    counts: list[tuple[str, float]] = []
    for kind, summary in report.latency.items():
        for quantile, value in (
            ("0.5", summary.p50_ms),
            ("0.95", summary.p95_ms),
            ("0.99", summary.p99_ms),
        ):
            samples.append((f'{{operation="{kind}",quantile="{quantile}"}}', value / 1000))
        counts.append((f'{{operation="{kind}"}}', float(summary.count)))
    metric("latency_seconds", "summary", "Operation latency.", samples)
    lines.extend(
        f"async_store_latency_seconds_count{labels} {_number(value)}" for labels, value in counts
    )
    return "\n".join(lines) + "\n"
