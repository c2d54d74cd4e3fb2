"""Several replicas' prediction-log writers on one PostgreSQL database (issue 16, item 3).

Each replica's writer flushes without the writers' lock, into the same minutes' rollup rows:
two writer processes log at once, and every rollup — counters, latency, drift and score
histograms, minutes and the hours both compact into — is the sum of both workloads, with no
row of either lost or counted twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Workspace
from engine.monitoring import baselines
from engine.serving import latency
from engine.serving.prediction_log import PredictionLog
from engine.store.opening import open_store
from engine.store.postgres.locks import LEADER_LOCK, MIGRATE_LOCK, PRUNE_LOCK, WRITE_LOCK
from tests.helpers import REPO
from tests.pg import PgServer
from tests.serving_helpers import db, deploy_changes, logged_count, version_id
from tests.workers.log_worker import workload

ON_POSTGRESQL = pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
SEEDS = (1, 2)


def _with_references(ws: Workspace, names: tuple[str, ...]) -> dict[int, Any]:
    """Drift references for the versions (as training sidecars give them), by version id."""
    rng = np.random.default_rng(0)
    out = {}
    store = open_store(ws.db_path)
    try:
        with store.write() as tx:
            for name in names:
                vid = version_id(ws, name)
                artifact = tx.conn.execute(
                    "SELECT artifact_id FROM versions WHERE id = ?", (vid,)
                ).fetchone()[0]
                out[vid] = baselines.VersionReference.build(
                    rng.random((600, 5)), rng.normal(70, 15, 600), tuple(f"f{i}" for i in range(5))
                )
                baselines.store(tx, artifact, "training", reference=out[vid], metrics={})
    finally:
        store.close()
    return out


class _Sums:
    """What one (version, test, hour) adds up to."""

    def __init__(self) -> None:
        self.n = self.errors = self.drift_n = 0
        self.score_sum = 0.0
        self.latency = np.zeros(latency.BUCKETS, np.int64)
        self.features: np.ndarray | None = None
        self.scores: np.ndarray | None = None

    def add(self, hist: str, values: np.ndarray) -> None:
        old = getattr(self, hist)
        setattr(self, hist, values if old is None else old + values)


def _expected(now_ms: int, v1: int, v2: int, refs: dict[int, Any]) -> dict[tuple[Any, ...], Any]:
    """Both workloads' rows summed per (version, test, hour) as the writers roll them up."""
    sums: dict[tuple[Any, ...], _Sums] = defaultdict(_Sums)

    def add(key: tuple[int, str, int], x: np.ndarray, s: np.ndarray, lat: Any) -> None:
        vid, test, at_ms = key
        group = sums[(vid, test, at_ms // 3_600_000)]
        ok = ~np.isnan(s)
        group.n += s.size
        group.errors += int((~ok).sum())
        group.score_sum += float(s[ok].sum())
        group.latency += latency.histogram(np.asarray(lat, dtype=float))
        if ok.any():
            group.drift_n += int(ok.sum())
            group.add("features", refs[vid].feature_counts(x[ok]))
            group.add("scores", refs[vid].score_counts(s[ok]))

    for seed in SEEDS:
        chunks, records = workload(seed, now_ms, v1, v2)
        for c in chunks:
            for vid in (v1, v2):
                mine = c.version_ids == vid
                if mine.any():
                    lat = np.full(int(mine.sum()), c.latency_us)
                    add((vid, c.experiment, c.at_ms), c.features[mine], c.scores[mine], lat)
        for r in records:
            x = np.frombuffer(r.features, dtype=np.float32).reshape(1, -1)
            s = np.array([np.nan if r.score is None else r.score])
            add((r.version_id, r.experiment, r.at_ms), x, s, [r.latency_us])
    return sums


def _stored(ws: Workspace) -> dict[tuple[Any, ...], _Sums]:
    """The rollups, minutes and compacted hours alike, summed per (version, test, hour)."""
    sums: dict[tuple[Any, ...], _Sums] = defaultdict(_Sums)
    conn = db(ws)
    try:
        found = conn.execute(
            "SELECT version_id, experiment, minute / 60, n, errors, score_sum, latency_hist,"
            " drift_n, feature_hist, score_hist FROM rollups UNION ALL"
            " SELECT version_id, experiment, hour, n, errors, score_sum, latency_hist, drift_n,"
            " feature_hist, score_hist FROM rollups_hourly"
        ).fetchall()
    finally:
        conn.close()
    for vid, test, hour, n, errors, score_sum, lat, drift_n, features, scores in found:
        group = sums[(vid, test, hour)]
        group.n += n
        group.errors += errors
        group.score_sum += score_sum
        group.latency += np.frombuffer(lat, dtype="<i8")
        group.drift_n += drift_n
        if features:
            group.add("features", np.frombuffer(features, dtype="<i8"))
            group.add("scores", np.frombuffer(scores, dtype="<i8"))
    return sums


def _run_writers(ws: Workspace, gate: Path, now_ms: int, v1: int, v2: int) -> list[Any]:
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.workers.log_worker",
                str(ws.root),
                str(gate),
                *map(str, (seed, now_ms, v1, v2)),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in SEEDS
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(gate.glob("ready-*"))) < len(SEEDS):
            assert time.monotonic() < deadline, "writers did not get ready"
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.02)
        (gate / "go").touch()
        outputs = [w.communicate(timeout=120) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:  # pragma: no cover - only when a writer hangs
                w.kill()
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    return [json.loads(out.strip().splitlines()[-1])["stats"] for out, _ in outputs]


def test_the_advisory_lock_keys_are_distinct() -> None:
    keys = [WRITE_LOCK, MIGRATE_LOCK, LEADER_LOCK, PRUNE_LOCK]
    assert len(set(keys)) == len(keys)


@ON_POSTGRESQL
def test_two_replicas_writers_add_into_the_same_rollups_and_lose_nothing(
    registered: Workspace, tmp_path: Path
) -> None:
    assert os.environ.get("BEAST_STORE_URL")
    deploy_changes(
        registered, {"version": "v1.0"}, {"version": "v2.0", "traffic": 50, "ab_test": "t"}
    )
    v1, v2 = version_id(registered, "v1.0"), version_id(registered, "v2.0")
    refs = _with_references(registered, ("v1.0", "v2.0"))
    now_ms = time.time_ns() // 1_000_000
    gate = tmp_path / "gate"
    gate.mkdir()
    stats = _run_writers(registered, gate, now_ms, v1, v2)

    expected = _expected(now_ms, v1, v2, refs)
    total = sum(group.n for group in expected.values())
    assert all(s["dropped"] == 0 and s["queued"] == 0 for s in stats), stats
    assert sum(s["written"] for s in stats) == total
    assert all(s["batches"] > 5 for s in stats), stats  # flushes interleaved, not one each
    assert logged_count(registered) == total
    stored = _stored(registered)
    assert set(stored) == set(expected)
    assert len(expected) >= 15  # three groups over five or six hours
    for key, want in expected.items():
        got = stored[key]
        assert (got.n, got.errors, got.drift_n) == (want.n, want.errors, want.drift_n), key
        assert got.score_sum == pytest.approx(want.score_sum, rel=1e-9), key
        np.testing.assert_array_equal(got.latency, want.latency)
        np.testing.assert_array_equal(got.features, want.features)
        np.testing.assert_array_equal(got.scores, want.scores)
    conn = db(registered)
    try:
        cutoff = conn.execute("SELECT min(minute) FROM rollups").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM rollups_hourly").fetchone()[0] > 0
    finally:
        conn.close()
    assert cutoff is not None and cutoff >= now_ms // 60_000 - 180  # the old hours compacted


@ON_POSTGRESQL
def test_the_log_keeps_its_rows_while_postgresql_is_down_and_writes_them_when_it_is_back(
    registered: Workspace, postgres: PgServer
) -> None:
    """RELIABILITY: PostgreSQL restarts, the network drops — serving goes on from memory and
    nothing acknowledged is lost. An unreachable server is a busy store to the writer: its
    rows stay queued and are written once the server answers (they were counted as dropped)."""
    deploy_changes(
        registered, {"version": "v1.0"}, {"version": "v2.0", "traffic": 50, "ab_test": "t"}
    )
    v1, v2 = version_id(registered, "v1.0"), version_id(registered, "v2.0")
    _, records = workload(3, time.time_ns() // 1_000_000, v1, v2)
    log = PredictionLog(registered.db_path, tolerance=5.0, interval=0.01, batch=200).start()
    try:
        log.submit_many(records[:500])
        deadline = time.monotonic() + 30
        while log.stats().written < 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        with postgres.outage():
            log.submit_many(records[500:])  # acknowledged while the server is down
            time.sleep(1.0)  # several flush attempts fail meanwhile
            assert log.stats().dropped == 0
    finally:
        log.close()
    stats = log.stats()
    assert (stats.written, stats.dropped, stats.queued) == (len(records), 0, 0)
    assert logged_count(registered) == len(records)
