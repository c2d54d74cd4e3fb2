"""The prediction log (DESIGN.md §6, RELIABILITY.md "Predictions and feedback", "Disk and
files"): one batched writer, nothing lost on close, rollups that agree with the raw log, disk
full counted and survived, references from the first predictions, and several processes
logging at once.

Real models, real SQLite, real processes; time is chosen by building Records directly.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from engine import Workspace
from engine.core import ids
from engine.core.errors import Conflict, NotFound
from engine.monitoring import feedback as labels
from engine.monitoring import rollups as metrics
from engine.monitoring.baselines import FIRST_PREDICTIONS
from engine.serving import latency
from engine.serving.prediction_log import Chunk, PredictionLog, Record
from engine.store.opening import open_store
from tests.conftest import BOTH_BACKENDS
from tests.helpers import FEATURES, REPO
from tests.serving_helpers import (
    LINE,
    count,
    db,
    deploy_changes,
    logged,
    logged_count,
    serving,
    tx_of,
    version_id,
)
from tests.serving_helpers import rows as query

TOLERANCE = 5.0
SEED = labels.Contracts()  # any finite actual; accurate within ±TOLERANCE


@pytest.fixture
def ab_ws(registered: Workspace) -> Workspace:
    """v1.0 in production, v2.0 a 50% candidate of test `t`."""
    deploy_changes(
        registered, {"version": "v1.0"}, {"version": "v2.0", "traffic": 50, "ab_test": "t"}
    )
    return registered


def test_every_prediction_goes_through_the_batched_writer(ab_ws: Workspace) -> None:
    statements: list[str] = []
    # How many rows a flush carries depends on the machine's speed (measured here: ~14 rows per
    # transaction on a quiet machine, hundreds under load); the bound only has to rule out one
    # transaction per request, with room for a faster machine.
    with serving(ab_ws, interval=0.05) as (router, log):
        assert log is not None
        log.store.conn.set_trace_callback(statements.append)
        rng = np.random.default_rng(1)
        served = 0
        for i in range(3000):
            router.predict(rng.random(5).tolist(), key=f"u{i}" if i % 2 else None)
            served += 1
        for _ in range(10):
            served += len(router.predict_batch(rng.random((500, 5))))
    stats = log.stats()
    begins = [s for s in statements if s.startswith("BEGIN")]
    commits = [s for s in statements if s == "COMMIT"]
    assert logged_count(ab_ws) == served == stats.written
    assert stats.dropped == 0 and stats.queued == 0
    assert len(commits) == stats.batches == len(begins)
    assert all(s == "BEGIN IMMEDIATE" for s in begins)
    assert stats.batches <= served / 5, (stats.batches, served)  # never one per request


@BOTH_BACKENDS
def test_close_flushes_everything_still_queued(ab_ws: Workspace) -> None:
    with serving(ab_ws, interval=3600, batch=10**6) as (router, log):
        assert log is not None
        for i in range(2000):
            router.predict([0.5, 1.0, 0.1, 0.0, float(i)])
        router.predict_batch(np.random.default_rng(2).random((3000, 5)))
        assert log.stats().written == 0 and log.stats().queued == 5000
    assert log.stats().written == 5000 and log.stats().queued == 0
    assert logged_count(ab_ws) == 5000
    assert count(ab_ws, "SELECT sum(n) FROM rollups") == 5000
    # After close nothing is taken silently: a late submit is counted as dropped.
    router.predict([0.5] * 5)  # the router outlives its log here on purpose
    assert log.stats().dropped == 1


def _records(ws: Workspace, now: int, n: int, seed: int) -> list[Record]:
    rng = np.random.default_rng(seed)
    v1, v2 = version_id(ws, "v1.0"), version_id(ws, "v2.0")
    groups = [(v1, "production", ""), (v1, "production", "t"), (v2, "candidate", "t")]
    out = []
    for i in range(n):
        at = now - int(rng.integers(0, 5)) * 60_000 - int(rng.integers(0, 60_000))
        vid, arm, experiment = groups[int(rng.integers(0, 3))]
        failed = rng.random() < 0.05
        out.append(
            Record(
                ids.new_id(at),
                at,
                LINE,
                vid,
                arm,
                experiment,
                f"k{i}" if i % 3 else None,
                rng.random(5).astype(np.float32).tobytes(),
                None if failed else float(rng.normal(70, 15)),
                int(rng.lognormal(5, 1.5)),
                "model error: boom" if failed else None,
            )
        )
    return out


def test_rollups_equal_metrics_recomputed_from_the_raw_log(ab_ws: Workspace) -> None:
    now = time.time_ns() // 1_000_000
    records = _records(ab_ws, now, 6000, seed=5)
    rng = np.random.default_rng(6)
    log = PredictionLog(ab_ws.db_path, tolerance=TOLERANCE, batch=700)  # flushed by hand
    log.store.migrate()
    store = open_store(ab_ws.db_path)
    answers: dict[str, int] = defaultdict(int)
    try:
        flushed: list[Record] = []
        for start in range(0, len(records), 1500):
            chunk = records[start : start + 1500]
            for r in chunk:
                log.submit(r)
            # Early feedback for rows still in the buffer (recent ones: "pending").
            for r in chunk[::11]:
                if now - r.at_ms < 60_000:
                    answers[labels.record(store, r.pid, _actual(r, rng), SEED)] += 1
            log.flush()
            flushed.extend(chunk)
            for r in rng.choice(len(flushed), size=400, replace=False):
                rec = flushed[int(r)]
                try:
                    answers[labels.record(store, rec.pid, _actual(rec, rng), SEED)] += 1
                except Conflict:
                    answers["conflict"] += 1
    finally:
        log.close()
        store.close()
    assert answers["pending"] > 0 and answers["recorded"] > 0 and answers["conflict"] > 0
    assert count(ab_ws, "SELECT count(*) FROM pending_feedback") == 0
    _assert_rollups_match_raw(ab_ws, min_groups=10)  # several minutes, versions and tests


def _actual(record: Record, rng: np.random.Generator) -> float:
    base = record.score if record.score is not None else 70.0
    return round(base + float(rng.normal(0, 6)), 1)


def _assert_rollups_match_raw(ws: Workspace, min_groups: int = 1, cutoff: int = 0) -> None:
    """Every rollup row equals its group of raw rows: minutes from `cutoff` on, and the
    hours they were compacted into before it (hour keys are negative here, to tell apart)."""
    conn = db(ws)
    try:
        raw: dict[tuple[int, str, int], list[sqlite3.Row]] = defaultdict(list)
        for row in logged(ws):
            minute = row["at_ms"] // 60_000
            unit = minute if minute >= cutoff else -1 - minute // 60
            raw[(row["version_id"], row["experiment"], unit)].append(row)
        rollups = {
            (r["version_id"], r["experiment"], r["minute"]): r
            for r in conn.execute("SELECT * FROM rollups")
        }
        rollups.update(
            ((r["version_id"], r["experiment"], -1 - r["hour"]), r)
            for r in conn.execute("SELECT * FROM rollups_hourly")
        )
    finally:
        conn.close()
    assert set(rollups) == set(raw)
    assert len(raw) >= min_groups
    for group, rows in raw.items():
        got = rollups[group]
        labelled = [r for r in rows if r["actual"] is not None and r["score"] is not None]
        errors = [abs(r["score"] - r["actual"]) for r in labelled]
        assert got["n"] == len(rows), group
        assert got["errors"] == sum(r["error"] is not None for r in rows), group
        assert got["labelled"] == len(labelled), group
        assert got["within"] == sum(e <= TOLERANCE for e in errors), group
        assert got["abs_err_sum"] == pytest.approx(sum(errors), abs=1e-6)
        assert got["abs_err_sq_sum"] == pytest.approx(sum(e * e for e in errors), abs=1e-6)
        scores = [r["score"] for r in rows if r["score"] is not None]
        assert got["score_sum"] == pytest.approx(sum(scores), abs=1e-6)
        hist = np.frombuffer(got["latency_hist"], dtype="<i8")
        expected = latency.histogram(np.array([r["latency_us"] for r in rows], dtype=float))
        np.testing.assert_array_equal(hist, expected)


def _chunks(ws: Workspace, now: int, n_chunks: int, seed: int) -> list[Chunk]:
    """Batches as the router submits them, at chosen times over the last five hours."""
    rng = np.random.default_rng(seed)
    v1, v2 = version_id(ws, "v1.0"), version_id(ws, "v2.0")
    out = []
    for i in range(n_chunks):
        rows = int(rng.integers(1, 60))
        on_candidate = rng.random(rows) < 0.5
        scores = rng.normal(70, 15, rows)
        failed = rng.random(rows) < 0.05
        scores[failed] = np.nan
        out.append(
            Chunk(
                ids.batch_prefix(now),
                now - int(rng.integers(0, 5 * 60)) * 60_000 - int(rng.integers(0, 60_000)),
                LINE,
                np.where(on_candidate, v2, v1),
                ["candidate" if c else "production" for c in on_candidate],
                "t",
                [f"c{i}-{j}" for j in range(rows)] if i % 2 else None,
                rng.random((rows, 5)).astype(np.float32),
                scores,
                int(rng.lognormal(5, 1.5)),
                ["model error: boom" if f else None for f in failed] if failed.any() else None,
            )
        )
    return out


def test_compacted_hours_keep_metrics_equal_to_the_raw_log(ab_ws: Workspace) -> None:
    """Minutes older than two hours fold into hours; every window still equals the raw log,
    and feedback for a compacted minute lands in its hour."""
    now = time.time_ns() // 1_000_000
    records = [
        r._replace(at_ms=r.at_ms - 60_000 * int(i % 300))
        for i, r in enumerate(_records(ab_ws, now, 3000, seed=9))
    ]
    chunks = _chunks(ab_ws, now, 120, seed=10)
    rng = np.random.default_rng(11)
    log = PredictionLog(ab_ws.db_path, tolerance=TOLERANCE, batch=900)  # flushed by hand
    log.store.migrate()
    store = open_store(ab_ws.db_path)
    pids = [r.pid for r in records] + [p for c in chunks for p in c.pids()]
    try:
        for r in records:
            log.submit(r)
        for c in chunks:
            log.submit_chunk(c)
        log.flush()

        def some_feedback() -> list[tuple[str, object]]:
            chosen = rng.choice(len(pids), size=800, replace=False)
            return [(pids[int(i)], float(rng.normal(70, 10))) for i in chosen]

        labels.record_many(store, some_feedback(), SEED)  # labelled as minutes
        folded = log.compact()
        answers = labels.record_many(store, some_feedback(), SEED)  # some land in hours
        assert {a.status for a in answers} >= {"recorded", "conflict"}
    finally:
        log.close()
        store.close()
    cutoff = metrics.compaction_cutoff(now // 60_000)
    assert folded > 0
    assert count(ab_ws, "SELECT count(*) FROM rollups WHERE minute < ?", (cutoff,)) == 0
    assert count(ab_ws, "SELECT count(*) FROM rollups_hourly") > 0
    _assert_rollups_match_raw(ab_ws, min_groups=10, cutoff=cutoff)
    now_minute = now // 60_000
    starts = [None, now_minute - 59, metrics.window_start(1440, now_minute), cutoff - 60, cutoff]
    conn = db(ab_ws)
    try:
        for version in ("v1.0", "v2.0"):
            vid = version_id(ab_ws, version)
            loaded = metrics.load(tx_of(conn), vid)
            raw = [r for r in logged(ab_ws) if r["version_id"] == vid]
            for since in starts:
                chosen = [r for r in raw if since is None or r["at_ms"] // 60_000 >= since]
                got = loaded.window(since)
                labelled = [r for r in chosen if r["actual"] is not None and r["score"] is not None]
                errors = [abs(r["score"] - r["actual"]) for r in labelled]
                assert got.predictions == len(chosen), (version, since)
                assert got.errors == sum(r["error"] is not None for r in chosen)
                assert got.labelled == len(labelled)
                assert got.within == sum(e <= TOLERANCE for e in errors)
                assert got.abs_err_sum == pytest.approx(sum(errors), abs=1e-6)
                np.testing.assert_array_equal(
                    got.latency_hist,
                    latency.histogram(np.array([r["latency_us"] for r in chosen], dtype=float)),
                )
            series = {p.minute: p.predictions for p in loaded.series(now_minute - 59)}
            per_minute: dict[int, int] = defaultdict(int)
            for r in raw:
                if r["at_ms"] // 60_000 >= now_minute - 59:
                    per_minute[r["at_ms"] // 60_000] += 1
            assert series == per_minute
    finally:
        conn.close()


def test_disk_full_serving_goes_on_drops_are_counted_and_logging_resumes(
    ab_ws: Workspace,
) -> None:
    rng = np.random.default_rng(9)
    with serving(ab_ws, interval=3600) as (router, log):
        assert log is not None
        served = len(router.predict_batch(rng.random((500, 5))))
        log.flush()
        conn = log.store.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
        for _ in range(4):
            got = router.predict_batch(rng.random((1500, 5)))  # serving goes on
            assert all(p.score is not None for p in got)
            served += len(got)
        single = router.predict([0.2] * 5)
        assert single.score is not None
        served += 1
        log.flush()
        full = log.stats()
        assert full.dropped > 0 and full.written + full.dropped == served
        assert full.last_drop is not None and "disk full" in full.last_drop
        conn.execute("PRAGMA max_page_count = 1073741823")  # space returns
        served += len(router.predict_batch(rng.random((800, 5))))
        log.flush()
        after = log.stats()
    assert after.written == full.written + 800
    assert after.dropped == full.dropped
    assert after.last_error is None and after.last_drop == full.last_drop
    assert logged_count(ab_ws) == after.written
    assert count(ab_ws, "SELECT sum(n) FROM rollups") == after.written
    _assert_rollups_match_raw(ab_ws)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def test_disk_full_for_real_on_a_small_tmpfs(ab_ws: Workspace, tmp_path: Path) -> None:
    # A real full disk needs a user namespace to mount a small tmpfs in: a machine without
    # one cannot test this, and that is a failure, not a skip.
    assert _unshare_works(), "unshare -rm with a tmpfs is not available on this machine"
    mount = tmp_path / "small"
    mount.mkdir()
    script = (
        f"mount -t tmpfs -o size=3m tmpfs {mount} && "
        f"exec {sys.executable} -m tests.workers.diskfull_worker {mount} {ab_ws.root}"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    served, rows = report["served"], report["rows"]
    before_written, before_dropped = report["before"]
    full_written, full_dropped, full_error = report["full"]
    after_written, after_dropped, after_error = report["after"]
    assert before_dropped == 0 and before_written == 1200
    assert full_dropped > 0 and "disk full" in full_error  # counted, not raised
    assert after_written > full_written and after_error is None  # resumed
    assert after_written + after_dropped == served
    assert rows == report["rollup_n"] == after_written
    assert report["integrity"] == "ok"


def test_a_busy_database_loses_nothing(ab_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEAST_BUSY_TIMEOUT_S", "0.2")
    with serving(ab_ws, interval=3600) as (router, log):
        assert log is not None
        router.predict_batch(np.random.default_rng(3).random((300, 5)))
        holder = sqlite3.connect(ab_ws.db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            assert log.flush() == 0
            stats = log.stats()
            assert stats.queued == 300 and stats.dropped == 0 and "busy" in str(stats.last_error)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert log.flush() == 300
    assert log.stats().dropped == 0
    assert logged_count(ab_ws) == 300


@BOTH_BACKENDS
def test_labelled_rows_reads_single_predictions_and_batch_rows_alike(ab_ws: Workspace) -> None:
    rng = np.random.default_rng(21)
    x_single, x_batch = rng.random((4, 5)), rng.random((6, 5))
    with serving(ab_ws, interval=3600) as (router, log):
        assert log is not None
        singles = [router.predict(row.tolist()) for row in x_single]
        batch = router.predict_batch(x_batch)
        log.flush()
    wanted = {singles[1].prediction_id: 11.0, batch[0].prediction_id: 20.0}
    wanted |= {batch[4].prediction_id: 24.0, singles[3].prediction_id: 13.0}
    store = open_store(ab_ws.db_path)
    try:
        for pid, actual in wanted.items():
            assert labels.record(store, pid, actual, SEED) == "recorded"
        with store.read() as tx:
            x, y, at = tx.predictions.labelled_rows(LINE, 5)
            assert tx.predictions.labelled_rows(LINE, 4)[0].shape == (0, 4)  # other widths: none
    finally:
        store.close()
    expected = {11.0: x_single[1], 13.0: x_single[3], 20.0: x_batch[0], 24.0: x_batch[4]}
    assert sorted(y.tolist()) == sorted(expected)
    for features, actual in zip(x, y.tolist(), strict=True):
        np.testing.assert_array_equal(features, expected[actual].astype(np.float32))
    assert list(at) == sorted(at)  # oldest first


@BOTH_BACKENDS
def test_the_first_predictions_build_a_reference_for_a_version_without_a_sidecar(
    registered: Workspace,
) -> None:
    deploy_changes(registered, {"version": "v1.0"})
    artifact = count(
        registered,
        "SELECT artifact_id FROM versions WHERE id = ?",
        (version_id(registered, "v1.0"),),
    )
    assert count(registered, "SELECT count(*) FROM baselines") == 0  # no sidecar
    rng = np.random.default_rng(4)
    with serving(registered, interval=3600) as (router, log):
        assert log is not None
        for row in rng.random((200, 5)):  # single predictions and batches count together
            router.predict(row.tolist())
        router.predict_batch(rng.random((FIRST_PREDICTIONS - 201, 5)))
        log.flush()
        assert count(registered, "SELECT count(*) FROM baselines") == 0  # not enough yet
        router.predict_batch(rng.random((100, 5)))
        log.flush()
    conn = db(registered)
    try:
        row = conn.execute("SELECT * FROM baselines WHERE artifact_id = ?", (artifact,)).fetchone()
    finally:
        conn.close()
    assert row is not None and row["source"] == "first_predictions"
    reference = json.loads(row["reference"])
    assert reference["features"]["names"] == list(FEATURES)
    assert reference["features"]["n"] == FIRST_PREDICTIONS
    # The rows logged before the reference (its own among them) were binned when it was
    # built; a writer that knows it bins every new row into the rollup's histograms.
    assert count(registered, "SELECT sum(drift_n) FROM rollups") == FIRST_PREDICTIONS + 99
    with serving(registered, interval=3600) as (router, log):
        router.predict_batch(rng.random((200, 5)))
    assert count(registered, "SELECT sum(drift_n) FROM rollups") == FIRST_PREDICTIONS + 299


def test_two_processes_log_at_once_and_nothing_is_lost(ab_ws: Workspace, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.workers.serve_worker",
                str(ab_ws.root),
                "4000",
                str(gate),
                seed,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_WAIT_POLICY": "passive"},
        )
        for seed in ("1", "2")
    ]
    try:
        deadline = time.monotonic() + 90
        while len(list(gate.glob("ready-*"))) < 2:
            assert time.monotonic() < deadline, "workers did not get ready"
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.02)
        (gate / "go").touch()
        outputs = [w.communicate(timeout=120) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:  # pragma: no cover - only when a worker hangs
                w.kill()
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    served = sum(r["served"] for r in reports)
    assert served == 8000
    assert all(r["stats"]["dropped"] == 0 for r in reports)
    assert sum(r["stats"]["written"] for r in reports) == served
    assert logged_count(ab_ws) == served
    assert len({r["pid"] for r in logged(ab_ws)}) == served
    assert count(ab_ws, "SELECT sum(n) FROM rollups") == served
    per_version = Counter(r["version_id"] for r in logged(ab_ws))
    rolled = dict(
        (r[0], r[1])
        for r in db(ab_ws).execute("SELECT version_id, sum(n) FROM rollups GROUP BY version_id")
    )
    assert len(per_version) == 2 and per_version == rolled  # both arms, each adding up
    _assert_rollups_match_raw(ab_ws)


# What a row may hold that SQLite or Python refuses to write, whichever text column it is in.
POISONS = {
    "a lone surrogate in the key": {"key": "\ud800"},
    "a lone surrogate in the test's name": {"experiment": "t\udfff"},
    "a lone surrogate in the error": {"error": "boom \ud800", "score": None},
    "a score that is not a number (a bug)": {"score": "not a number"},
    "a latency too large for SQLite": {"latency_us": 1 << 70},
    "an arm that does not exist": {"arm": "both"},
    "a broken CHECK (a score and an error)": {"error": "boom"},
    "an id that is no prediction id": {"pid": "z" * 32},
}


@BOTH_BACKENDS
@pytest.mark.parametrize("poison", list(POISONS.values()), ids=list(POISONS))
def test_a_row_that_cannot_be_written_costs_its_neighbours_nothing(
    ab_ws: Workspace, poison: dict[str, object]
) -> None:
    """RELIABILITY.md "Predictions and feedback": one bad row in a flush of 21 (the issue's
    reproduction) used to drop all 21, 20 of them other clients' acknowledged predictions."""
    now = time.time_ns() // 1_000_000
    good = _records(ab_ws, now, 20, seed=8)
    bad = good[0]._replace(**{"pid": ids.new_id(now), **poison})
    log = PredictionLog(ab_ws.db_path, tolerance=TOLERANCE)
    log.store.migrate()
    try:
        for r in [*good[:10], bad, *good[10:]]:
            log.submit(r)
        assert log.flush() == 20
        stats = log.stats()
        assert (stats.written, stats.quarantined, stats.dropped, stats.queued) == (20, 1, 1, 0)
        assert stats.last_drop is not None and "quarantined 1 row" in stats.last_drop
        more = _records(ab_ws, now, 30, seed=9)
        for r in more:
            log.submit(r)
        assert log.flush() == 30  # and the writer goes on
    finally:
        log.close()
    assert {r["pid"] for r in logged(ab_ws)} == {r.pid for r in [*good, *more]}
    assert count(ab_ws, "SELECT sum(n) FROM rollups") == 50
    _assert_rollups_match_raw(ab_ws)
    store = open_store(ab_ws.db_path)
    try:
        for r in good:  # feedback on the neighbours' ids records
            assert labels.record(store, r.pid, 50.0, SEED) == "recorded"
        if ids.is_valid(bad.pid):  # its id and reason are kept: feedback says what happened
            with pytest.raises(NotFound, match="quarantined"):
                labels.record(store, bad.pid, 50.0, SEED)
            kept = query(ab_ws, "SELECT pid, rows, reason FROM quarantined_predictions")
            assert [(k["pid"], k["rows"]) for k in kept] == [(bad.pid, 1)]
            assert "\n" not in kept[0]["reason"] and kept[0]["reason"]
    finally:
        store.close()


