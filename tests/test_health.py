"""Health reports, Prometheus text, and the latency histograms behind them."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import math
import random
import re
import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from async_store import (
    BackupConfig,
    DatabaseBusy,
    IntegrityViolation,
    NewEvent,
    PoolTimeout,
    SqlConfig,
    SqlService,
    StoreError,
)
from async_store.cli import main
from async_store.health.probe import HealthReport, metrics_text
from async_store.metrics import KINDS, LatencyHistogram, Metrics
from async_store.state import KnowledgeBase, KnowledgeBaseAdd, SettingSet, StateManager
from tests.conftest import on_sqlite
from tests.test_backup import transaction_held, wait_until

Mode = Literal["production", "mvp"]

MODES = [pytest.param("production", id="production"), pytest.param("mvp", id="mvp")]

# One bucket of the histogram spans a factor 10 ** (1 / 10) ≈ 1.259.
BUCKET = 10 ** (1 / 10)


def config(tmp_path: Path, mode: Mode) -> SqlConfig:
    return SqlConfig.in_directory(tmp_path / "data", mvp=mode == "mvp")


# -- Prometheus text -------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
# A label value escapes exactly three characters: backslash, double quote and line feed.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?P<labels>\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? (?P<value>\S+)$"
)
COMMENT = re.compile(rf"^# (?P<kind>HELP|TYPE) (?P<name>{_NAME})(?: (?P<rest>.*))?$")
TYPES = {"counter", "gauge", "summary", "histogram", "untyped"}
HELP_TEXT = re.compile(r"(?:[^\\\n]|\\[\\n])*")
LABEL_PAIR = re.compile(r'(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"')


def labels_of(raw: str) -> dict[str, str]:
    """``{a="x\\"y"}`` as ``{"a": 'x"y'}``, escapes undone."""
    return {
        match["name"]: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], match["value"])
        for match in LABEL_PAIR.finditer(raw)
    }


def parse_prometheus(text: str) -> dict[tuple[str, str], float]:
    """Parse the Prometheus text exposition format strictly enough to catch mistakes: every
    sample line is ``name{labels} value`` with a float value; each family has one HELP and one
    TYPE, both before its samples; a family's samples are contiguous. Returns
    ``(name, labels) → value``."""
    assert text.endswith("\n")
    samples: dict[tuple[str, str], float] = {}
    helped: set[str] = set()
    typed: dict[str, str] = {}
    finished: set[str] = set()
    current: str | None = None
    for line in text.splitlines():
        assert line, "blank line in the exposition"
        comment = COMMENT.match(line)
        if comment is not None:
            name, kind = comment["name"], comment["kind"]
            assert (name not in finished and name not in typed) or kind == "HELP", line
            if kind == "HELP":
                assert name not in helped, f"second HELP for {name}"
                assert HELP_TEXT.fullmatch(comment["rest"] or ""), f"bad escape: {line!r}"
                helped.add(name)
            else:
                assert comment["rest"] in TYPES, line
                assert name not in typed, f"second TYPE for {name}"
                typed[name] = comment["rest"]
            continue
        assert not line.startswith("#"), line
        match = SAMPLE.match(line)
        assert match is not None, f"not a sample line: {line!r}"
        name = match["name"]
        family = name
        for suffix in ("_count", "_sum", "_bucket"):
            base = name.removesuffix(suffix)
            if base != name and typed.get(base) in ("summary", "histogram"):
                family = base
        assert family in helped, f"{name}: no HELP before its samples"
        assert family in typed, f"{name}: no TYPE before its samples"
        if family != current:
            assert family not in finished, f"{family}: samples are not contiguous"
            if current is not None:
                finished.add(current)
            current = family
        value = float(match["value"])  # raises on a malformed value
        key = (name, match["labels"] or "")
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = value
    return samples


