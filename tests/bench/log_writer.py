"""One replica's prediction-log writer for the benchmarks: a process of its own.

`python -m tests.bench.log_writer WS SEED ROWS V1 V2 END_MS` logs ROWS single-row predictions
(v1 in production, 10% to v2 as the candidate of A/B test `bench`) spread over the 24 hours
before END_MS through a real PredictionLog (its store: BEAST_STORE_URL when set, else the
workspace's SQLite file), in submits of 50,000 rows each flushed; prints one JSON line:
{"rows": n, "seconds": s, "transactions": t, "dropped": d}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from engine import Workspace
from engine.core import ids
from engine.serving.prediction_log import PredictionLog, Record

LINE = "quality-predictor"
CHUNK = 50_000
MINUTES = 24 * 60
POOL = 10_000


def main(argv: list[str]) -> int:
    ws = Workspace(Path(argv[0]))
    seed, rows, v1, v2, end_ms = (int(a) for a in argv[1:6])
    rng = np.random.default_rng(seed)
    blobs = [r.tobytes() for r in rng.random((POOL, 20)).astype(np.float32)]
    scores = rng.normal(70, 15, POOL).tolist()
    at_all = np.sort(rng.integers(end_ms - MINUTES * 60_000, end_ms, rows)).tolist()
    on_candidate = (rng.random(rows) < 0.10).tolist()
    latency = rng.lognormal(np.log(300), 0.35, rows).astype(np.int64).tolist()
    pick = rng.integers(0, POOL, rows).tolist()
    log = PredictionLog(ws.db_path, tolerance=5.0, batch=CHUNK)
    log.store.migrate()
    spent = 0.0
    for lo in range(0, rows, CHUNK):
        batch = [
            Record(
                ids.new_id(at_all[i]),
                at_all[i],
                LINE,
                v2 if on_candidate[i] else v1,
                "candidate" if on_candidate[i] else "production",
                "bench",
                None,
                blobs[pick[i]],
                scores[pick[i]],
                latency[i],
                None,
            )
            for i in range(lo, min(rows, lo + CHUNK))
        ]
        start = time.perf_counter()
        log.submit_many(batch)
        log.flush()
        spent += time.perf_counter() - start
    stats = log.stats()
    log.close()
    print(
        json.dumps(
            {
                "rows": stats.written,
                "seconds": spent,
                "transactions": stats.batches,
                "dropped": stats.dropped,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
