"""Retraining on 100k labelled rows, and serving while it runs (DESIGN.md §8).

Targets: a retraining job on 100,000 labelled production predictions — worker start, data,
the five-configuration search, the gate on the holdout, the atomic write and the registration
(validated in a child process) — finishes within 10 s; meanwhile the p99 of one routed
prediction (validation and logging included) stays within 1.5× its idle figure.

The workspace is real: a 12-feature production model (engine.demo.sample_data's schema) serving
through the Router with a running PredictionLog; 100,000 predictions logged through it and
labelled through `Engine.feedback_many` (1,000 more before each later round, so that every
round trains, writes and validates a model of its own rather than meeting known bytes); MLflow
off (an optional extra, measured by its own tests). Each round also prints the worker's CPU
time, which depends less on what else runs on the machine than its wall time. The job is
started with `Engine.start_retrain` and followed by polling the job, as the CLI does. Idle
serving is measured right before and right after each job, and the p99 while the
job runs is divided by the idle figure of the same round; the medians of several rounds are
the verdict, so load from other processes on this 2-core machine falls on both sides alike.

A last round runs a job while a real `beast feedback --file` process labels 100,000 fresh
predictions (one transaction for the whole file used to hold the write lock for 8.5 s here and
failed the job at 63%): the job must succeed. A probe thread takes and releases the write lock
all along; its longest wait is the longest anyone held the lock. That round is not timed
against the targets: the labelling takes a core of its own.
"""

from __future__ import annotations

import csv
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from engine import Engine, Workspace
from engine.demo import sample_data
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router
from tests.bench.conftest import machine
from tests.bench.workload import load_average
from tests.helpers import REPO, settle_compiled
from tests.retrain_helpers import LINE, train_on_samples

ROWS = 100_000
RETRAIN_TARGET_S = 10.0
P99_TARGET_RATIO = 1.5
ROUNDS = 3
IDLE_CALLS = 3000
BATCH = 10_000
FRESH_ROWS = 1000
LOAD_ROWS = 100_000  # the concurrent labelling file of the last round


def _workspace(root: Path) -> Workspace:
    ws = Workspace(root / ".beast-mode")
    engine, _ = Engine.init(ws)
    text = ws.config_path.read_text(encoding="utf-8")
    ws.config_path.write_text(text.replace("\nenabled = true\n", "\nenabled = false\n"), "utf-8")
    try:
        path = ws.models_dir / f"{LINE}-v1.0.json"
        engine.register(train_on_samples(path, rows=5000, depth=5, rounds=100, seed=1))
        engine.deploy(version="v1.0", model=LINE)
        settle_compiled(engine)
    finally:
        engine.close()
    return ws


def _predict(router: Router, log: PredictionLog, rows: int, seed: int) -> list[tuple[str, object]]:
    """Serve and log `rows` predictions in batches; (prediction id, actual) pairs."""
    samples = sample_data.generate(rows, seed=seed)
    pairs: list[tuple[str, object]] = []
    for start in range(0, rows, BATCH):
        chunk = samples.features[start : start + BATCH].tolist()
        done = router.predict_batch(chunk)
        pairs += [
            (p.prediction_id, float(s))
            for p, s in zip(done, samples.scores[start : start + BATCH], strict=True)
        ]
    log.flush()
    return pairs


def _label(ws: Workspace, router: Router, log: PredictionLog, rows: int, seed: int) -> None:
    pairs = _predict(router, log, rows, seed)
    engine = Engine(ws)
    try:
        outcomes = engine.feedback_many(pairs)
    finally:
        engine.close()
    assert sum(o.status == "recorded" for o in outcomes) == rows


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _serve(router: Router, row: list[float], count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        router.predict(row)
        out.append(time.perf_counter() - t0)
    return out


def _round(engine: Engine, router: Router, row: list[float]) -> tuple[float, float, float]:
    """(job seconds, idle p99, p99 while the job ran)."""
    idle = _serve(router, row, IDLE_CALLS)
    start = time.perf_counter()
    job = engine.start_retrain(force=True)
    busy: list[float] = []
    while not engine.job(job.id).finished:
        busy += _serve(router, row, 200)
    seconds = time.perf_counter() - start
    finished = engine.job(job.id)
    assert finished.status == "succeeded", finished
    idle += _serve(router, row, IDLE_CALLS)
    # The new version's trees compile in the background after the job: measured into the next
    # round, they doubled its job's time (23.9 s median against 8.7 s) — the job is timed alone.
    settle_compiled(engine)
    return seconds, _p99(idle), _p99(busy)


class LockProbe(threading.Thread):
    """Takes and releases the write lock in a loop; its longest wait is the longest hold."""

    def __init__(self, db: Path) -> None:
        super().__init__(name="lock-probe", daemon=True)
        self.db, self.longest, self.halt = db, 0.0, threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=60)
        try:
            while not self.halt.wait(0.01):
                t0 = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                self.longest = max(self.longest, time.perf_counter() - t0)
                conn.execute("ROLLBACK")
        finally:
            conn.close()


