"""A prediction-log writer process, as one replica's: its own PredictionLog, no router.

`python -m tests.workers.log_worker WS GATE SEED NOW_MS V1 V2` builds its workload (`workload`:
batches and single rows of versions V1 and V2, some in A/B test `t`, over the same minutes as
any other seed's), creates GATE/ready-SEED, waits for GATE/go so that several writers log at
once, submits it in small steps, closes its log and prints one JSON line: {"stats": {...}}.
The test that starts it rebuilds the same workload from the same arguments.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from engine import Workspace
from engine.core import ids
from engine.serving.prediction_log import Chunk, PredictionLog, Record

LINE = "quality-predictor"
STEPS = 40


def workload(seed: int, now_ms: int, v1: int, v2: int) -> tuple[list[Chunk], list[Record]]:
    """Batches and single rows over the last five hours (old minutes are compacted into
    hours while the writers run); 5% of rows failed."""
    rng = np.random.default_rng(seed)
    groups = [(v1, "production", ""), (v1, "production", "t"), (v2, "candidate", "t")]

    def at() -> int:
        return now_ms - int(rng.integers(0, 5 * 60)) * 60_000 - int(rng.integers(0, 60_000))

    chunks = []
    for i in range(40):
        rows = int(rng.integers(1, 200))
        on_candidate = rng.random(rows) < 0.5
        scores = rng.normal(70, 15, rows)
        failed = rng.random(rows) < 0.05
        scores[failed] = np.nan
        chunks.append(
            Chunk(
                ids.batch_prefix(now_ms),
                at(),
                LINE,
                np.where(on_candidate, v2, v1).astype(np.int64),
                ["candidate" if c else "production" for c in on_candidate],
                "t",
                [f"{seed}-{i}-{j}" for j in range(rows)] if i % 2 else None,
                rng.random((rows, 5)).astype(np.float32),
                scores,
                int(rng.lognormal(5, 1.5)),
                ["model error: boom" if f else None for f in failed] if failed.any() else None,
            )
        )
    records = []
    for i in range(1500):
        when = at()
        vid, arm, experiment = groups[int(rng.integers(0, 3))]
        failed = bool(rng.random() < 0.05)
        records.append(
            Record(
                ids.new_id(when),
                when,
                LINE,
                vid,
                arm,
                experiment,
                f"{seed}-k{i}" if i % 3 else None,
                rng.random(5).astype(np.float32).tobytes(),
                None if failed else float(rng.normal(70, 15)),
                int(rng.lognormal(5, 1.5)),
                "model error: boom" if failed else None,
            )
        )
    return chunks, records


def main(argv: list[str]) -> int:
    ws, gate, seed = Workspace(Path(argv[0])), Path(argv[1]), int(argv[2])
    chunks, records = workload(seed, int(argv[3]), int(argv[4]), int(argv[5]))
    # Small flushes, so that the two writers' transactions interleave many times.
    log = PredictionLog(ws.db_path, tolerance=5.0, interval=0.005, batch=500).start()
    (gate / f"ready-{seed}").touch()
    deadline = time.monotonic() + 60
    while not (gate / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    for step in range(STEPS):
        for chunk in chunks[step::STEPS]:
            log.submit_chunk(chunk)
        log.submit_many(records[step * len(records) // STEPS : (step + 1) * len(records) // STEPS])
        time.sleep(0.005)
    log.close()
    stats = log.stats()
    print(
        json.dumps(
            {
                "stats": {
                    "written": stats.written,
                    "dropped": stats.dropped,
                    "batches": stats.batches,
                    "queued": stats.queued,
                }
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