def test_isolating_a_bad_row_costs_no_transaction_while_every_row_is_good(
    ab_ws: Workspace,
) -> None:
    now = time.time_ns() // 1_000_000
    good = _records(ab_ws, now, 21, seed=10)
    log = PredictionLog(ab_ws.db_path, tolerance=TOLERANCE)
    log.store.migrate()
    statements: list[str] = []
    log.store.conn.set_trace_callback(statements.append)
    try:
        for r in good:
            log.submit(r)
        assert log.flush() == 21
        assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
        assert statements.count("COMMIT") == 1 and log.stats().batches == 1
        statements.clear()
        poisoned = _records(ab_ws, now, 21, seed=11)
        poisoned[10] = poisoned[10]._replace(key="\ud800")
        for r in poisoned:
            log.submit(r)
        assert log.flush() == 20
        # Halving 21 rows down to the one that fails: a few transactions, not one per row.
        begins = [s for s in statements if s.startswith("BEGIN")]
        assert 2 < len(begins) <= 2 * 5 + 2, len(begins)
    finally:
        log.close()


@BOTH_BACKENDS
def test_a_bad_batch_is_quarantined_whole_and_the_batches_beside_it_are_logged(
    ab_ws: Workspace,
) -> None:
    """A batch is one record (its rows share an id prefix): it is set aside whole, by prefix."""
    now = time.time_ns() // 1_000_000
    chunks = _chunks(ab_ws, now, 9, seed=12)
    bad = chunks[4]._replace(line="quality\ud800")
    log = PredictionLog(ab_ws.db_path, tolerance=TOLERANCE)
    log.store.migrate()
    try:
        for c in [*chunks[:4], bad, *chunks[5:]]:
            log.submit_chunk(c)
        good_rows = sum(c.rows for c in chunks) - bad.rows
        assert log.flush() == good_rows
        assert log.stats().quarantined == bad.rows == log.stats().dropped
    finally:
        log.close()
    assert logged_count(ab_ws) == good_rows
    store = open_store(ab_ws.db_path)
    try:
        for pid in (bad.pids()[0], bad.pids()[-1]):
            with pytest.raises(NotFound, match="quarantined"):
                labels.record(store, pid, 50.0, SEED)
        assert labels.record(store, chunks[3].pids()[0], 50.0, SEED) == "recorded"
    finally:
        store.close()


