"""The benchmark suite still runs: a quick pass of two scenarios in a subprocess, and one of the
backup scenarios, every contender measured (none failed or skipped) and the JSON report
complete. Figures are not looked at: speed is for ``make bench`` to show, never for a test to
assert (nor are the warnings a scenario's check prints, which depend on them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ["write-full", "select1-latency"]
CONTENDERS = {
    "raw sqlite3",
    "aiosqlite (1 conn + lock)",
    "databases",
    "SQLAlchemy async",
    "aiosqlitepool",
    "async_store",
}


def quick_run(tmp_path: Path, only: str) -> dict[str, Any]:
    """``python -m benchmarks --quick --only ONLY``: its JSON report's scenarios by name."""
    report = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", only, "--json", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return {s["name"]: s for s in json.loads(report.read_text())["scenarios"]}


@pytest.mark.timeout(300)
def test_a_quick_run_measures_every_contender(tmp_path: Path) -> None:
    scenarios = quick_run(tmp_path, ",".join(SCENARIOS))
    assert set(scenarios) == set(SCENARIOS)
    for name, scenario in scenarios.items():
        results = {r["contender"]: r for r in scenario["results"]}
        assert set(results) >= CONTENDERS, (name, sorted(results))
        for contender, result in results.items():
            assert result["status"] == "ok", (name, contender, result["reason"])
            assert result["errors"] == 0, (name, contender, result["error_kinds"])
        assert scenario["target"] is not None, name
        assert results["async_store"]["target_met"] is not None, name


@pytest.mark.timeout(300)
def test_the_backup_is_measured_against_its_floor_and_references(tmp_path: Path) -> None:
    scenario = quick_run(tmp_path, "backup")["backup"]
    results = {r["contender"]: r for r in scenario["results"]}
    assert scenario["baseline"] == "floor: VACUUM INTO + sha256"
    assert set(results) == {
        "floor: VACUUM INTO + sha256",
        "cp (subprocess)",
        "cp + sync (ref.)",
        "VACUUM INTO alone (ref.)",
        "sha256 alone (ref.)",
        "async_store sql.backup()",
    }
    for contender, result in results.items():
        assert result["status"] == "ok", (contender, result["reason"])
        assert result["errors"] == 0, (contender, result["error_kinds"])
    assert scenario["target"]["contender"] == "async_store sql.backup()"
    assert results["async_store sql.backup()"]["target_met"] is not None
    assert isinstance(scenario["warnings"], list)
