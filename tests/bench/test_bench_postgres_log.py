"""The prediction log at scale on PostgreSQL, beside SQLite in the same run (issue 16).

Targets: batched logging into PostgreSQL ≥ 100,000 rows/s (COPY), SQLite's path unchanged;
a monitor refresh over 1,000,000 predictions logged by two replicas' writers ≤ 50 ms (it reads
rollups only).

Logging: the workspace is `workload`'s (v1.0 in production, v2.0 an A/B candidate at 10%,
real 200-tree models with their training baselines, so the writer bins drift too). 100,000
single-row predictions of 20 features, queued, then `PredictionLog.flush()` timed (its 5,000-row
transactions: the rows, per-minute rollups, drift histograms, waiting feedback), and the same
rows as 1,000-row batches; median of rounds, each backend in turn in every round. Beside it,
the floors of the PostgreSQL writer: the same rows into a copy of `predictions` by binary COPY,
text COPY and executemany INSERTs (why the writer uses binary COPY).

Refresh: two writer processes (tests/bench/log_writer.py, as two replicas) log 500,000 rows
each over the last 24 hours, at once, into one database; then `Engine.report` (what `beast
monitor` and the console's refresh compute) is timed in-process, median of 20. The same on
SQLite (two processes on one file) for the figure beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from engine import Engine
from engine.core import ids
from engine.deploy import service as deploy_service
from engine.serving.prediction_log import Chunk, PredictionLog, Record
from engine.store.postgres.prediction_log import _COPY_ROWS, _ROW_TYPES, copy_rows
from engine.store.sql.prediction_log import _INSERT
from tests.bench import workload
from tests.bench.conftest import machine, summary
from tests.helpers import REPO
from tests.pg import STORE_URL_ENV, PgServer

LOG_TARGET_ROWS_S = 100_000
REFRESH_TARGET_S = 0.050
ROWS = 100_000
BATCH_ROWS = 1000
ROUNDS = 3
WRITERS = 2
REFRESH_ROWS = 1_000_000
REFRESH_RUNS = 20


@contextmanager
def _backend(url: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as patch:
        if url is None:
            patch.delenv(STORE_URL_ENV, raising=False)
        else:
            patch.setenv(STORE_URL_ENV, url)
        yield


def _workspace(root: Path, url: str | None, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """`workload`'s workspace, deployed 25 hours ago (as the monitor bench's: the facade's
    clock set back while deploying), so its 24-hour window holds every row logged."""
    deployed_at = datetime.now(UTC) - timedelta(hours=25)
    with _backend(url, monkeypatch), monkeypatch.context() as patch:
        patch.setattr(
            deploy_service, "utc_now", lambda: deployed_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        )
        return workload.workspace(root, candidate_traffic=10)


def _version_ids(engine: Engine) -> tuple[int, int]:
    with engine.store.read() as tx:
        return (
            tx.registry.get_version(workload.LINE, "v1.0").id,
            tx.registry.get_version(workload.LINE, "v2.0").id,
        )


def _records(v1: int, v2: int, seed: int) -> list[Record]:
    rng = np.random.default_rng(seed)
    x = workload.generate(ROWS, seed=seed).x
    now = int(time.time() * 1000)
    candidate = (rng.random(ROWS) < 0.1).tolist()
    scores = rng.normal(70, 15, ROWS).tolist()
    return [
        Record(
            ids.new_id(now),
            now,
            workload.LINE,
            v2 if candidate[i] else v1,
            "candidate" if candidate[i] else "production",
            "bench",
            None,
            x[i].tobytes(),
            scores[i],
            300,
            None,
        )
        for i in range(ROWS)
    ]


def _chunks(v1: int, v2: int, seed: int) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    x = workload.generate(ROWS, seed=seed).x
    now = int(time.time() * 1000)
    out = []
    for lo in range(0, ROWS, BATCH_ROWS):
        candidate = rng.random(BATCH_ROWS) < 0.1
        out.append(
            Chunk(
                ids.batch_prefix(now),
                now,
                workload.LINE,
                np.where(candidate, v2, v1).astype(np.int64),
                ["candidate" if c else "production" for c in candidate],
                "bench",
                None,
                np.ascontiguousarray(x[lo : lo + BATCH_ROWS]),
                rng.normal(70, 15, BATCH_ROWS),
                300,
                None,
            )
        )
    return out


def _submit_records(log: PredictionLog, records: list[Record]) -> None:
    """The rows again under new ids (a prediction id is logged once)."""
    now = int(time.time() * 1000)
    log.submit_many([r._replace(pid=ids.new_id(now), at_ms=now) for r in records])


def _submit_chunks(log: PredictionLog, chunks: list[Chunk]) -> None:
    now = int(time.time() * 1000)
    for chunk in chunks:
        log.submit_chunk(chunk._replace(prefix=ids.batch_prefix(now), at_ms=now))


def _flush_round(log: PredictionLog, submit: Callable[[], None]) -> float:
    submit()  # not timed: queued rows, as serving threads leave them
    start = time.perf_counter()
    log.flush()
    return time.perf_counter() - start


def _pg_floors(url: str, rows: list[tuple[Any, ...]]) -> dict[str, Callable[[], float]]:
    """The writer's floors on PostgreSQL: the rows alone into a copy of `predictions`."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("CREATE TABLE floor_predictions (LIKE predictions INCLUDING ALL)")
    columns = _COPY_ROWS.split("(", 1)[1].split(")", 1)[0]
    copy_binary = _COPY_ROWS.replace("predictions", "floor_predictions", 1)
    copy_text = copy_binary.replace("(FORMAT BINARY)", "")
    marks = ", ".join(["%s"] * len(_ROW_TYPES))
    insert = f"INSERT INTO floor_predictions ({columns}) VALUES ({marks})"
    assert _INSERT.count("?") == len(_ROW_TYPES)

    Write = Callable[[psycopg.Cursor[Any], list[tuple[Any, ...]]], None]

    def timed(write: Write) -> Callable[[], float]:
        def run() -> float:
            conn.execute("TRUNCATE floor_predictions")
            start = time.perf_counter()
            for lo in range(0, len(rows), 5000):
                with conn.transaction(), conn.cursor() as cursor:
                    write(cursor, rows[lo : lo + 5000])
            return time.perf_counter() - start

        return run

    def binary(cursor: psycopg.Cursor[Any], part: list[tuple[Any, ...]]) -> None:
        with cursor.copy(copy_binary) as copy:
            copy.set_types(_ROW_TYPES)
            for row in part:
                copy.write_row(row)

    def text(cursor: psycopg.Cursor[Any], part: list[tuple[Any, ...]]) -> None:
        with cursor.copy(copy_text) as copy:
            for row in part:
                copy.write_row(row)

    def many(cursor: psycopg.Cursor[Any], part: list[tuple[Any, ...]]) -> None:
        cursor.executemany(insert, part)

    return {
        "PostgreSQL floor: binary COPY alone (5000-row txns)": timed(binary),
        "PostgreSQL floor: text COPY alone": timed(text),
        "PostgreSQL floor: executemany INSERT alone": timed(many),
    }