# -- a healthy service -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_healthy_service_reports_ok_with_its_facts(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('theme', '\"dark\"')")
        await sql.event_store.append("s", [NewEvent("Happened", {"n": 1})])
        report = await sql.health()
        stats = {db.name: db.statistics() for db in sql.databases}

    assert report.status == "ok", report.reasons
    assert report.reasons == ()
    assert report.mode == mode
    assert report.event_position == 1
    data = json.loads(json.dumps(report.to_dict()))
    assert data["status"] == "ok"
    expected = {"app_meta": "NORMAL"} if mode == "mvp" else {"app_meta": "NORMAL", "events": "FULL"}
    assert set(data["databases"]) == set(expected)
    for name, synchronous in expected.items():
        db = data["databases"][name]
        assert db["name"] == name
        assert isinstance(db["size_bytes"], int)
        assert db["size_bytes"] > 0
        assert isinstance(db["wal_bytes"], int)
        assert db["wal_bytes"] >= 0
        assert db["journal_mode"] == "wal"
        assert db["synchronous"] == synchronous
        assert db["schema_version"] == (2 if name == "events" else 1)
        assert db["max_page_count"] > db["page_count"] > 0
        # No backup and no close yet: the library has run no checkpoint of its own; the probe
        # the health check ran found the WAL copied back.
        assert db["last_checkpoint"] is None
        probe = db["checkpoint_probe"]
        assert (probe["mode"], probe["source"]) == ("PASSIVE", "health")
        assert probe["checkpointed_frames"] == probe["log_frames"]
        pool = db["pool"]
        assert pool["database"] == name
        assert pool["readers_total"] == stats[name].readers_total
        assert pool["readers_limit"] == stats[name].readers_limit > 0
        assert pool["transactions"] == stats[name].transactions > 0
    versions = {name: db["schema_versions"] for name, db in data["databases"].items()}
    if mode == "mvp":
        assert versions == {"app_meta": {"app_meta": 1, "events": 2}}
    else:
        assert versions == {"app_meta": {"app_meta": 1}, "events": {"events": 2}}
    assert data["last_backup_at"] is None
    assert data["backup_failures"] == 0
    assert data["disk_free_bytes"] > 0


@pytest.mark.parametrize("mode", MODES)
async def test_latency_has_quantiles_for_every_operation_kind(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        for i in range(20):
            await sql.app.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?)", (f"k{i}", json.dumps(i))
            )
            await sql.app.fetch_one("SELECT value FROM settings WHERE key = ?", (f"k{i}",))
            async with sql.app.transaction() as tx:
                await tx.execute("UPDATE settings SET value = '0' WHERE key = ?", (f"k{i}",))
            await sql.event_store.append(f"stream-{i}", [NewEvent("Ticked", {})])
        async with StateManager(sql) as state:
            await state.mutate(KnowledgeBaseAdd(KnowledgeBase(id="kb-1", name="Docs")))
            for i in range(5):
                await state.mutate(SettingSet(f"s{i}", i))
            report = await sql.health()

    data = json.loads(json.dumps(report.to_dict()))
    assert set(KINDS) == {"read", "write", "transaction", "append", "mutate"}
    assert set(KINDS) <= set(data["latency"])
    for kind in KINDS:
        summary = data["latency"][kind]
        assert summary["count"] >= 6, kind
        assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"], kind
        assert summary["p99_ms"] <= summary["max_ms"], kind
    assert data["latency"]["mutate"]["count"] == 6
    assert data["latency"]["append"]["count"] >= 20


# -- degraded --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_nearly_full_database_is_degraded(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        pages = await sql.app.fetch_val("PRAGMA page_count")
        # max_page_count is per connection: set it on the writer, the one that writes. The
        # PRAGMA returns a row: fetch it, or the unfinished statement stays open on the writer.
        await on_sqlite(sql.app).run_on_writer(
            lambda c: c.execute(f"PRAGMA max_page_count = {pages + 1}").fetchall()
        )
        report = await sql.health()
    assert report.status == "degraded"
    assert report.databases["app_meta"].max_page_count == pages + 1
    assert any("app_meta" in r and "nearly full" in r for r in report.reasons), report.reasons


async def test_a_maintenance_job_returning_a_cursor_does_not_break_the_writer(
    tmp_path: Path,
) -> None:
    async with SqlService(config(tmp_path, "mvp")) as sql:
        pages = await sql.app.fetch_val("PRAGMA page_count")
        gc.disable()  # what the collector would do, and when, is left to chance otherwise
        try:
            await on_sqlite(sql.app).run_on_writer(
                lambda c: c.execute(f"PRAGMA max_page_count = {pages + 100}")
            )
            report = await sql.health()
        finally:
            gc.enable()
    assert report.status == "ok", report.reasons


