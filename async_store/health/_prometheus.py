"""The health report in the Prometheus text exposition format (version 0.0.4):
:func:`metrics_text` and the helpers that name, label and format its samples.

Re-exported by ``async_store.health``; ``SqlService.metrics_text()`` serves it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

from ._report import CheckpointResult, DatabaseHealth, HealthReport

__all__ = ["metrics_text"]


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
    holds = [(db.name, hold) for db in dbs if (hold := db.pool.writer_hold) is not None]
    metric(
        "writer_hold_info",
        "gauge",
        "What holds a database's writer now: its kind, task and newest statement.",
        [
            (_labels(database=n, kind=h.kind, task=h.task, last_sql=h.last_sql or ""), 1)
            for n, h in holds
        ],
    )
    metric(
        "writer_held_seconds",
        "gauge",
        "Seconds the writer has been held by what holds it now (absent when idle).",
        [(_labels(database=n), h.held_seconds) for n, h in holds],
    )
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
    (
        "acquire_timeouts",
        "pool_timeouts_total",
        "counter",
        "Waits for a free reader or for the writer that ended in PoolTimeout.",
    ),
    (
        "transaction_timeouts",
        "transaction_timeouts_total",
        "counter",
        "transaction() blocks rolled back past transaction_timeout.",
    ),
)
"""PoolStatistics field, metric name, type, help."""
