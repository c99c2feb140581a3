"""The benchmark harness: what a scenario is, how a contender is timed, and how a run is guarded.

A :class:`Scenario` is a named workload with a list of :class:`Contender` objects. Each contender
is an async callable that receives a fresh database file (a copy of the scenario's prepared
template), warms up, and returns one timed :class:`Measurement`. The harness runs each contender
up to three times, interleaved with the others, each run in its own event loop under a timeout,
and turns whatever happens into an :class:`Outcome`: the best measurement (errors summed over all
runs), a skip (the library does not import, or the contender raised :class:`Skipped`) or a
failure. One contender's failure never stops the run.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

__all__ = [
    "Contender",
    "ErrorLog",
    "Latency",
    "LatencyLimit",
    "Measurement",
    "Outcome",
    "Profile",
    "Scenario",
    "ScenarioResult",
    "Skipped",
    "Target",
    "Throughput",
    "run_scenario",
]


@dataclass(frozen=True, kw_only=True)
class Profile:
    """How big and how careful a run is."""

    quick: bool
    """Smaller sizes, for a smoke test."""
    repeats: int
    """Runs per contender at most, each on a fresh database; the best one is reported."""
    repeat_budget_s: float
    """No further run once a contender's runs took this long in total, set-up included (s)."""
    timeout_s: float
    """Wall-clock limit for one contender in one scenario, set-up included (seconds)."""

    @classmethod
    def full(cls) -> Profile:
        return cls(quick=False, repeats=3, repeat_budget_s=5.0, timeout_s=240.0)

    @classmethod
    def smoke(cls) -> Profile:
        return cls(quick=True, repeats=3, repeat_budget_s=0.6, timeout_s=30.0)


class Skipped(Exception):
    """Raised by a contender that declines to run (too slow at this size, say): the table shows
    it as skipped with the message, not as failed."""


