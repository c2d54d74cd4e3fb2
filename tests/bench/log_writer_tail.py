"""What the prediction log's writer costs the serving process, thread against process.

`python -m tests.bench.log_writer_tail TMPDIR` builds the benchmarks' workspace (200 trees,
depth 6, 20 features, an A/B test at 10%) and, in ROUNDS interleaved rounds, serves RATE
one-row predictions a second for SECONDS on one thread through `Router.predict` (routed and
logged) with: no log, the thread writer (`PredictionLog`), the process writer (`ProcessLog`,
`[log] writer = "process"`). It prints each call's p50/p99/p99.9 and, the figure that does
not drift with the machine's load, the CPU the log's thread in the serving process spends a
wake (`time.thread_time`): what it holds the serving process's GIL for, at most.
Environment: RATE (2000), SECONDS (5), ROUNDS (3).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.serving.log_process import ProcessLog
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router
from tests.bench import workload

BURSTS: list[int] = []


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, its CPU time recorded when the log's own thread runs it."""

    def wrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name != "beast-predlog":
            return fn(self, *args, **kwargs)
        start = time.thread_time_ns()
        out = fn(self, *args, **kwargs)
        BURSTS.append(time.thread_time_ns() - start)
        return out

    return wrap


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values) or [0]
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] / 1e3


def run(router: Router, rows: list[dict[str, float]], rate: float, seconds: float) -> list[int]:
    """Paced calls on this thread; each call's wall time in ns."""
    for i in range(500):
        router.predict(rows[i % len(rows)])
    latencies, period = [], 1.0 / rate
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        while time.perf_counter() < start + i * period:
            pass
        t0 = time.perf_counter_ns()
        router.predict(rows[i % len(rows)])
        latencies.append(time.perf_counter_ns() - t0)
    return latencies


def main(argv: list[str]) -> int:
    rate = float(os.environ.get("RATE", "2000"))
    seconds = float(os.environ.get("SECONDS", "5"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    tmp = Path(argv[0])
    tmp.mkdir(parents=True, exist_ok=True)
    engine = workload.workspace(tmp, candidate_traffic=10)
    db = engine.workspace.db_path
    rows = [
        dict(zip(workload.FEATURES, map(float, r), strict=True))
        for r in workload.generate(256, seed=31).x
    ]
    PredictionLog.flush = _timed(PredictionLog.flush)  # type: ignore[method-assign]
    ProcessLog._pump = _timed(ProcessLog._pump)  # type: ignore[method-assign]
    kinds: dict[str, type[PredictionLog] | None] = {
        "unlogged": None,
        "thread": PredictionLog,
        "process": ProcessLog,
    }
    results: dict[str, list[tuple[list[int], list[int]]]] = {k: [] for k in kinds}
    for r in range(rounds):
        for name, kind in kinds.items():
            plog = None if kind is None else kind(db, tolerance=5.0).start()
            router = Router(engine, log=plog)
            BURSTS.clear()
            latencies = run(router, rows, rate, seconds)
            bursts = list(BURSTS)
            if plog is not None:
                plog.close()
            router.close()
            results[name].append((latencies, bursts))
            print(
                f"round {r} {name:8s}: p50 {pct(latencies, 50):.0f} µs, p99 "
                f"{pct(latencies, 99):.0f} µs; log thread CPU a wake p50 {pct(bursts, 50):.0f} "
                f"µs, max {max(bursts, default=0) / 1e3:.0f} µs",
                flush=True,
            )
    engine.close()
    one, five, _ = os.getloadavg()
    print(f"\n{rate:.0f}/s for {seconds:g} s, {rounds} rounds; load average {one:.1f} {five:.1f}")
    for name, runs in results.items():
        bursts = [b for _, bs in runs for b in bs]
        print(
            f"{name:8s}: p50 {statistics.median(pct(lat, 50) for lat, _ in runs):.0f} µs, "
            f"p99 {statistics.median(pct(lat, 99) for lat, _ in runs):.0f} µs; log thread CPU "
            f"{sum(bursts) / 1e3 / max(1, len(bursts)):.0f} µs a wake (p99 {pct(bursts, 99):.0f}, "
            f"max {max(bursts, default=0) / 1e3:.0f}), "
            f"{sum(bursts) / 1e3 / (rate * seconds * rounds):.1f} µs a row"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