def test_a_busy_store_while_isolating_keeps_the_rest_in_order(
    ab_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy in the middle of a split: what was written stays written, the rest waits."""
    monkeypatch.setenv("BEAST_BUSY_TIMEOUT_S", "0.2")
    now = time.time_ns() // 1_000_000
    records = _records(ab_ws, now, 8, seed=13)
    records[6] = records[6]._replace(key="\ud800")
    log = PredictionLog(ab_ws.db_path, tolerance=TOLERANCE)
    log.store.migrate()
    holder = sqlite3.connect(ab_ws.db_path, isolation_level=None, timeout=0)
    begins = 0

    def trace(statement: str) -> None:
        nonlocal begins
        if statement.startswith("BEGIN"):
            begins += 1
            if begins == 3:  # all 8 failed, the first half went in; the lock is taken now
                holder.execute("BEGIN IMMEDIATE")

    try:
        for r in records:
            log.submit(r)
        log.store.conn.set_trace_callback(trace)
        assert log.flush() == 4  # the first half, then busy
        stats = log.stats()
        assert stats.queued == 4 and stats.dropped == 0 and "busy" in str(stats.last_error)
        holder.execute("ROLLBACK")
        assert log.flush() == 3
        assert log.stats().quarantined == 1 and log.stats().queued == 0
    finally:
        log.close()
        holder.close()
    assert [r["pid"] for r in logged(ab_ws)] == sorted(
        [r.pid for i, r in enumerate(records) if i != 6]
    )


@pytest.mark.parametrize("size", [1, 2, 3, 1023, 1024, 1025, 2500])
def test_multi_row_inserts_write_every_row_once(ab_ws: Workspace, size: int) -> None:
    records = _records(ab_ws, time.time_ns() // 1_000_000, size, seed=size)
    log = PredictionLog(ab_ws.db_path, tolerance=TOLERANCE, batch=5000)
    log.store.migrate()
    try:
        for r in records:
            log.submit(r)
        assert log.flush() == size
    finally:
        log.close()
    stored = {r["pid"]: tuple(r.values())[: len(Record._fields)] for r in logged(ab_ws)}
    assert stored == {r.pid: tuple(r) for r in records}


def test_latency_percentiles_from_the_histogram_are_within_one_bucket() -> None:
    values = np.random.default_rng(3).lognormal(6, 1.2, 50_000)
    hist = latency.histogram(values)
    assert int(hist.sum()) == values.size
    for q in (50, 95, 99):
        true_ms = float(np.percentile(values, q, method="inverted_cdf")) / 1000
        got = latency.percentile(hist, q)
        assert got is not None
        assert true_ms <= got <= true_ms * latency.RATIO * 1.0001, (q, true_ms, got)
    assert latency.percentile(np.zeros(latency.BUCKETS, np.int64), 50) is None
    assert all(latency.bucket(v) == latency.buckets(np.array([v]))[0] for v in values[:2000])


def test_missing_values_are_not_counted_into_a_drift_bin() -> None:
    from engine.monitoring.baselines import VersionReference

    rng = np.random.default_rng(13)
    train = rng.random((1000, 2))
    reference = VersionReference.build(train, train[:, 0] * 100, ("a", "b"))
    live = rng.random((200, 2)).astype(np.float32)
    live[:50, 0] = np.nan  # a nullable feature, missing in a quarter of the rows
    a, b = reference.split(reference.feature_counts(live))
    assert a.sum() == 150 and b.sum() == 200
    above_last_edge = int(np.sum(live[50:, 0] > reference.features.edges[0][-1]))
    assert a[-1] == above_last_edge
    scores = np.array([10.0, np.nan, 90.0])
    assert reference.score_counts(scores).sum() == 2
