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
    if scenario.kind == "latency":
        columns = f"{'p50 us':>10} {'p95 us':>10}"
    else:
        columns = f"{scenario.unit + '/s':>12}"
    lines = [
        f"{'contender':<{_NAME_WIDTH}} {columns} {'ratio':>8} {'errors':>7} {'runs':>5}  target"
    ]
    notes: list[str] = []
    for outcome in result.outcomes:
        lines.append(_row(scenario, outcome))
        if outcome.measurement is not None:
            for message, count in sorted(outcome.measurement.errors.items()):
                notes.append(f"   {outcome.contender}: {count:,} x {message}")
    target = scenario.target
    if target and all(o.target_met is None for o in result.outcomes):
        notes.append(
            f"   target {target.contender} {target.describe(scenario.kind)}: n/a (no result)"
        )
    if notes:
        lines.append("   errors and notes:")
        lines.extend(notes)
    lines.append(f"   ({result.seconds:.1f} s)")
    return "\n".join(lines)


def _row(scenario: Scenario, outcome: Outcome) -> str:
    name = f"{outcome.contender:<{_NAME_WIDTH}}"
    measurement = outcome.measurement
    if measurement is None:
        return f"{name} {outcome.status}: {outcome.reason[:100]}"
    if isinstance(measurement, Latency):
        value = f"{measurement.percentile_us(50):>10,.1f} {measurement.percentile_us(95):>10,.1f}"
    else:
        value = f"{measurement.ops_per_s:>12,.0f}"
    ratio = f"{outcome.ratio:>7.2f}x" if outcome.ratio is not None else f"{'n/a':>8}"
    target = ""
    if scenario.target and outcome.target_met is not None:
        verdict = "PASS" if outcome.target_met else "FAIL"
        target = f"{scenario.target.describe(scenario.kind)}: {verdict}"
    row = f"{name} {value} {ratio} {measurement.error_count:>7,} {measurement.runs:>5}  {target}"
    return row.rstrip()


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
        "seconds": round(result.seconds, 3),
        "results": [_outcome_json(outcome) for outcome in result.outcomes],
    }


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    data: dict[str, Any] = {
        "contender": outcome.contender,
        "status": outcome.status,
        "reason": outcome.reason or None,
        "ratio": outcome.ratio,
        "target_met": outcome.target_met,
    }
    measurement = outcome.measurement
    if isinstance(measurement, Throughput):
        data |= {
            "ops": measurement.ops,
            "seconds": measurement.seconds,
            "ops_per_s": measurement.ops_per_s,
        }
    elif isinstance(measurement, Latency):
        data |= {
            "samples": len(measurement.samples_ns),
            "p50_us": measurement.percentile_us(50),
            "p95_us": measurement.percentile_us(95),
        }
    if measurement is not None:
        data |= {
            "runs": measurement.runs,
            "errors": measurement.error_count,
            "error_kinds": dict(measurement.errors),
        }
    return data
