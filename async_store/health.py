"""Health: what an operator needs to know about a running service, as a ``HealthReport`` and as
Prometheus text.

``status`` is ``ok``, ``degraded`` (serving, but something needs attention: disk nearly full, a
checkpoint starved by a long read, a backup overdue or failing, projections lagging) or
``failing`` (a database cannot be queried); ``reasons`` says which.

Checkpoints: ``last_checkpoint`` of a database is the newest checkpoint the library ran on it on
purpose (the ``TRUNCATE`` after a backup, the one at close, ``Database.checkpoint()``), with its
mode, source and time. ``checkpoint_probe`` is a ``PASSIVE`` checkpoint each health check runs
itself: it never waits and never blocks a reader or the writer, and it is the one way SQLite
tells how far the WAL is behind now, so a starved checkpoint (a long read holding an old
snapshot) is judged on it.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .database import Database
from .errors import StoreError
from .metrics import KINDS, LatencySummary, Metrics
from .statistics import CheckpointResult, PoolStatistics

__all__ = ["CheckpointResult", "DatabaseHealth", "HealthReport"]

Status = Literal["ok", "degraded", "failing"]

LOW_DISK_BYTES = 256 * 1024 * 1024
"""Free space below this (or below 5% of the disk) makes the service degraded."""
NEAR_FULL = 0.9
"""page_count / max_page_count above this makes the service degraded."""
PROJECTION_LAG = 1000
"""Events the projections may trail the state before the service is degraded."""


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
    """The newest checkpoint the library ran on this database (see the module docstring)."""
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
    return {name: getattr(stats, name) for name in stats.__dataclass_fields__}


_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _read_database(conn: sqlite3.Connection) -> dict[str, Any]:
    """Runs on the writer's thread, between batches."""

    def pragma(name: str) -> Any:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    busy, log_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    probed_at = datetime.now(UTC).isoformat(timespec="microseconds")
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
        "probe": CheckpointResult(
            bool(busy), max(log_frames, 0), max(checkpointed, 0), "PASSIVE", "health", probed_at
        ),
    }


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


async def _database_health(database: Database, reasons: list[str]) -> DatabaseHealth | None:
    # Before the job below queues on the writer: the pool as it was when asked, the report's
    # own job not counted (and a writer held by a long transaction shows its queue).
    pool = database.statistics()
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
        last_checkpoint=database.last_checkpoint,
        pool=pool,
        errors=dict(database.metrics.errors),
        checkpoint_probe=facts["probe"],
    )
    if health.page_count >= health.max_page_count * NEAR_FULL:
        reasons.append(
            f"degraded: {database.name} uses {health.page_count} of its {health.max_page_count} "
            "pages (max_page_count): nearly full"
        )
    checkpoint = health.checkpoint_probe
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
    backup_failures_total: int = 0,
    backups_taken: int = 0,
    last_backup_error: str | None = None,
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
        backup_failures_total=backup_failures_total,
        backups_taken=backups_taken,
        last_backup_error=last_backup_error,
        projection_error=projector_error,
    )


def _number(value: float) -> str:
    """Exact for whole numbers (a byte count must not lose digits), shortest repr otherwise."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels.items())
    return "{" + inner + "}"


def _timestamp(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


Sample = tuple[str, float]
"""A sample's rendered labels (``{a="b"}`` or empty) and its value."""


