"""A deterministic workspace for the console's snapshots: fixed times, fixed-seed traffic.

Time is frozen at `FROZEN` (epoch seconds) for the engine's clocks (history, alerts, the
monitoring window) and handed to the console as its clock; predictions carry fixed
timestamps in the 30 minutes before it and fixed-seed scores, labels and latencies.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from engine import Engine, Workspace
from engine.core import ids
from engine.monitoring import feedback as labels
from engine.serving.prediction_log import PredictionLog, Record
from engine.store.sqlite.tx import SqliteTx
from tests.serving_helpers import db

FROZEN = datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp()
LINE = "quality-predictor"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def freeze_engine_time(monkeypatch: pytest.MonkeyPatch, at: float = FROZEN) -> None:
    """The engine's clocks read `at` (mocked at the edge: the time functions only)."""
    monkeypatch.setattr("engine.monitoring.report.now_minute", lambda: int(at // 60))
    monkeypatch.setattr(
        "engine.serving.prediction_log.now_ms", lambda: int(at * 1000)
    )  # rollup compaction
    monkeypatch.setattr("engine.monitoring.report.utc_now", lambda: iso(at))


def build(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, at: float = FROZEN, unlabelled_every: int = 0
) -> None:
    """v1.0 → v2.0 production, A/B test retrain-v3 (v3.0 at 18%), 30 minutes of traffic, all
    before `at` (FROZEN for pictures; now for a test that also asks the real CLI)."""
    for hours, step in ((3, "v1.0"), (2, "v2.0"), (1, "v3.0")):
        monkeypatch.setattr("engine.deploy.service.utc_now", lambda h=hours: iso(at - h * 3600))
        engine = Engine(ws, actor="ops")
        try:
            if step == "v3.0":
                # 18%: the share the traffic below serves (8 of 44 a minute), so its split
                # is what the test was configured with (no sample-ratio mismatch).
                engine.deploy(version=step, traffic=18, ab_test="retrain-v3")
            else:
                engine.deploy(version=step)
        finally:
            engine.close()
    freeze_engine_time(monkeypatch, at)
    traffic(ws, at, unlabelled_every)
    engine = Engine(ws, actor="ops")
    try:
        engine.monitoring.evaluate(pull=False)  # the alerts fire, at the frozen time
    finally:
        engine.close()
    _fix_registration_stamps(ws, at)


def traffic(ws: Workspace, at: float = FROZEN, unlabelled_every: int = 0) -> None:
    """30 minutes of fixed-seed traffic up to `at`, on production v2.0 and candidate v3.0 of
    A/B test retrain-v3, labelled (the candidate worse, both drifting): every prediction, or
    all but every `unlabelled_every`-th (the same draws either way)."""
    rng = np.random.default_rng(7)
    engine = Engine(ws)
    try:
        with engine.store.read_sql() as conn:
            vid = {v: SqliteTx(conn).registry.get_version(LINE, v).id for v in ("v2.0", "v3.0")}
    finally:
        engine.close()
    log = PredictionLog(ws.db_path, tolerance=5.0)
    log.store.migrate()
    labelled: list[tuple[str, float]] = []
    made = 0
    for minute in range(30, 0, -1):
        at_ms = int((at - minute * 60) * 1000)
        for version, arm, n, err in (
            ("v2.0", "production", 36, 3.0),
            ("v3.0", "candidate", 8, 9.0),  # 240 labelled: over [monitoring] min_labelled
        ):
            spike = 40_000 if minute in (12, 11) and arm == "production" else 0
            for _ in range(n):
                score = float(rng.uniform(40, 90))
                record = Record(
                    _pid(at_ms, made),
                    at_ms,
                    LINE,
                    vid[version],
                    arm,
                    "retrain-v3",
                    None,
                    rng.random(5).astype(np.float32).tobytes(),
                    score,
                    int(rng.integers(800, 3000)) + spike,
                    None,
                )
                log.submit(record)
                drift = err * (1 + (30 - minute) / 30)
                actual = score + float(rng.normal(0, drift))
                made += 1
                if not unlabelled_every or made % unlabelled_every:
                    labelled.append((record.pid, actual))
    log.close()
    conn = db(ws)
    try:
        with conn:
            for pid, actual in labelled:
                labels.label(SqliteTx(conn), pid, actual, labels.Contracts(), now_ms=int(at * 1000))
    finally:
        conn.close()


def _pid(at_ms: int, n: int) -> str:
    """A prediction id as `ids.new_id(at_ms)` makes it, numbered instead of random: which
    predictions come first within a minute (a first-labelled baseline, a sample) is the same
    on every run, so the pictures are."""
    fresh = int(ids.new_id(at_ms), 16)
    # UUIDv7: time (48 bits) | version (4) | rand_a (12) | variant (2) | rand_b (62).
    keep = ((1 << 48) - 1) << 80 | 0xF << 76 | 0b11 << 62
    return (fresh & keep | n).to_bytes(16, "big").hex()


def _fix_registration_stamps(ws: Workspace, at: float) -> None:
    """The template registered its models at real time, as the OS user: pin both."""
    conn = db(ws)
    try:
        with conn:
            conn.execute(
                "UPDATE artifacts SET registered_at = ?, registered_by = 'ops'",
                (iso(at - 4 * 3600),),
            )
    finally:
        conn.close()