@pytest.mark.parametrize("mode", MODES)
async def test_a_reader_starving_checkpoints_is_degraded(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        async with sql.app.read() as snapshot:
            await snapshot.fetch_val("SELECT count(*) FROM settings")
            for i in range(200):
                await sql.app.execute(
                    "INSERT INTO logs(level, logger, message) VALUES ('INFO', 'fill', ?)",
                    ("x" * 500 + str(i),),
                )
            report = await sql.health()
        after = await sql.health()

    checkpoint = report.databases["app_meta"].checkpoint_probe
    assert checkpoint is not None
    assert checkpoint.starved
    assert checkpoint.checkpointed_frames < checkpoint.log_frames
    assert report.databases["app_meta"].wal_bytes > 0
    assert report.status == "degraded"
    assert any("checkpoint" in r for r in report.reasons), report.reasons
    # Once the reader lets go, the next checkpoint catches up.
    assert after.status == "ok", after.reasons


async def _close_even_if_broken(sql: SqlService) -> None:
    try:
        await sql.close()
    finally:
        for database in sql.databases:  # what close() left open if it raised
            await database.close()


@pytest.mark.parametrize(
    "cause",
    [
        pytest.param("not-enough-space", id="not-enough-space"),
        pytest.param("folder-under-a-file", id="folder-under-a-file"),
    ],
)
async def test_a_failing_scheduled_backup_is_degraded(
    tmp_path: Path, cause: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if cause == "folder-under-a-file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        root = blocker / "backups"
    else:
        root = tmp_path / "backups"
        real: Callable[[Path], shutil._ntuple_diskusage] = shutil.disk_usage

        def little_room_for_backups(path: Path) -> shutil._ntuple_diskusage:
            usage = real(path)
            return usage._replace(free=4096) if Path(path) == root else usage

        monkeypatch.setattr(
            "async_store.sqlite.backup._copy.shutil.disk_usage", little_room_for_backups
        )
    schedule = BackupConfig(directory=root, interval=0.05)
    sql = SqlService(config(tmp_path, "production"), backup=schedule)
    await sql.start()
    try:
        scheduler = sql.backup_scheduler
        # The schedule runs every 0.05 s.
        await wait_until(lambda: scheduler.total_failures >= 1, limit=1.5)
        report = await sql.health()
        assert report.status == "degraded"
        assert report.backup_failures >= 1
        assert any("backup" in r and "failed" in r for r in report.reasons), report.reasons
        assert scheduler.last_error is not None
        await sql.close()
    finally:
        await _close_even_if_broken(sql)


# -- Prometheus text -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_metrics_text_is_prometheus_text_with_the_latency_quantiles(
    tmp_path: Path, mode: Mode
) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('a', '1')")
        await sql.app.fetch_all("SELECT * FROM settings")
        await sql.event_store.append("s", [NewEvent("Happened", {})])
        text = await sql.metrics_text()

    samples = parse_prometheus(text)
    assert samples[("async_store_status", "")] == 0
    assert samples[("async_store_event_position", "")] == 1
    for database in ("app_meta",) if mode == "mvp" else ("app_meta", "events"):
        assert samples[("async_store_database_size_bytes", f'{{database="{database}"}}')] > 0
    for kind in KINDS:
        for quantile in ("0.5", "0.95", "0.99"):
            key = ("async_store_latency_seconds", f'{{operation="{kind}",quantile="{quantile}"}}')
            assert key in samples, key
            assert samples[key] >= 0
        assert ("async_store_latency_seconds_count", f'{{operation="{kind}"}}') in samples
    assert samples[("async_store_latency_seconds", '{operation="write",quantile="0.5"}')] > 0
    assert samples[("async_store_latency_seconds_count", '{operation="write"}')] >= 1


async def test_metrics_text_keeps_large_values_exact(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path, "mvp")) as sql:
        report = await sql.health()
    text = metrics_text(dataclasses.replace(report, disk_free_bytes=123_456_789_012))
    assert parse_prometheus(text)[("async_store_disk_free_bytes", "")] == 123_456_789_012


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("async_store_x 1\n# HELP async_store_x late\n", id="help-after-sample"),
        pytest.param("# HELP a h\n# TYPE a gauge\na{b=c} 1\n", id="unquoted-label"),
        pytest.param("# HELP a h\n# TYPE a gauge\na one\n", id="not-a-number"),
        pytest.param(
            '# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\na 1\nb 1\na{x="1"} 1\n',
            id="family-split",
        ),
    ],
)
def test_the_prometheus_parser_catches_mistakes(bad: str) -> None:
    with pytest.raises((AssertionError, ValueError)):
        parse_prometheus(bad)