def _round_under_labelling(
    ws: Workspace, engine: Engine, router: Router, log: PredictionLog, tmp_path: Path
) -> tuple[float, float, float, list[str]]:
    """(job seconds, labelling seconds, longest lock wait, the job's busy notes)."""
    actuals = tmp_path / "actuals.csv"
    with actuals.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prediction_id", "actual"])
        writer.writerows(_predict(router, log, LOAD_ROWS, seed=999))
    probe = LockProbe(ws.db_path)
    probe.start()
    start = time.perf_counter()
    beast = [sys.executable, "-m", "engine.cli.main", "--workspace", str(ws.root)]
    labelling = subprocess.Popen(
        [*beast, "feedback", "--file", str(actuals)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    labelled: list[float] = []  # when the labelling process ended

    def wait_labelling() -> None:
        labelling.wait()
        labelled.append(time.perf_counter() - start)

    waiter = threading.Thread(target=wait_labelling)
    waiter.start()
    job = engine.start_retrain(force=True)
    finished = engine.wait_job(job.id, 300)
    job_s = time.perf_counter() - start
    waiter.join(timeout=300)
    err = labelling.stderr.read() if labelling.stderr is not None else ""
    label_s = labelled[0]
    probe.halt.set()
    probe.join()
    assert labelling.returncode == 0, err
    assert finished.status == "succeeded", (finished, engine.job_log(job.id))
    busy = [line for line in engine.job_log(job.id) if line.startswith("the store was busy")]
    return job_s, label_s, probe.longest, busy


def test_retrain_100k_and_serving_meanwhile(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    engine = Engine(ws, actor="bench")
    log = PredictionLog(ws.db_path, tolerance=engine.config.thresholds.tolerance_points).start()
    router = Router(engine, log=log)
    try:
        _label(ws, router, log, ROWS, seed=5)
        row = np.asarray(sample_data.generate(1, seed=9).features[0]).tolist()
        _serve(router, row, 500)  # warm up
        results = []
        for i in range(ROUNDS):
            if i:  # new labelled rows: each round trains (and validates) a model of its own
                _label(ws, router, log, FRESH_ROWS, seed=100 + i)
            results.append(_round(engine, router, row))
        loaded = _round_under_labelling(ws, engine, router, log, tmp_path)
        cpu = [
            next(line for line in engine.job_log(j.id) if line.startswith("worker CPU"))
            for j in reversed(engine.jobs(ROUNDS + 1)[1:])
        ]
    finally:
        router.close()
        log.close()
        engine.close()
    seconds = statistics.median(r[0] for r in results)
    ratios = [busy / idle for _s, idle, busy in results]
    print(f"\nretraining on {ROWS:,}+ labelled rows · {machine()} · {load_average()}")
    for i, (s, idle, busy) in enumerate(results, start=1):
        print(
            f"  round {i}: job {s:.2f} s; serving p99 idle {idle * 1e3:.3f} ms, "
            f"during the job {busy * 1e3:.3f} ms ({busy / idle:.2f}×); {cpu[i - 1]}"
        )
    print(
        f"  median job {seconds:.2f} s (target ≤ {RETRAIN_TARGET_S:g} s); median p99 ratio "
        f"{statistics.median(ratios):.2f}× (target ≤ {P99_TARGET_RATIO:g}×)"
    )
    job_s, label_s, longest, notes = loaded
    print(
        f"  with `beast feedback --file` of {LOAD_ROWS:,} items meanwhile: job succeeded in "
        f"{job_s:.2f} s, labelling took {label_s:.2f} s; longest wait for the write lock "
        f"{longest * 1e3:.0f} ms; {len(notes)} busy notes in the job's log"
    )
    # Printed, not asserted (tests/bench/conftest.py): a missed target is a finding, the run
    # goes on to the benchmarks after it.
    met = seconds <= RETRAIN_TARGET_S and statistics.median(ratios) <= P99_TARGET_RATIO
    print(f"  targets: {'met' if met else 'MISSED'}")
