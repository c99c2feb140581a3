"""Command line: `python -m benchmarks [--quick] [--only SUBSTRING[,...]] [--json PATH]`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import report, scenarios
from benchmarks.harness import Profile, ScenarioResult, run_scenario


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run every scenario against every contender and print a table per scenario.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument(
        "--only",
        metavar="SUBSTRING",
        help="run scenarios whose name contains it (several: separate them with commas)",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results as JSON")
    args = parser.parse_args(argv)

    profile = Profile.smoke() if args.quick else Profile.full()
    selected = scenarios.build(profile, args.only)
    if not selected:
        names = ", ".join(s.name for s in scenarios.build(profile))
        parser.error(f"no scenario name contains {args.only!r} (scenarios: {names})")

    versions = ", ".join(f"{k} {v}" for k, v in report.environment().items())
    print(f"async_store benchmarks ({'quick' if profile.quick else 'full'}): {versions}\n")
    results: list[ScenarioResult] = []
    for scenario in selected:
        print(report.header(scenario, profile), flush=True)
        result = run_scenario(scenario, profile)
        results.append(result)
        print(report.table(result) + "\n", flush=True)

    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(results, profile), indent=2) + "\n")
        print(f"results written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