# -- latency histograms ----------------------------------------------------------------------


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_within_one_bucket(histogram: LatencyHistogram, values: list[float]) -> None:
    for q in (0.5, 0.95, 0.99):
        true = exact_quantile(values, q)
        reported = histogram.quantile(q)
        # The upper edge of the true value's bucket (capped at the maximum): never below the
        # truth, at most one bucket above it.
        assert true * (1 - 1e-9) <= reported <= true * BUCKET * (1 + 1e-9), (q, true, reported)


_rng = random.Random(1234)
DISTRIBUTIONS = [
    pytest.param([i / 1000 for i in range(1, 1001)], id="uniform-1ms-to-1s"),
    pytest.param([0.005] * 100, id="constant-5ms"),
    pytest.param([_rng.expovariate(1 / 0.002) + 1e-6 for _ in range(5000)], id="exponential-2ms"),
    pytest.param([0.001] * 900 + [0.1] * 100, id="bimodal-1ms-and-100ms"),
    pytest.param([10 ** _rng.uniform(-6, 3) for _ in range(2000)], id="log-uniform-1us-to-1000s"),
]


@pytest.mark.parametrize("values", DISTRIBUTIONS)
def test_histogram_quantiles_on_known_distributions(values: list[float]) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    assert histogram.count == len(values)
    assert_within_one_bucket(histogram, values)
    summary = histogram.summary()
    assert summary.max_ms == round(max(values) * 1000, 4)
    assert summary.p50_ms <= summary.p95_ms <= summary.p99_ms <= summary.max_ms


def test_bimodal_quantiles_land_on_the_right_mode() -> None:
    histogram = LatencyHistogram()
    for value in [0.001] * 900 + [0.1] * 100:
        histogram.record(value)
    summary = histogram.summary()
    assert 1.0 <= summary.p50_ms <= 1.0 * BUCKET
    assert summary.p95_ms == summary.p99_ms == 100.0  # capped at the maximum


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-6, max_value=1e3), min_size=1, max_size=200))
def test_histogram_quantiles_are_within_one_bucket(values: list[float]) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    assert_within_one_bucket(histogram, values)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1e3), max_size=100),
    st.lists(st.floats(min_value=0, max_value=1e3), max_size=100),
)
def test_merging_equals_recording_everything_in_one(left: list[float], right: list[float]) -> None:
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for value in left:
        a.record(value)
        both.record(value)
    for value in right:
        b.record(value)
        both.record(value)
    a.merge(b)
    assert a.count == both.count == len(left) + len(right)
    assert a.summary() == both.summary()


def test_an_empty_histogram_reports_zeros() -> None:
    histogram = LatencyHistogram()
    assert histogram.count == 0
    assert histogram.quantile(0.5) == histogram.quantile(0.99) == 0.0
    summary = histogram.summary()
    assert (summary.count, summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms) == (
        0,
        0.0,
        0.0,
        0.0,
        0.0,
    )
    other = LatencyHistogram()
    other.record(0.002)
    other.merge(histogram)
    assert other.summary().count == 1
    histogram.merge(other)
    assert histogram.summary() == other.summary()


def test_durations_below_a_microsecond_are_kept() -> None:
    histogram = LatencyHistogram()
    histogram.record(0.0)
    histogram.record(1e-9)
    assert histogram.count == 2
    assert histogram.quantile(0.99) == 1e-9  # capped at the maximum seen


def test_an_overflowing_duration_is_not_under_reported() -> None:
    histogram = LatencyHistogram()
    histogram.record(5000.0)
    assert histogram.quantile(0.5) == 5000.0


def test_metrics_merge_latencies_and_errors_of_several_parts() -> None:
    first, second = Metrics(), Metrics()
    first.record("read", 0.001)
    second.record("read", 0.003)
    second.record("custom", 0.5)
    first.count_error(ValueError("x"))
    second.count_error(ValueError("y"))
    second.count_error(KeyError("z"))
    total = Metrics.merged([first, second])
    assert total.latency["read"].count == 2
    assert total.latency["custom"].count == 1
    assert all(kind in total.latency for kind in KINDS)
    assert total.errors == {"ValueError": 2, "KeyError": 1}
    assert first.latency["read"].count == 1  # the parts are untouched


# -- every fact of the report in the Prometheus text -----------------------------------------

