"""Disk full for real: run inside `unshare -rm` with a small tmpfs mounted at DIR.

`python -m tests.workers.diskfull_worker DIR SOURCE_WS` copies the workspace SOURCE_WS into
DIR (through SQLite's backup API), serves predictions, fills the file system, serves more,
frees the space and serves again. Prints one JSON line with what it saw.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np

from engine import Engine, Workspace
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router
from engine.store.sql.prediction_log import count_logged

ROWS = 400


def _copy(src: Workspace, dst: Path) -> Workspace:
    shutil.copytree(src.root, dst, ignore=shutil.ignore_patterns("beast.db", "beast.db-*"))
    with sqlite3.connect(src.db_path) as a, sqlite3.connect(dst / "beast.db") as b:
        a.backup(b)
    a.close()
    b.close()
    return Workspace(dst)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    chunk = b"\0" * 4096
    out = filler.open("wb", buffering=0)
    try:
        while True:
            out.write(chunk)
    except OSError:
        pass
    finally:
        out.close()
    return filler


def main(argv: list[str]) -> int:
    ws = _copy(Workspace(Path(argv[1])), Path(argv[0]) / "ws")
    engine = Engine(ws)
    log = PredictionLog(ws.db_path, tolerance=5.0, interval=3600).start()
    router = Router(engine, log=log)
    rng = np.random.default_rng(0)
    served = 0

    def serve() -> None:
        nonlocal served
        for _ in range(3):
            got = router.predict_batch(rng.random((ROWS, 5)))
            assert all(p.score is not None for p in got)
            served += len(got)

    serve()
    log.flush()
    before = log.stats()
    filler = _fill(Path(argv[0]))
    serve()  # serving goes on while the disk is full
    log.flush()
    full = log.stats()
    filler.unlink()
    serve()
    log.flush()
    after = log.stats()
    log.close()
    router.close()
    engine.close()
    with sqlite3.connect(ws.db_path) as conn:
        rows = count_logged(conn)
        rollup_n = conn.execute("SELECT sum(n) FROM rollups").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    print(
        json.dumps(
            {
                "served": served,
                "before": [before.written, before.dropped],
                "full": [full.written, full.dropped, full.last_drop],
                "after": [after.written, after.dropped, after.last_error],
                "rows": rows,
                "rollup_n": rollup_n,
                "integrity": integrity,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
