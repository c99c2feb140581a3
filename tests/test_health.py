"""Health reports, Prometheus text, and the latency histograms behind them."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from async_store import BackupConfig, NewEvent, SqlConfig, SqlService
from async_store.metrics import KINDS, LatencyHistogram, Metrics
from async_store.state import KnowledgeBase, KnowledgeBaseAdd, SettingSet, StateManager
from tests.test_backup import wait_until

Mode = Literal["production", "mvp"]

MODES = [pytest.param("production", id="production"), pytest.param("mvp", id="mvp")]

# One bucket of the histogram spans a factor 10 ** (1 / 10) ≈ 1.259.
BUCKET = 10 ** (1 / 10)


def config(tmp_path: Path, mode: Mode) -> SqlConfig:
    return SqlConfig.in_directory(tmp_path / "data", mvp=mode == "mvp")


# -- Prometheus text -------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?P<labels>\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? (?P<value>\S+)$"
)
COMMENT = re.compile(rf"^# (?P<kind>HELP|TYPE) (?P<name>{_NAME})(?: (?P<rest>.*))?$")
TYPES = {"counter", "gauge", "summary", "histogram", "untyped"}


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
        assert db["last_checkpoint"]["checkpointed_frames"] == db["last_checkpoint"]["log_frames"]
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
        await sql.app.run_on_writer(
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
            await sql.app.run_on_writer(
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

    checkpoint = report.databases["app_meta"].last_checkpoint
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

        monkeypatch.setattr("async_store.backup.shutil.disk_usage", little_room_for_backups)
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
    from async_store.health import metrics_text

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
