"""Benchmarks print their figures with the machine they ran on; `make bench` runs them.

Issue 18's targets are recorded by the benchmarks that measure them (`verdict`) and printed
together at the end of the session, each beside its floor, in the issue's order; a target whose
benchmark did not run in the session (or could not measure it) says so. Timing is never asserted
here: a missed target is printed as MISSED, the run still passes.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from engine.core.config import COMPILED_TREES_ENV
from tests.conftest import COMPILED_TREES_CHOSEN

# The suite's conftest turns compiled trees off for its run; the benchmarks measure what a
# workspace does by default (compiled trees on), unless the caller chose.
if not COMPILED_TREES_CHOSEN:
    os.environ.pop(COMPILED_TREES_ENV, None)

# Issue 18's "Targets" (and item 5's cold CLI), keyed as the benchmarks record them.
TARGETS: dict[str, str] = {
    "one-row-p50": "routed + logged single row in-process: p50 ≤ 50 µs",
    "one-row-p99": "routed + logged single row in-process: p99 ≤ 150 µs",
    "http-8": "HTTP one worker, 8 clients: ≥ 1.6× the bare Starlette floor's req/s",
    "mlflow-plain": "HTTP one worker, 8 clients: ≥ 15× mlflow models serve, no signature",
    "mlflow-signature": "HTTP one worker, 8 clients: ≥ 30× mlflow models serve, with a signature",
    "http-1-p99": "HTTP one worker, one client: p99 ≤ 1.25× the floor's p99",
    "batches-lists": "batches with logging (rows as lists): ≥ 190,000 rows/s",
    "batches-dicts": "batches with logging (rows as dicts): ≥ 190,000 rows/s",
    "drift": "drift (PSI + exact KS, 20 features, 10k vs 10k rows): ≤ 20 ms",
    "monitor": "monitor over 1M predictions (monitoring.report in-process): ≤ 10 ms",
    "monitor-cold": "beast monitor --json cold: within 50 ms of beast status cold",
}


@dataclass(frozen=True)
class Verdict:
    """One target as measured: the figure, its floor in the same run, and whether it is met
    (None: not measured, `measured` says why)."""

    key: str
    measured: str
    floor: str
    met: bool | None

    def describe(self) -> str:
        state = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        floor = f" (floor: {self.floor})" if self.floor else ""
        return f"{TARGETS[self.key]}: {self.measured}{floor} → {state}"


VERDICTS: dict[str, Verdict] = {}


def verdict(key: str, measured: str, floor: str, met: bool | None) -> str:
    """Record issue 18's target `key` for the session's summary; returns its line to print."""
    if key not in TARGETS:
        raise KeyError(f"no issue 18 target {key!r}")
    found = Verdict(key, measured, floor, met)
    VERDICTS[key] = found
    return f"  issue 18 target, {found.describe()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Issue 18's targets, each beside its floor, after every benchmark has printed."""
    if not VERDICTS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"[issue 18 targets] {machine()} · load average {_load()} at the end")
    for key, target in TARGETS.items():
        found = VERDICTS.get(key)
        write(f"  {found.describe()}" if found else f"  {target}: not run in this session")
    met = sum(v.met is True for v in VERDICTS.values())
    write(f"  {met} of {len(TARGETS)} met")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    return f"{platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"


def summary(name: str, samples: Sequence[float], unit: str = "ms", scale: float = 1000.0) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"{name}: median {statistics.median(ordered) * scale:.1f} {unit}, "
        f"p90 {p90 * scale:.1f} {unit}, n={len(ordered)}"
    )
