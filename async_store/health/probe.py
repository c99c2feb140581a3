"""Health: what an operator needs to know about a running service, as a ``HealthReport`` and as
Prometheus text. This module gathers the facts and judges them (:func:`collect`): each
database's backend reads its own (``backend_of(database).HEALTH_FACTS``; SQLite's in
``sqlite._health``); the report's types live in ``_report`` and the Prometheus text
(:func:`metrics_text`) in ``_prometheus``, both re-exported here.

``status`` is ``ok``, ``degraded`` (serving, but something needs attention: disk nearly full, a
checkpoint starved by a long read, a backup overdue or failing, projections lagging) or
``failing`` (a database cannot be queried); ``reasons`` says which.

Checkpoints: ``last_checkpoint`` of a database is the newest checkpoint the library ran on it on
purpose (the ``TRUNCATE`` after a backup, the one at close, ``Database.checkpoint()``), with its
mode, source and time. ``checkpoint_probe`` is a ``PASSIVE`` checkpoint each health check runs
itself. It never waits for a lock and never blocks a reader, but it is not free: it runs as a
job on the writer, so this process's writes to that database wait while it copies the WAL's
frames back into the database (one health check after a burst of writes may copy many). It is
the one way SQLite tells how far the WAL is behind now, so a starved checkpoint (a long read
holding an old snapshot) is judged on it.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from ..database import Database, backend_of
from ..errors import StoreError
from ..events._recorder import LAST_POSITION
from ..metrics import KINDS, Metrics
from ._prometheus import metrics_text as metrics_text
from ._report import CheckpointResult, DatabaseHealth, HealthReport, ReadFacts, Status

__all__ = ["CheckpointResult", "DatabaseHealth", "HealthReport"]

LOW_DISK_BYTES = 256 * 1024 * 1024
"""Free space below this (or below 5% of the disk) makes the service degraded."""
NEAR_FULL = 0.9
"""page_count / max_page_count above this makes the service degraded."""
PROJECTION_LAG = 1000
"""Events the projections may trail the state before the service is degraded."""


async def _database_health(database: Database, reasons: list[str]) -> DatabaseHealth | None:
    # Before the backend's job queues on the writer: the pool as it was when asked, the
    # report's own job not counted (and a writer held by a long transaction shows its queue).
    pool = database.statistics()
    hold = pool.writer_hold
    if hold is not None and hold.held_seconds > database.config.writer_hold_warning:
        reasons.append(f"degraded: {database.name}: the writer is {hold.describe()}")
    read_facts: ReadFacts = backend_of(database).HEALTH_FACTS
    try:
        health = await read_facts(database, pool)
    except StoreError as exc:
        reasons.append(f"failing: {database.name} cannot be queried: {exc}")
        return None
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
        position = int(await events.fetch_val(LAST_POSITION))
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