class ErrorLog:
    """Counts failed operations by exception type and message."""

    def __init__(self) -> None:
        self._kinds: Counter[str] = Counter()

    def record(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self._kinds[message[:120]] += 1

    @property
    def total(self) -> int:
        return self._kinds.total()

    def kinds(self) -> dict[str, int]:
        return dict(self._kinds)


@dataclass(frozen=True, kw_only=True)
class Throughput:
    """Successful operations over the wall-clock time of one timed section."""

    ops: float
    """Operations done; a whole number, except for a unit such as "MB"."""
    seconds: float
    errors: Mapping[str, int] = field(default_factory=dict)
    runs: int = 1
    latency: Latency | None = None
    """Round-trip times of the timed operations, when the scenario records them (the table then
    shows their p50, p95 and p99)."""

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def with_totals(self, *, errors: Mapping[str, int], runs: int) -> Throughput:
        return replace(self, errors=errors, runs=runs)


@dataclass(frozen=True, kw_only=True)
class Latency:
    """Round-trip times of successful operations, in nanoseconds."""

    samples_ns: Sequence[int]
    errors: Mapping[str, int] = field(default_factory=dict)
    runs: int = 1

    def percentile_us(self, q: int) -> float:
        """The q-th percentile (1..99) in microseconds; 0.0 without samples."""
        if len(self.samples_ns) < 2:
            return self.samples_ns[0] / 1000 if self.samples_ns else 0.0
        return statistics.quantiles(self.samples_ns, n=100)[q - 1] / 1000

    def percentile_ms(self, q: int) -> float:
        """The q-th percentile (1..99) in milliseconds; 0.0 without samples."""
        return self.percentile_us(q) / 1000

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def with_totals(self, *, errors: Mapping[str, int], runs: int) -> Latency:
        return replace(self, errors=errors, runs=runs)


Measurement = Throughput | Latency
Kind = Literal["throughput", "latency"]


@dataclass(frozen=True)
class Contender:
    """One library (or one way of using it) in one scenario."""

    name: str
    run: Callable[[Path], Awaitable[Measurement]]
    """Opens the given database file, warms up, and returns one timed measurement."""
    requires: tuple[str, ...] = ()
    """Modules imported before the run; if one fails to import, the contender is skipped."""


@dataclass(frozen=True)
class Target:
    """A goal for one contender, relative to the scenario's baseline; printed, never asserted."""

    contender: str
    ratio: float
    """Minimum ratio of ops/s for throughput, maximum ratio of p50 for latency."""

    def describe(self, kind: Kind) -> str:
        sign = ">=" if kind == "throughput" else "<="
        what = "" if kind == "throughput" else " p50"
        return f"{sign} {self.ratio:g}x{what}, 0 errors"

    def met(self, kind: Kind, ratio: float, errors: int) -> bool:
        within = ratio >= self.ratio if kind == "throughput" else ratio <= self.ratio
        return within and errors == 0


@dataclass(frozen=True)
class LatencyLimit:
    """An absolute goal for one contender of a throughput scenario that records per-operation
    latency: the given percentile must stay below ``below_ms``. Printed, never asserted."""

    contender: str
    percentile: int
    below_ms: float

    def describe(self) -> str:
        return f"p{self.percentile} < {_duration(self.below_ms)}"

    def met(self, measurement: Measurement) -> bool | None:
        """None when the measurement holds no latency samples."""
        latency = measurement.latency if isinstance(measurement, Throughput) else measurement
        if latency is None or not latency.samples_ns:
            return None
        return latency.percentile_ms(self.percentile) < self.below_ms


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A workload, the contenders that run it, and how their results compare."""

    name: str
    summary: str
    """One line: what is measured, with the sizes of this run."""
    kind: Kind
    unit: str
    """What one operation is, for throughput ("commits", "reads", "rows", "MB"); for latency the
    unit the table prints, "ns", "us" or "ms"."""
    baseline: str
    contenders: Sequence[Contender]
    prepare: Callable[[Path], None]
    """Builds the template database; each contender gets its own copy (synchronous, untimed)."""
    target: Target | None = None
    latency_limit: LatencyLimit | None = None
    """A goal in absolute time: on the per-operation latency a throughput contender recorded, or
    on a latency contender's measurement."""
    notes: str = ""
    run_notes: list[str] = field(default_factory=list)
    """Lines the scenario adds while it runs (how long building its data took, sizes found),
    printed under its table."""
    check: Callable[[Sequence[Outcome]], list[str]] | None = None
    """Finds what makes the run's figures doubtful (a reference slower than one that does more
    work, say): one warning per line, printed under the table and kept in the JSON."""


Status = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What became of one contender in one scenario, compared with the baseline."""

    contender: str
    status: Status
    measurement: Measurement | None = None
    reason: str = ""
    ratio: float | None = None
    target_met: bool | None = None
    limit_met: bool | None = None
    """Whether the scenario's `LatencyLimit` held, for the contender it names."""

    @property
    def errors(self) -> int:
        return self.measurement.error_count if self.measurement else 0


@dataclass(frozen=True)
class ScenarioResult:
    """Every contender's outcome in one scenario, and how long the scenario took (seconds)."""

    scenario: Scenario
    outcomes: Sequence[Outcome]
    seconds: float
    warnings: Sequence[str] = ()
    """What the scenario's `check` found in its outcomes."""


def run_scenario(scenario: Scenario, profile: Profile) -> ScenarioResult:
    """Run every contender of `scenario`, in rounds, each run on a fresh copy of the template.

    Rounds interleave the contenders (A, B, C, A, B, C, ...) so that a slow phase of the machine
    does not land on one contender only. A contender stops after `profile.repeats` runs, or
    after one run once its runs took `profile.repeat_budget_s` of wall-clock time.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"async-store-bench-{scenario.name}-") as tmp:
        root = Path(tmp)
        template = root / "template.db"
        scenario.prepare(template)
        states = [_Runs(contender) for contender in scenario.contenders]
        for round_index in range(profile.repeats):
            for index, state in enumerate(states):
                if not state.wants_another(profile):
                    continue
                workdir = root / f"contender-{index}-run-{round_index + 1}"
                workdir.mkdir()
                database = workdir / "bench.db"
                shutil.copyfile(template, database)
                _progress(f"  round {round_index + 1}: {state.contender.name} ...")
                state.run(database, profile)
                _progress(f" {state.last_status} ({state.last_seconds:.1f} s)\n")
                shutil.rmtree(workdir, ignore_errors=True)
        outcomes = _compare(scenario, [state.outcome() for state in states])
    warnings = scenario.check(outcomes) if scenario.check else []
    return ScenarioResult(scenario, outcomes, time.perf_counter() - started, warnings)


class _Runs:
    """The runs of one contender in one scenario so far."""

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        self.measurements: list[Measurement] = []
        self.wall_s = 0.0
        self.skipped = _missing_requirement(contender.requires)
        self.failed = ""
        self.last_status: Status = "skipped" if self.skipped else "ok"
        self.last_seconds = 0.0

    def wants_another(self, profile: Profile) -> bool:
        if self.skipped or self.failed or len(self.measurements) >= profile.repeats:
            return False
        return not self.measurements or self.wall_s < profile.repeat_budget_s

    def run(self, database: Path, profile: Profile) -> None:
        async def guarded() -> Measurement:
            async with asyncio.timeout(profile.timeout_s):
                return await self.contender.run(database)

        gc.collect()
        started = time.perf_counter()
        try:
            self.measurements.append(asyncio.run(guarded()))
            self.last_status = "ok"
        except ImportError as exc:
            self.skipped = _describe(exc)
            self.last_status = "skipped"
        except Skipped as exc:
            self.skipped = str(exc)
            self.last_status = "skipped"
        except TimeoutError:
            self.failed = f"timed out after {profile.timeout_s:g} s"
            self.last_status = "failed"
        except Exception as exc:
            self.failed = _describe(exc)
            self.last_status = "failed"
        self.last_seconds = time.perf_counter() - started
        self.wall_s += self.last_seconds

    def outcome(self) -> Outcome:
        name = self.contender.name
        if not self.measurements:
            if self.skipped:
                return Outcome(contender=name, status="skipped", reason=self.skipped)
            return Outcome(contender=name, status="failed", reason=self.failed)
        best = max(self.measurements, key=_score)
        errors: Counter[str] = Counter()
        for measurement in self.measurements:
            errors.update(measurement.errors)
        if self.failed:  # a later run failed: keep the earlier results, count the failure
            errors[f"run {len(self.measurements) + 1} failed: {self.failed}"] += 1
        return Outcome(
            contender=name,
            status="ok",
            measurement=best.with_totals(errors=dict(errors), runs=len(self.measurements)),
        )


def _score(measurement: Measurement) -> float:
    """Higher is better: ops/s, or minus the p50."""
    if isinstance(measurement, Throughput):
        return measurement.ops_per_s
    return -measurement.percentile_us(50)


def _missing_requirement(modules: Sequence[str]) -> str:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a library being written may fail in any way on import
            return _describe(exc)
    return ""


def _compare(scenario: Scenario, outcomes: Sequence[Outcome]) -> list[Outcome]:
    base = next((o for o in outcomes if o.contender == scenario.baseline), None)
    base_value = _headline(base.measurement) if base and base.measurement else None
    compared: list[Outcome] = []
    for outcome in outcomes:
        ratio = None
        if outcome.measurement is not None and base_value:
            ratio = _headline(outcome.measurement) / base_value
        target = scenario.target
        met = None
        if target and target.contender == outcome.contender and ratio is not None:
            met = target.met(scenario.kind, ratio, outcome.errors)
        limit = scenario.latency_limit
        limit_met = None
        if limit and limit.contender == outcome.contender and outcome.measurement is not None:
            limit_met = limit.met(outcome.measurement)
        compared.append(replace(outcome, ratio=ratio, target_met=met, limit_met=limit_met))
    return compared


def _headline(measurement: Measurement) -> float:
    """The number ratios are taken of: ops/s, or p50 in microseconds."""
    if isinstance(measurement, Throughput):
        return measurement.ops_per_s
    return measurement.percentile_us(50)


def _duration(ms: float) -> str:
    """``20 ms``, ``1 us``, ``250 ns``: a limit in the largest unit that keeps it >= 1."""
    if ms >= 1:
        return f"{ms:g} ms"
    if ms >= 0.001:
        return f"{ms * 1000:g} us"
    return f"{ms * 1_000_000:g} ns"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