def metrics_text(report: HealthReport) -> str:
    """The report in the Prometheus text exposition format (version 0.0.4): every number of
    :meth:`HealthReport.to_dict` as a sample, text facts (journal mode, synchronous, paths,
    reasons, errors) as ``_info`` samples of value 1 whose labels hold the text. Every name
    starts with ``async_store_``; a fact the report does not have (no backup yet) is left out."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[Sample]) -> None:
        if not samples:
            return
        lines.append(f"# HELP async_store_{name} {_escape_help(help_text)}")
        lines.append(f"# TYPE async_store_{name} {kind}")
        for labels, value in samples:
            lines.append(f"async_store_{name}{labels} {_number(value)}")

    def single(name: str, kind: str, help_text: str, value: float | None) -> None:
        if value is not None:
            metric(name, kind, help_text, [("", value)])

    status_value = {"ok": 0, "degraded": 1, "failing": 2}[report.status]
    single("status", "gauge", "0 ok, 1 degraded, 2 failing.", status_value)
    metric(
        "status_reason_info",
        "gauge",
        "Why the service is not ok: one sample per reason.",
        [(_labels(reason=reason), 1) for reason in report.reasons],
    )
    metric("service_info", "gauge", "The service's mode.", [(_labels(mode=report.mode), 1)])
    single(
        "checked_timestamp_seconds",
        "gauge",
        "When the report was made (Unix time).",
        _timestamp(report.checked_at),
    )

    dbs = list(report.databases.values())

    def per_db(value: Callable[[DatabaseHealth], float | None]) -> list[Sample]:
        found = [(db.name, value(db)) for db in dbs]
        return [(_labels(database=name), v) for name, v in found if v is not None]

    metric(
        "database_info",
        "gauge",
        "A database's file, journal mode and synchronous setting.",
        [
            (
                _labels(
                    database=db.name,
                    path=db.path,
                    journal_mode=db.journal_mode,
                    synchronous=db.synchronous,
                ),
                1,
            )
            for db in dbs
        ],
    )
    metric("database_size_bytes", "gauge", "Database file size.", per_db(lambda d: d.size_bytes))
    metric("wal_size_bytes", "gauge", "WAL file size.", per_db(lambda d: d.wal_bytes))
    metric("page_size_bytes", "gauge", "PRAGMA page_size.", per_db(lambda d: d.page_size))
    metric("page_count", "gauge", "Pages in the database.", per_db(lambda d: d.page_count))
    metric(
        "freelist_pages",
        "gauge",
        "Unused pages in the database.",
        per_db(lambda d: d.freelist_count),
    )
    metric(
        "max_page_count",
        "gauge",
        "PRAGMA max_page_count: the most pages the database may grow to.",
        per_db(lambda d: d.max_page_count),
    )
    metric("schema_version", "gauge", "PRAGMA user_version.", per_db(lambda d: d.schema_version))
    metric(
        "migration_version",
        "gauge",
        "Newest applied version of each migration set.",
        [
            (_labels(database=db.name, migration_set=name), version)
            for db in dbs
            for name, version in sorted(db.schema_versions.items())
        ],
    )
    checkpoints: tuple[tuple[str, str, Callable[[DatabaseHealth], CheckpointResult | None]], ...]
    checkpoints = (
        (
            "last_checkpoint",
            "the newest checkpoint the library ran (after a backup, at close, on request)",
            lambda d: d.last_checkpoint,
        ),
        (
            "checkpoint_probe",
            "the PASSIVE checkpoint the health check ran",
            lambda d: d.checkpoint_probe,
        ),
    )
    for which, help_what, pick in checkpoints:
        ran = [(db.name, result) for db in dbs if (result := pick(db)) is not None]
        metric(
            f"{which}_info",
            "gauge",
            f"Mode and source of {help_what}.",
            [(_labels(database=n, mode=r.mode, source=r.source), 1) for n, r in ran],
        )
        for field_name, help_text in (
            ("busy", "1 if it could not finish"),
            ("log_frames", "WAL frames when it ran"),
            ("checkpointed_frames", "WAL frames it copied back"),
        ):
            metric(
                f"{which}_{field_name}",
                "gauge",
                f"{help_text.capitalize()}: {help_what}.",
                [(_labels(database=n), float(getattr(r, field_name))) for n, r in ran],
            )
        metric(
            f"{which}_timestamp_seconds",
            "gauge",
            f"When it ran (Unix time): {help_what}.",
            [
                (_labels(database=n), stamp)
                for n, r in ran
                if (stamp := _timestamp(r.at)) is not None
            ],
        )

    for attribute, name, kind, help_text in _POOL_METRICS:
        metric(name, kind, help_text, per_db(functools.partial(_pool_value, attribute)))
    metric(
        "database_errors_total",
        "counter",
        "Errors raised by one database, by kind.",
        [
            (_labels(database=db.name, kind=kind), count)
            for db in dbs
            for kind, count in sorted(db.errors.items())
        ],
    )

    single("event_position", "gauge", "Newest event position.", report.event_position)
    single("projector_lag", "gauge", "Events not yet projected.", report.projector_lag)
    single(
        "projection_error",
        "gauge",
        "1 while projections are stuck on an error (the error is a status reason).",
        int(report.projection_error is not None),
    )
    single("disk_free_bytes", "gauge", "Free space on the data disk.", report.disk_free_bytes)
    single(
        "last_backup_timestamp_seconds",
        "gauge",
        "When the newest backup was taken (Unix time).",
        _timestamp(report.last_backup_at),
    )
    single(
        "last_backup_age_seconds", "gauge", "Age of the newest backup.", report.last_backup_age_s
    )
    single(
        "backup_failures",
        "gauge",
        "Scheduled backups that failed in a row (0 once one succeeds).",
        report.backup_failures,
    )
    single(
        "backup_failures_total",
        "counter",
        "Scheduled backups that failed since start.",
        report.backup_failures_total,
    )
    single("backups_total", "counter", "Scheduled backups taken since start.", report.backups_taken)
    metric(
        "errors_total",
        "counter",
        "Errors raised, by kind.",
        [(_labels(kind=kind), count) for kind, count in sorted(report.errors.items())],
    )

    summaries = sorted(report.latency.items())
    lines.append("# HELP async_store_latency_seconds Operation latency.")
    lines.append("# TYPE async_store_latency_seconds summary")
    for kind, summary in summaries:
        for quantile, value in (
            ("0.5", summary.p50_ms),
            ("0.95", summary.p95_ms),
            ("0.99", summary.p99_ms),
        ):
            labels = _labels(operation=kind, quantile=quantile)
            lines.append(f"async_store_latency_seconds{labels} {_number(value / 1000)}")
        labels = _labels(operation=kind)
        lines.append(f"async_store_latency_seconds_sum{labels} {_number(summary.sum_ms / 1000)}")
        lines.append(f"async_store_latency_seconds_count{labels} {summary.count}")
    metric(
        "latency_max_seconds",
        "gauge",
        "The longest operation of each kind.",
        [(_labels(operation=kind), summary.max_ms / 1000) for kind, summary in summaries],
    )
    return "\n".join(lines) + "\n"


def _pool_value(attribute: str, db: DatabaseHealth) -> float:
    return float(getattr(db.pool, attribute))


_POOL_METRICS = (
    ("readers_total", "readers_total", "gauge", "Reader connections open."),
    ("readers_limit", "readers_limit", "gauge", "Reader connections the pool may open."),
    ("readers_busy", "readers_busy", "gauge", "Readers in use."),
    ("readers_idle", "readers_idle", "gauge", "Readers free."),
    ("writer_queue_depth", "writer_queue_depth", "gauge", "Write jobs waiting."),
    ("batches", "batches_total", "counter", "Group commits."),
    ("transactions", "transactions_total", "counter", "Committed transactions."),
    ("failed_transactions", "failed_transactions_total", "counter", "Rolled-back transactions."),
    ("mean_batch_size", "batch_size_mean", "gauge", "Transactions per group commit, on average."),
    (
        "largest_batch",
        "batch_size_largest",
        "gauge",
        "The most transactions one group commit held.",
    ),
    ("busy_retries", "busy_retries_total", "counter", "BEGIN IMMEDIATE retries."),
    ("acquire_waits", "reader_waits_total", "counter", "Reads that waited for a free reader."),
    ("acquire_timeouts", "reader_timeouts_total", "counter", "Waits for a reader that timed out."),
)
"""PoolStatistics field, metric name, type, help."""
