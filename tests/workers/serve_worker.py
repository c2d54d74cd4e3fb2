"""A serving process for the prediction-log tests: its own Router and PredictionLog.

`python -m tests.workers.serve_worker WS COUNT GATE SEED` sets itself up (engine, log, router,
models loaded), creates GATE/ready-SEED and waits for GATE/go, so that several workers log at
the same time; then serves COUNT predictions (single rows, keyed and not, and batches), closes
its log and prints one JSON line: {"served": n, "stats": {...}}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from engine import Engine, Workspace
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router


def main(argv: list[str]) -> int:
    ws, count, gate, seed = Workspace(Path(argv[0])), int(argv[1]), Path(argv[2]), argv[3]
    engine = Engine(ws, actor=f"worker-{seed}")
    log = PredictionLog(
        ws.db_path, tolerance=engine.config.thresholds.tolerance_points, interval=0.01
    ).start()
    router = Router(engine, log=log)
    rng = np.random.default_rng(int(seed))
    served = 0
    (gate / f"ready-{seed}").touch()
    deadline = time.monotonic() + 60
    while not (gate / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    while served < count:
        size = int(min(count - served, rng.integers(1, 300)))
        if size < 20:
            for i in range(size):
                key = f"{seed}-{served + i}" if i % 2 else None
                router.predict(rng.random(5).tolist(), key=key)
        else:
            keys = [f"{seed}-{served + i}" for i in range(size)]
            router.predict_batch(rng.random((size, 5)), keys=keys)
        served += size
    log.close()
    stats = log.stats()
    router.close()
    engine.close()
    print(
        json.dumps(
            {
                "served": served,
                "stats": {
                    "written": stats.written,
                    "dropped": stats.dropped,
                    "batches": stats.batches,
                    "queued": stats.queued,
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