def test_batched_logging_rows_per_second_postgresql_beside_sqlite(
    tmp_path: Path, postgres: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database()
    engines = {
        "SQLite": _workspace(tmp_path / "sqlite", None, monkeypatch),
        "PostgreSQL": _workspace(tmp_path / "pg", url, monkeypatch),
    }
    urls = {"SQLite": None, "PostgreSQL": url}
    variants: dict[str, Callable[[], float]] = {}
    logs = []
    floor_rows: list[tuple[Any, ...]] = []
    for name, engine in engines.items():
        v1, v2 = _version_ids(engine)
        records, chunks = _records(v1, v2, seed=1), _chunks(v1, v2, seed=2)
        if name == "PostgreSQL":
            experiments = {"": None, "bench": 1}
            floor_rows = list(copy_rows(records, experiments))
        with _backend(urls[name], monkeypatch):
            log = PredictionLog(engine.workspace.db_path, tolerance=5.0, interval=3600).start()
        logs.append(log)
        variants[f"{name}: PredictionLog.flush, single rows"] = lambda log=log, records=records: (
            _flush_round(log, lambda: _submit_records(log, records))
        )
        variants[f"{name}: PredictionLog.flush, {BATCH_ROWS}-row batches"] = (
            lambda log=log, chunks=chunks: _flush_round(log, lambda: _submit_chunks(log, chunks))
        )
    variants.update(_pg_floors(url, floor_rows))
    for run in variants.values():
        run()  # warm-up round
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():
            walls[name].append(run())
    stats = [log.stats() for log in logs]
    for log in logs:
        log.close()
    for engine in engines.values():
        engine.close()

    def rate(name: str) -> float:
        return ROWS / statistics.median(walls[name])

    print(f"\n[bench log: PostgreSQL beside SQLite] {machine()} · {workload.load_average()}")
    print(f"  {ROWS:,} rows per round, median of {ROUNDS} rounds, flush timed until it returns")
    for name, samples in walls.items():
        per_round = statistics.median(samples)
        print(f"  {name}: {rate(name):,.0f} rows/s (median {per_round * 1e3:.0f} ms per round)")
    for s in stats:
        assert s.dropped == 0 and s.quarantined == 0, s
    for kind in ("single rows", f"{BATCH_ROWS}-row batches"):
        got = rate(f"PostgreSQL: PredictionLog.flush, {kind}")
        verdict = "met" if got >= LOG_TARGET_ROWS_S else "MISSED"
        sqlite = rate(f"SQLite: PredictionLog.flush, {kind}")
        print(
            f"  target ≥ {LOG_TARGET_ROWS_S:,} rows/s (PostgreSQL, {kind}): {got:,.0f} → "
            f"{verdict}; SQLite {sqlite:,.0f} rows/s ({got / sqlite:.2f}×)"
        )


def _log_by_writers(engine: Engine, url: str | None) -> tuple[float, list[dict[str, Any]]]:
    """REFRESH_ROWS logged by WRITERS processes at once; (wall s, their reports)."""
    v1, v2 = _version_ids(engine)
    end_ms = int(time.time() * 1000)
    env = {k: v for k, v in os.environ.items() if k != STORE_URL_ENV}
    if url is not None:
        env[STORE_URL_ENV] = url
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.log_writer",
                str(engine.workspace.root),
                *map(str, (seed, REFRESH_ROWS // WRITERS, v1, v2, end_ms)),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(1, WRITERS + 1)
    ]
    outputs = [p.communicate(timeout=1800) for p in procs]
    wall = time.perf_counter() - start
    assert [p.returncode for p in procs] == [0] * WRITERS, [e[-2000:] for _, e in outputs]
    return wall, [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def test_monitor_refresh_over_a_million_predictions_from_two_writers(
    tmp_path: Path, postgres: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database()
    print(f"\n[bench refresh: two writers, PostgreSQL beside SQLite] {machine()}")
    for name, backend_url in (("SQLite", None), ("PostgreSQL", url)):
        engine = _workspace(tmp_path / name, backend_url, monkeypatch)
        root = engine.workspace
        with _backend(backend_url, monkeypatch):  # its ids are read on the same backend
            wall, reports = _log_by_writers(engine, backend_url)
            engine.close()
        with _backend(backend_url, monkeypatch):
            engine = Engine(root)
            doc = engine.report(window="24h").to_json()
            runs = []
            for _ in range(REFRESH_RUNS + 1):
                start = time.perf_counter()
                engine.report(window="24h")
                runs.append(time.perf_counter() - start)
            engine.close()
        logged = sum(r["rows"] for r in reports)
        writing = sum(r["seconds"] for r in reports)
        served = sum(v["windows"]["24h"]["predictions"] for v in doc["versions"])
        print(
            f"  {name}: {logged:,} rows by {WRITERS} writer processes at once in {wall:.1f} s"
            f" wall ({logged / wall:,.0f} rows/s together; flushes {writing:.1f} s summed,"
            f" {sum(r['transactions'] for r in reports)} transactions); report counts {served:,}"
        )
        print(summary(f"  {name}: Engine.report (monitor refresh, in-process)", runs[1:]))
        median = statistics.median(runs[1:])
        verdict = "met" if median <= REFRESH_TARGET_S else "MISSED"
        print(
            f"  target ≤ {REFRESH_TARGET_S * 1e3:.0f} ms ({name}):"
            f" {median * 1e3:.1f} ms → {verdict}"
        )
        assert logged == REFRESH_ROWS and served == REFRESH_ROWS
        assert all(r["dropped"] == 0 for r in reports)
