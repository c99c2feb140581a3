"""The benchmark suite still runs: a quick pass of two scenarios in a subprocess, every
contender measured (none failed or skipped) and the JSON report complete. Figures are not looked
at: speed is for ``make bench`` to show, never for a test to assert."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.timeout(300)
def test_a_quick_run_measures_every_contender(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    only = ",".join(SCENARIOS)
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", only, "--json", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    scenarios = {s["name"]: s for s in json.loads(report.read_text())["scenarios"]}
    assert set(scenarios) == set(SCENARIOS)
    for name, scenario in scenarios.items():
        results = {r["contender"]: r for r in scenario["results"]}
        assert set(results) >= CONTENDERS, (name, sorted(results))
        for contender, result in results.items():
            assert result["status"] == "ok", (name, contender, result["reason"])
            assert result["errors"] == 0, (name, contender, result["error_kinds"])
        assert scenario["target"] is not None, name
        assert results["async_store"]["target_met"] is not None, name
