"""`beast status` from a cold start: target ≤ 0.4 s (DESIGN.md §8).

A cold start is a new process each time, as an operator's shell runs it. The floor it competes
with is the bare interpreter starting (`python -c pass`); the ratio is printed beside it. The
workspace carries 1,000 history rows and an A/B test, so the figure does not flatter an empty
database.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from engine import Engine, Workspace
from tests.bench.conftest import machine, summary
from tests.helpers import model_path, train_model

RUNS = 21
TARGET_S = 0.4


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def test_status_cold_start(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".beast-mode")
    engine, _ = Engine.init(ws)
    for seed, version in enumerate(("v1.0", "v2.0", "v3.0"), start=1):
        engine.register(train_model(model_path(ws, version), seed=seed))
    engine.deploy(version="v1.0")
    for _ in range(250):
        engine.deploy(version="v2.0")
        engine.deploy(version="v3.0")
        engine.rollback()
        engine.rollback()
    engine.deploy(version="v3.0", traffic=10, ab_test="bench")
    engine.close()

    beast = [str(Path(sys.executable).parent / "beast"), "--workspace", str(ws.root), "status"]
    floor = [_time([sys.executable, "-c", "pass"]) for _ in range(RUNS)]
    cold = [_time(beast) for _ in range(RUNS)]
    as_json = [_time([*beast, "--json"]) for _ in range(RUNS)]
    ratio = statistics.median(cold) / statistics.median(floor)
    verdict = "met" if statistics.median(cold) <= TARGET_S else "MISSED"
    print(f"\n[bench status] {machine()}")
    print(summary("  floor: python -c pass", floor))
    print(summary("  beast status (cold)", cold) + f"  → {ratio:.1f}× the bare interpreter")
    print(summary("  beast status --json (cold)", as_json))
    print(f"  target ≤ {TARGET_S * 1000:.0f} ms median: {verdict}")