Index = dict[tuple[str, frozenset[tuple[str, str]]], float]

_DATABASE_FIELDS = {
    "size_bytes": "database_size_bytes",
    "wal_bytes": "wal_size_bytes",
    "page_size": "page_size_bytes",
    "page_count": "page_count",
    "freelist_count": "freelist_pages",
    "max_page_count": "max_page_count",
    "schema_version": "schema_version",
}
_POOL_FIELDS = {
    "readers_total": "readers_total",
    "readers_limit": "readers_limit",
    "readers_busy": "readers_busy",
    "readers_idle": "readers_idle",
    "writer_queue_depth": "writer_queue_depth",
    "batches": "batches_total",
    "transactions": "transactions_total",
    "failed_transactions": "failed_transactions_total",
    "mean_batch_size": "batch_size_mean",
    "largest_batch": "batch_size_largest",
    "busy_retries": "busy_retries_total",
    "acquire_waits": "reader_waits_total",
    "acquire_timeouts": "pool_timeouts_total",
    "transaction_timeouts": "transaction_timeouts_total",
}
_TOP_FIELDS = {
    "event_position": "event_position",
    "projector_lag": "projector_lag",
    "last_backup_age_s": "last_backup_age_seconds",
    "backup_failures": "backup_failures",
    "backup_failures_total": "backup_failures_total",
    "backups_taken": "backups_total",
    "disk_free_bytes": "disk_free_bytes",
}
_QUANTILES = {"p50_ms": "0.5", "p95_ms": "0.95", "p99_ms": "0.99"}


def expected_sample(path: tuple[str, ...]) -> tuple[str, dict[str, str], float]:
    """Where the number at ``path`` of ``to_dict()`` is in the exposition: metric name (without
    the ``async_store_`` prefix), labels, and the factor from the report's unit to the
    metric's. A path this does not know fails the test: a new number needs a metric."""
    match path:
        case (top,) if top in _TOP_FIELDS:
            return _TOP_FIELDS[top], {}, 1
        case ("errors", kind):
            return "errors_total", {"kind": kind}, 1
        case ("latency", kind, "count"):
            return "latency_seconds_count", {"operation": kind}, 1
        case ("latency", kind, "sum_ms"):
            return "latency_seconds_sum", {"operation": kind}, 1 / 1000
        case ("latency", kind, "max_ms"):
            return "latency_max_seconds", {"operation": kind}, 1 / 1000
        case ("latency", kind, quantile) if quantile in _QUANTILES:
            return "latency_seconds", {"operation": kind, "quantile": _QUANTILES[quantile]}, 1e-3
        case ("databases", db, field) if field in _DATABASE_FIELDS:
            return _DATABASE_FIELDS[field], {"database": db}, 1
        case ("databases", db, "schema_versions", migration_set):
            return "migration_version", {"database": db, "migration_set": migration_set}, 1
        case ("databases", db, "pool", field) if field in _POOL_FIELDS:
            return _POOL_FIELDS[field], {"database": db}, 1
        case ("databases", db, "pool", "writer_hold", "held_seconds"):
            return "writer_held_seconds", {"database": db}, 1
        case ("databases", db, "errors", kind):
            return "database_errors_total", {"database": db, "kind": kind}, 1
        case ("databases", db, ("last_checkpoint" | "checkpoint_probe") as which, field):
            return f"{which}_{field}", {"database": db}, 1
    raise AssertionError(f"no metric for {'.'.join(path)} of the report")


