"""Printing results as tables, and writing them as JSON."""

from __future__ import annotations

import platform
import sqlite3
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from benchmarks.harness import Latency, Outcome, Profile, Scenario, ScenarioResult, Throughput

__all__ = ["environment", "header", "table", "to_json"]

_PACKAGES = ("aiosqlite", "databases", "SQLAlchemy", "aiosqlitepool", "async-store")
_NAME_WIDTH = 27


def header(scenario: Scenario, profile: Profile) -> str:
    lines = [
        f"== {scenario.name}: {scenario.summary}",
        f"   baseline: {scenario.baseline}; best of up to {profile.repeats} runs, each on a fresh"
        " database after a warm-up",
        "   (contenders interleaved; a slow contender runs once); errors summed over all runs",
    ]
    if scenario.kind == "latency":
        lines.append("   ratio: p50 / baseline p50 (lower is better)")
    else:
        lines.append(f"   ratio: {scenario.unit}/s / baseline {scenario.unit}/s (higher is better)")
    if scenario.notes:
        lines.append(f"   {scenario.notes}")
    return "\n".join(lines)


def table(result: ScenarioResult) -> str:
    scenario = result.scenario
    width = max([_NAME_WIDTH, *(len(o.contender) for o in result.outcomes)])
    op_latency = _has_op_latency(result.outcomes)
    if scenario.kind == "latency":
        unit = scenario.unit if scenario.unit in ("ms", "ns") else "us"
        columns = f"{'p50 ' + unit:>10} {'p95 ' + unit:>10}"
    else:
        columns = f"{scenario.unit + '/s':>12}"
    lines = [f"{'contender':<{width}} {columns} {'ratio':>8} {'errors':>7} {'runs':>5}"]
    if op_latency:
        lines[0] += f" {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    lines[0] += "  target"
    notes: list[str] = []
    for outcome in result.outcomes:
        lines.append(_row(scenario, outcome, width, op_latency))
        if outcome.measurement is not None:
            for message, count in sorted(outcome.measurement.errors.items()):
                notes.append(f"   {outcome.contender}: {count:,} x {message}")
    target = scenario.target
    if target and all(o.target_met is None for o in result.outcomes):
        notes.append(
            f"   target {target.contender} {target.describe(scenario.kind)}: n/a (no result)"
        )
    limit = scenario.latency_limit
    if limit and all(o.limit_met is None for o in result.outcomes):
        notes.append(f"   target {limit.contender} {limit.describe()}: n/a (no result)")
    notes.extend(f"   WARNING: {warning}" for warning in result.warnings)
    notes.extend(f"   {note}" for note in scenario.run_notes)
    if notes:
        lines.append("   errors and notes:")
        lines.extend(notes)
    lines.append(f"   ({result.seconds:.1f} s)")
    return "\n".join(lines)


def _has_op_latency(outcomes: Sequence[Outcome]) -> bool:
    return any(
        isinstance(o.measurement, Throughput) and o.measurement.latency is not None
        for o in outcomes
    )


def _row(scenario: Scenario, outcome: Outcome, width: int, op_latency: bool) -> str:
    name = f"{outcome.contender:<{width}}"
    measurement = outcome.measurement
    if measurement is None:
        return f"{name} {outcome.status}: {outcome.reason[:100]}"
    if isinstance(measurement, Latency):
        if scenario.unit == "ms":
            p50, p95 = measurement.percentile_ms(50), measurement.percentile_ms(95)
            value = f"{p50:>10,.2f} {p95:>10,.2f}"
        elif scenario.unit == "ns":
            p50, p95 = measurement.percentile_us(50), measurement.percentile_us(95)
            value = f"{p50 * 1000:>10,.1f} {p95 * 1000:>10,.1f}"
        else:
            p50, p95 = measurement.percentile_us(50), measurement.percentile_us(95)
            value = f"{p50:>10,.1f} {p95:>10,.1f}"
    else:
        value = f"{measurement.ops_per_s:>12,.0f}"
    ratio = f"{outcome.ratio:>7.2f}x" if outcome.ratio is not None else f"{'n/a':>8}"
    row = f"{name} {value} {ratio} {measurement.error_count:>7,} {measurement.runs:>5}"
    if op_latency:
        latency = measurement.latency if isinstance(measurement, Throughput) else None
        if latency is not None and latency.samples_ns:
            row += "".join(f" {latency.percentile_ms(q):>8,.2f}" for q in (50, 95, 99))
        else:
            row += f" {'-':>8} {'-':>8} {'-':>8}"
    verdicts: list[str] = []
    if scenario.target and outcome.target_met is not None:
        verdict = "PASS" if outcome.target_met else "FAIL"
        verdicts.append(f"{scenario.target.describe(scenario.kind)}: {verdict}")
    if scenario.latency_limit and outcome.limit_met is not None:
        verdict = "PASS" if outcome.limit_met else "FAIL"
        verdicts.append(f"{scenario.latency_limit.describe()}: {verdict}")
    return f"{row}  {'; '.join(verdicts)}".rstrip()


def environment() -> dict[str, str]:
    """Versions of Python, SQLite and every contender package that is installed."""
    found = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def to_json(results: Sequence[ScenarioResult], profile: Profile) -> dict[str, Any]:
    return {
        "profile": {
            "quick": profile.quick,
            "repeats": profile.repeats,
            "repeat_budget_s": profile.repeat_budget_s,
        },
        "environment": environment(),
        "scenarios": [_scenario_json(result) for result in results],
    }


def _scenario_json(result: ScenarioResult) -> dict[str, Any]:
    scenario = result.scenario
    target = scenario.target
    limit = scenario.latency_limit
    return {
        "name": scenario.name,
        "summary": scenario.summary,
        "kind": scenario.kind,
        "unit": scenario.unit,
        "baseline": scenario.baseline,
        "target": (
            {
                "contender": target.contender,
                "ratio": target.ratio,
                "text": target.describe(scenario.kind),
            }
            if target
            else None
        ),
        "latency_limit": (
            {
                "contender": limit.contender,
                "percentile": limit.percentile,
                "below_ms": limit.below_ms,
                "text": limit.describe(),
            }
            if limit
            else None
        ),
        "seconds": round(result.seconds, 3),
        "run_notes": list(scenario.run_notes),
        "warnings": list(result.warnings),
        "results": [_outcome_json(outcome) for outcome in result.outcomes],
    }


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    data: dict[str, Any] = {
        "contender": outcome.contender,
        "status": outcome.status,
        "reason": outcome.reason or None,
        "ratio": outcome.ratio,
        "target_met": outcome.target_met,
        "limit_met": outcome.limit_met,
    }
    measurement = outcome.measurement
    if isinstance(measurement, Throughput):
        data |= {
            "ops": measurement.ops,
            "seconds": measurement.seconds,
            "ops_per_s": measurement.ops_per_s,
        }
        if measurement.latency is not None:
            data["latency_ms"] = {
                f"p{q}": measurement.latency.percentile_ms(q) for q in (50, 95, 99)
            }
    elif isinstance(measurement, Latency):
        data |= {
            "samples": len(measurement.samples_ns),
            "p50_us": measurement.percentile_us(50),
            "p95_us": measurement.percentile_us(95),
            "p99_us": measurement.percentile_us(99),
        }
    if measurement is not None:
        data |= {
            "runs": measurement.runs,
            "errors": measurement.error_count,
            "error_kinds": dict(measurement.errors),
        }
    return data
