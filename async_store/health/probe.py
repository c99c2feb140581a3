"""Health: what an operator needs to know about a running service, as a ``HealthReport`` and as
Prometheus text. This module reads the facts and judges them (:func:`collect`); the report's
types live in ``_report`` and the Prometheus text (:func:`metrics_text`) in
``_prometheus``, both re-exported here.

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

import functools
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import PoolTimeout, StoreError
from ..metrics import KINDS, Metrics
from ..sqlite.database import SqliteDatabase as Database
from ..sqlite.database import run_checkpoint
from ..statistics import CheckpointResult, WriterHold
from ._prometheus import metrics_text as metrics_text
from ._report import DatabaseHealth, HealthReport, Status

__all__ = ["CheckpointResult", "DatabaseHealth", "HealthReport"]

LOW_DISK_BYTES = 256 * 1024 * 1024
"""Free space below this (or below 5% of the disk) makes the service degraded."""
NEAR_FULL = 0.9
"""page_count / max_page_count above this makes the service degraded."""
PROJECTION_LAG = 1000
"""Events the projections may trail the state before the service is degraded."""
WRITER_WAIT = 1.0
"""Seconds a health check waits for a busy writer before it reads its facts on a reader."""


_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _read_database(conn: sqlite3.Connection, *, probe: bool = True) -> dict[str, Any]:
    """Runs on the writer's thread, between batches (or, without the checkpoint ``probe``, on
    a reader while the writer is held)."""

    def pragma(name: str) -> Any:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]

    checkpoint = run_checkpoint(conn, mode="PASSIVE", wait=True, source="health") if probe else None
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
        "probe": checkpoint,
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
    hold = pool.writer_hold
    if hold is not None and hold.held_seconds > database.config.writer_hold_warning:
        reasons.append(f"degraded: {database.name}: the writer is {hold.describe()}")
    try:
        facts = await _read_facts(database, hold)
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


async def _read_facts(database: Database, hold: WriterHold | None) -> dict[str, Any]:
    """The facts of ``_read_database``, on the writer if it becomes free within
    ``WRITER_WAIT`` (a block holding it may not end soon); else on a reader, without the
    checkpoint probe."""
    if hold is None or hold.kind != "transaction":
        wait = min(WRITER_WAIT, database.config.acquire_timeout)
        try:
            return await database.run_on_writer(_read_database, acquire_timeout=wait)
        except PoolTimeout:
            pass
    return await database.run_in_reader(
        functools.partial(_read_database, probe=False), "health facts"
    )


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