def numbers(data: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
    """Every number (bools included) in nested dicts, with its path."""
    if isinstance(data, dict):
        return [item for key, value in data.items() for item in numbers(value, (*path, key))]
    if isinstance(data, bool | int | float):
        return [(path, float(data))]
    return []


def index(text: str) -> Index:
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("#") else line.split("{")[0].split(" ")[0]
        assert name.startswith("async_store_"), line
    return {
        (name, frozenset(labels_of(raw).items())): value
        for (name, raw), value in parse_prometheus(text).items()
    }


def lookup(samples: Index, name: str, labels: dict[str, str]) -> float:
    key = (f"async_store_{name}", frozenset(labels.items()))
    assert key in samples, f"{key} is not in the exposition"
    return samples[key]


def timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize("mode", MODES)
async def test_metrics_text_holds_every_fact_of_the_report(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('a', '1')")
        await sql.event_store.append("s", [NewEvent("Happened", {})])
        with pytest.raises(StoreError):
            await sql.app.fetch_all("SELECT * FROM no_such_table")
        await sql.backup()  # a checkpoint of the library's own, and a backup time
        async with StateManager(sql) as state:
            await state.mutate(SettingSet("theme", "dark"))
            await state.flush()
            report = await sql.health()
    # Text facts with the characters label values must escape.
    report = dataclasses.replace(report, reasons=('degraded: "quoted" \\ and\na new line',))

    text = metrics_text(report)
    samples = index(text)
    data = report.to_dict()
    found = numbers(data)
    assert len(found) > 60
    for path, value in found:
        name, labels, factor = expected_sample(path)
        assert lookup(samples, name, labels) == pytest.approx(value * factor, rel=1e-9), path

    assert lookup(samples, "status", {}) == {"ok": 0, "degraded": 1, "failing": 2}[report.status]
    assert lookup(samples, "status_reason_info", {"reason": report.reasons[0]}) == 1
    assert lookup(samples, "service_info", {"mode": mode}) == 1
    assert lookup(samples, "checked_timestamp_seconds", {}) == timestamp(data["checked_at"])
    assert data["last_backup_at"] is not None
    assert lookup(samples, "last_backup_timestamp_seconds", {}) == pytest.approx(
        timestamp(data["last_backup_at"])
    )
    assert lookup(samples, "projection_error", {}) == 0
    for name, db in data["databases"].items():
        info = {
            "database": name,
            "path": db["path"],
            "journal_mode": db["journal_mode"],
            "synchronous": db["synchronous"],
        }
        assert lookup(samples, "database_info", info) == 1
        for which in ("last_checkpoint", "checkpoint_probe"):
            checkpoint = db[which]
            labels = {"database": name, "mode": checkpoint["mode"], "source": checkpoint["source"]}
            assert lookup(samples, f"{which}_info", labels) == 1
            assert lookup(samples, f"{which}_timestamp_seconds", {"database": name}) == (
                pytest.approx(timestamp(checkpoint["at"]))
            )
    assert any(kind for kind in data["errors"])  # the failing query is counted
    for kind in KINDS:
        # A summary: quantiles, _sum and _count for each operation.
        assert lookup(samples, "latency_seconds_count", {"operation": kind}) >= 0
        assert lookup(samples, "latency_seconds_sum", {"operation": kind}) >= 0
    write = data["latency"]["write"]
    assert write["sum_ms"] >= write["max_ms"] > 0


def test_prometheus_label_values_are_escaped() -> None:
    raw = '{a="back\\\\slash",b="\\"quoted\\"",c="new\\nline"}'
    assert labels_of(raw) == {"a": "back\\slash", "b": '"quoted"', "c": "new\nline"}
    with pytest.raises(AssertionError):
        parse_prometheus('# HELP a h\n# TYPE a gauge\na{b="bad \\x escape"} 1\n')
    with pytest.raises(AssertionError):
        parse_prometheus('# HELP a raw "quote\n# TYPE a gauge\na{b="x"y"} 1\n')


# -- what the report covers ------------------------------------------------------------------


async def test_a_database_that_cannot_be_queried_is_failing(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path, "production")) as sql:
        await sql.events.close()  # as if its pool were gone: nothing can be read from it
        report = await sql.health()
    assert report.status == "failing"
    assert any(r.startswith("failing: events cannot be queried") for r in report.reasons)
    assert set(report.databases) == {"app_meta"}  # what could be read is still reported
    samples = parse_prometheus(metrics_text(report))
    assert samples[("async_store_status", "")] == 2


def test_the_health_command_exits_4_when_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = str(tmp_path / "data")
    assert main(["health", "--data", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"

    real = SqlService.health

    async def with_events_gone(self: SqlService) -> HealthReport:
        await self.events.close()
        return await real(self)

    monkeypatch.setattr(SqlService, "health", with_events_gone)
    assert main(["health", "--data", data, "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "failing"
    assert main(["health", "--data", data]) == 4
    assert "status: failing" in capsys.readouterr().out


async def test_projection_lag_and_error_are_reported(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path, "mvp")) as sql:
        await sql.app.execute(
            "CREATE TRIGGER refuse_kb BEFORE INSERT ON knowledge_bases"
            " BEGIN SELECT RAISE(ABORT, 'projection refused'); END"
        )
        async with StateManager(sql) as state:
            await state.mutate(KnowledgeBaseAdd(KnowledgeBase(id="kb-1", name="Docs")))
            await state.mutate(SettingSet("theme", "dark"))
            with pytest.raises(StoreError, match="projection refused"):
                await state.flush()
            stuck = await sql.health()

            await sql.app.execute("DROP TRIGGER refuse_kb")
            await state.flush()
            recovered = await sql.health()

    assert stuck.status == "degraded"
    assert stuck.projector_lag == 2
    assert stuck.projection_error is not None
    assert "projection refused" in stuck.projection_error
    assert any("projection error" in r for r in stuck.reasons), stuck.reasons
    samples = parse_prometheus(metrics_text(stuck))
    assert samples[("async_store_projector_lag", "")] == 2
    assert samples[("async_store_projection_error", "")] == 1
    assert recovered.status == "ok", recovered.reasons
    assert (recovered.projector_lag, recovered.projection_error) == (0, None)


@pytest.mark.parametrize("mode", MODES)
async def test_a_backup_sets_its_age_and_the_last_checkpoint(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        for i in range(50):
            await sql.app.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?)", (f"k{i}", json.dumps(i))
            )
        before = await sql.health()
        manifest = await sql.backup()
        after = await sql.health()
        databases = sql.databases
    assert before.last_backup_at is None
    assert before.last_backup_age_s is None
    assert after.last_backup_at is not None
    assert after.last_backup_age_s is not None
    assert 0 <= after.last_backup_age_s < 60
    assert manifest.directory.exists()
    for name, db in after.databases.items():
        assert before.databases[name].last_checkpoint is None
        checkpoint = db.last_checkpoint
        assert checkpoint is not None
        assert (checkpoint.mode, checkpoint.source, checkpoint.busy) == (
            "TRUNCATE",
            "backup",
            False,
        )
        assert checkpoint.at is not None
        # Right after the backup's copy.
        assert datetime.fromisoformat(checkpoint.at) >= datetime.fromisoformat(after.last_backup_at)
        assert db.wal_bytes == 0  # truncated
        assert db.checkpoint_probe is not None
        assert db.checkpoint_probe.source == "health"
    # The checkpoint at close is recorded too.
    for database in databases:
        closing = on_sqlite(database).last_checkpoint
        assert closing is not None
        assert (closing.mode, closing.source, closing.busy) == ("TRUNCATE", "close", False)


@pytest.mark.parametrize("mode", MODES)
async def test_readers_busy_and_idle_while_a_read_holds_a_reader(
    tmp_path: Path, mode: Mode
) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await sql.app.fetch_val("SELECT 1")  # a reader is open
        async with sql.app.read() as snapshot:
            await snapshot.fetch_val("SELECT count(*) FROM settings")
            held = (await sql.health()).databases["app_meta"].pool
        released = (await sql.health()).databases["app_meta"].pool
    assert held.readers_busy == 1
    assert held.readers_idle == held.readers_total - 1
    assert released.readers_busy == 0
    assert released.readers_idle == released.readers_total >= 1


async def test_writer_queue_depth_while_the_writer_is_held(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path, "mvp")) as sql:
        async with transaction_held(sql.app):
            writes = [
                asyncio.create_task(
                    sql.app.execute("INSERT INTO settings(key, value) VALUES (?, '1')", (f"q{i}",))
                )
                for i in range(3)
            ]
            await wait_until(lambda: sql.app.statistics().writer_queue_depth == 3)
            # The report does not wait for the block: it reads its facts on a reader.
            report = await sql.health()
            assert sql.app.statistics().writer_queue_depth == 3
        await asyncio.gather(*writes)
        after = await sql.health()
    pool = report.databases["app_meta"].pool
    assert pool.writer_queue_depth == 3
    assert pool.writer_hold is not None
    assert pool.writer_hold.kind == "transaction"
    assert report.databases["app_meta"].checkpoint_probe is None
    assert after.databases["app_meta"].pool.writer_queue_depth == 0
    assert after.databases["app_meta"].pool.writer_hold is None
    assert after.databases["app_meta"].checkpoint_probe is not None


async def test_writer_timeouts_are_counted_as_pool_timeouts(tmp_path: Path) -> None:
    """``acquire_timeouts`` counts the writer's timeouts as well as the readers': the metric's
    name and help say so."""
    cfg = SqlConfig.in_directory(tmp_path / "data", mvp=True, max_queued=1, acquire_timeout=0.2)
    async with SqlService(cfg) as sql:
        async with asyncio.timeout(30):
            async with transaction_held(sql.app):
                queued = asyncio.create_task(
                    sql.app.execute("INSERT INTO settings(key, value) VALUES ('queued', '1')")
                )
                await wait_until(lambda: sql.app.statistics().writer_queue_depth == 1)
                # Waits for room, gets it when the first one gives up, and gives up in turn.
                with pytest.raises(PoolTimeout, match="did not become free"):
                    await sql.app.execute("INSERT INTO settings(key, value) VALUES ('late', '1')")
                with pytest.raises(PoolTimeout, match="did not become free"):
                    await queued
            text = await sql.metrics_text()
            assert await sql.app.fetch_val("SELECT count(*) FROM settings") == 0
    samples = parse_prometheus(text)
    assert samples[("async_store_pool_timeouts_total", '{database="app_meta"}')] == 2
    assert (
        "# HELP async_store_pool_timeouts_total Waits for a free reader or for the writer" in text
    )
    assert "reader_timeouts" not in text


async def test_batch_sizes_after_concurrent_writes(tmp_path: Path) -> None:
    async with SqlService(config(tmp_path, "mvp")) as sql:
        before = (await sql.health()).databases["app_meta"].pool
        await asyncio.gather(
            *(
                sql.app.execute("INSERT INTO settings(key, value) VALUES (?, '1')", (f"k{i}",))
                for i in range(50)
            )
        )
        after = (await sql.health()).databases["app_meta"].pool
    batches = after.batches - before.batches
    assert after.transactions - before.transactions == 50
    assert 1 <= batches < 50  # queued writes shared commits
    assert after.largest_batch > 1
    assert after.mean_batch_size == pytest.approx(
        (after.transactions + after.failed_transactions) / after.batches
    )
    assert after.mean_batch_size > before.mean_batch_size


_HOLD_THE_WRITE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


async def test_busy_retries_and_errors_by_kind_when_another_process_holds_the_lock(
    tmp_path: Path,
) -> None:
    options = {"busy_timeout": 0.05, "busy_retries": 2, "busy_backoff": 0.01}
    cfg = SqlConfig.in_directory(tmp_path / "data", mvp=True, **options)
    async with SqlService(cfg) as sql:
        other = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLD_THE_WRITE_LOCK,
            str(sql.app.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert other.stdin is not None
        assert other.stdout is not None
        try:
            assert await other.stdout.readline() == b"locked\n"
            with pytest.raises(DatabaseBusy):
                await sql.app.execute("INSERT INTO settings(key, value) VALUES ('x', '1')")
        finally:
            other.stdin.close()
            await other.wait()
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('x', '1')")
        report = await sql.health()
    pool = report.databases["app_meta"].pool
    assert pool.busy_retries == 2
    assert report.databases["app_meta"].errors == {"DatabaseBusy": 1}
    assert report.errors == {"DatabaseBusy": 1}
    samples = parse_prometheus(metrics_text(report))
    assert samples[("async_store_busy_retries_total", '{database="app_meta"}')] == 2
    assert samples[("async_store_errors_total", '{kind="DatabaseBusy"}')] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_errors_by_kind_after_failing_queries(tmp_path: Path, mode: Mode) -> None:
    async with SqlService(config(tmp_path, mode)) as sql:
        await sql.app.execute("INSERT INTO settings(key, value) VALUES ('a', '1')")
        with pytest.raises(StoreError) as read_error:
            await sql.app.fetch_all("SELECT * FROM no_such_table")
        for _ in range(2):
            with pytest.raises(IntegrityViolation) as write_error:
                await sql.app.execute("INSERT INTO settings(key, value) VALUES ('a', '2')")
        report = await sql.health()
    expected = {type(read_error.value).__name__: 1, type(write_error.value).__name__: 2}
    assert report.databases["app_meta"].errors == expected
    assert report.errors == expected
    if mode == "production":
        assert report.databases["events"].errors == {}
    samples = parse_prometheus(metrics_text(report))
    for kind, count in expected.items():
        labels = f'{{database="app_meta",kind="{kind}"}}'
        assert samples[("async_store_database_errors_total", labels)] == count
        assert samples[("async_store_errors_total", f'{{kind="{kind}"}}')] == count
