"""Retention of the prediction log (issue 12 §6, `[log] retention_days`): raw rows older than
the window are pruned in bounded steps, and what the rest of the engine needs is kept —
rollups (the metrics), labelled rows (retraining: `labelled_retention_days`), the rows a drift
reference is still to be built from, and feedback answers that say what happened.

Real models, a real writer, real SQLite; rows are dated by building Records and batches with
chosen times, as the router would have logged them that long ago.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine import Workspace
from engine.core import ids
from engine.core.config import LogSettings, parse_config
from engine.core.errors import ConfigError, NotFound
from engine.monitoring import baselines
from engine.monitoring import feedback as labels
from engine.serving import prediction_log as predlog
from engine.serving.prediction_log import Chunk, PredictionLog, Record
from engine.store.opening import open_store
from tests.conftest import BOTH_BACKENDS
from tests.serving_helpers import LINE, count, deploy_changes, logged, logged_count, version_id

DAY = predlog.DAY_MS
TOLERANCE = 5.0
SEED = labels.Contracts()  # any finite actual; accurate within ±TOLERANCE
SETTINGS = LogSettings(retention_days=30, labelled_retention_days=90)


@pytest.fixture
def ws(registered: Workspace) -> Workspace:
    deploy_changes(registered, {"version": "v1.0"})
    return registered


def _with_reference(ws: Workspace, *versions: str) -> None:
    """Give versions a drift reference (as a training sidecar would): their rows are no
    longer needed to build one."""
    rng = np.random.default_rng(0)
    store = open_store(ws.db_path)
    try:
        with store.write() as tx:
            for name in versions:
                artifact = tx.conn.execute(
                    "SELECT artifact_id FROM versions WHERE id = ?", (version_id(ws, name),)
                ).fetchone()[0]
                reference = baselines.VersionReference.build(
                    rng.random((600, 5)), rng.normal(70, 10, 600), tuple(f"f{i}" for i in range(5))
                )
                baselines.store(
                    tx,
                    artifact,
                    "training",
                    reference=reference,
                    metrics={"accuracy": 0.9, "mae": 3.0},
                )
    finally:
        store.close()


def _records(ws: Workspace, at: int, n: int, seed: int, version: str = "v1.0") -> list[Record]:
    rng = np.random.default_rng(seed)
    vid = version_id(ws, version)
    out = []
    for i in range(n):
        t = at + i
        failed = i % 10 == 9
        out.append(
            Record(
                ids.new_id(t),
                t,
                LINE,
                vid,
                "production",
                "",
                f"k{i}",
                rng.random(5).astype(np.float32).tobytes(),
                None if failed else float(rng.normal(70, 10)),
                200,
                "model error: boom" if failed else None,
            )
        )
    return out


def _chunk(ws: Workspace, at: int, rows: int, seed: int) -> Chunk:
    rng = np.random.default_rng(seed)
    return Chunk(
        ids.batch_prefix(at),
        at,
        LINE,
        np.full(rows, version_id(ws, "v1.0")),
        ["production"] * rows,
        "",
        [f"b{seed}-{i}" for i in range(rows)],
        rng.random((rows, 5)).astype(np.float32),
        rng.normal(70, 10, rows),
        150,
        None,
    )


def _log(ws: Workspace, *items: Record | Chunk) -> PredictionLog:
    log = PredictionLog(ws.db_path, tolerance=TOLERANCE, settings=SETTINGS)
    log.store.migrate()
    for item in items:
        if isinstance(item, Chunk):
            log.submit_chunk(item)
        else:
            log.submit(item)
    log.flush()
    return log


def _label(ws: Workspace, pids: list[str], actual: float = 66.0) -> None:
    store = open_store(ws.db_path)
    try:
        for pid in pids:
            assert labels.record(store, pid, actual, SEED) == "recorded"
    finally:
        store.close()


def _prune_all(log: PredictionLog, at: int, budget: int) -> list[predlog.Pruned]:
    """Steps until none is left to do now, each its own transaction of at most `budget`
    rows looked at."""
    steps = []
    while True:
        with log.store.write() as tx:
            step = tx.predictions.prune(log.settings, at, budget)
        steps.append(step)
        assert step.singles + step.batch_rows <= budget + 1  # +1: rows sharing a key's half
        if not step.more:
            return steps
        assert len(steps) < 1000


@BOTH_BACKENDS
def test_old_rows_are_pruned_in_bounded_steps_and_what_the_engine_needs_is_kept(
    ws: Workspace,
) -> None:
    _with_reference(ws, "v1.0")
    now = time.time_ns() // 1_000_000
    old = _records(ws, now - 40 * DAY, 300, seed=1)
    ancient = _records(ws, now - 100 * DAY, 50, seed=2)
    recent = _records(ws, now - 2 * DAY, 100, seed=3)
    old_batches = [_chunk(ws, now - 35 * DAY + i, 40, seed=10 + i) for i in range(5)]
    new_batch = _chunk(ws, now - DAY, 40, seed=20)
    log = _log(ws, *ancient, *old, *recent, *old_batches, new_batch)
    try:
        scored = [r for r in old if r.score is not None]
        kept_singles = [r.pid for r in scored[:20]]  # labelled 40 days ago: retraining's
        kept_rows = [old_batches[1].pids()[3], old_batches[4].pids()[0]]  # labelled batch rows
        gone_labelled = [r.pid for r in ancient if r.score is not None][:5]  # past 90 days
        _label(ws, [*kept_singles, *kept_rows, *gone_labelled])
        rollups = count(ws, "SELECT sum(n) FROM rollups") + count(
            ws, "SELECT sum(n) FROM rollups_hourly"
        )
        first = count(ws, "SELECT count(*) FROM first_predictions")
        steps = _prune_all(log, now, budget=64)
    finally:
        log.close()
    assert len(steps) > 5  # bounded steps, not one sweep
    remaining = {r["pid"]: r for r in logged(ws)}
    expected = {r.pid for r in recent} | set(new_batch.pids()) | set(kept_singles) | set(kept_rows)
    assert set(remaining) == expected
    removed = len(old) + len(ancient) + 5 * 40 - len(kept_singles) - len(kept_rows)
    assert sum(s.rows for s in steps) == removed
    assert sum(s.moved for s in steps) == len(kept_rows)
    for pid in kept_rows:  # moved out of its batch into a row of its own, whole
        batch = old_batches[1] if pid.startswith(old_batches[1].prefix) else old_batches[4]
        i = int(pid[ids.PREFIX_CHARS :], 16)
        row = remaining[pid]
        assert row["features"] == batch.features[i].tobytes() and row["actual"] == 66.0
        assert batch.keys is not None and row["key"] == batch.keys[i]
        assert row["at_ms"] == batch.at_ms
    assert (
        count(ws, "SELECT sum(n) FROM rollups") + count(ws, "SELECT sum(n) FROM rollups_hourly")
        == rollups
    )  # the metrics are the rollups: untouched
    assert count(ws, "SELECT count(*) FROM first_predictions") == first
    assert logged_count(ws) == len(expected)
    store = open_store(ws.db_path)
    try:
        with store.read() as tx:
            _x, y, _at = tx.predictions.labelled_rows(LINE, 5)
        assert len(y) == len(kept_singles) + len(kept_rows)
        for pid in [*kept_singles, *kept_rows]:  # feedback still finds them
            assert labels.record(store, pid, 66.0, SEED) == "duplicate"
        for pid in (old[-1].pid, old_batches[0].pids()[0], gone_labelled[0]):
            with pytest.raises(NotFound, match=r"older than the prediction log keeps \(30 days"):
                labels.record(store, pid, 50.0, SEED)
        assert labels.record(store, recent[0].pid, 50.0, SEED) == "recorded"
    finally:
        store.close()


@BOTH_BACKENDS
def test_a_version_still_waiting_for_its_reference_keeps_the_rows_it_will_be_built_from(
    ws: Workspace,
) -> None:
    """Without a sidecar a version's drift reference comes from its first 500 successful
    predictions: until it exists, those rows are not raw log to prune."""
    now = time.time_ns() // 1_000_000
    old = _records(ws, now - 40 * DAY, 100, seed=4)
    log = _log(ws, *old)
    try:
        _prune_all(log, now, budget=1000)
        assert {r["pid"] for r in logged(ws)} == {r.pid for r in old if r.score is not None}
        _with_reference(ws, "v1.0")  # built: the rows are raw log now
        with log.store.write() as tx:  # a new pass (a restart resumes where it stopped)
            tx.conn.execute("DELETE FROM log_retention")
        _prune_all(log, now, budget=1000)
    finally:
        log.close()
    assert logged_count(ws) == 0


def test_retention_0_keeps_everything_and_takes_no_lock(ws: Workspace) -> None:
    _with_reference(ws, "v1.0")
    now = time.time_ns() // 1_000_000
    log = PredictionLog(
        ws.db_path, tolerance=TOLERANCE, settings=LogSettings(retention_days=0)
    ).start()
    try:
        for r in _records(ws, now - 400 * DAY, 50, seed=5):
            log.submit(r)
        log.flush()
        statements: list[str] = []
        log.store.conn.set_trace_callback(statements.append)
        assert log.prune(now).rows == 0
        assert statements == []
    finally:
        log.close()
    assert logged_count(ws) == 50


@BOTH_BACKENDS
def test_the_writer_prunes_on_its_own_schedule(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_reference(ws, "v1.0")
    now = time.time_ns() // 1_000_000
    old = _records(ws, now - 31 * DAY, 200, seed=6)
    monkeypatch.setattr(predlog, "PRUNE_EVERY_S", 0.05)
    log = PredictionLog(ws.db_path, tolerance=TOLERANCE, settings=SETTINGS).start()
    try:
        for r in old:
            log.submit(r)
        deadline = time.monotonic() + 60
        while log.stats().pruned < len(old):
            assert time.monotonic() < deadline, log.stats()
            time.sleep(0.05)
    finally:
        log.close()
    assert logged_count(ws) == 0 and log.stats().written == len(old)


def test_the_workspace_config_sets_retention() -> None:
    assert parse_config("").log == LogSettings(30, 90, 10)
    got = parse_config("[log]\nretention_days = 7\nlabelled_retention_days = 0\n").log
    assert (got.retention_days, got.labelled_retention_days) == (7, 0)
    for bad in ("retention_days = -1", "loss_alert_minutes = 0", 'retention_days = "30"'):
        with pytest.raises(ConfigError, match=r"log\.\w+ = .* is invalid"):
            parse_config(f"[log]\n{bad}\n")
