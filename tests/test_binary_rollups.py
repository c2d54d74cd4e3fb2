"""A binary line's metrics read from rollups equal scikit-learn's over the labelled rows.

The predictions go through the real writer (minute rows), their labels through the real
feedback path (engine.monitoring.feedback.record_many), half before and half after a
compaction to hours; the figures are read back as a monitor reads them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from engine import Engine
from engine.core import ids, rollups, tasks
from engine.core.config import LineSettings
from engine.monitoring import feedback as labels
from engine.monitoring import rollups as metrics
from engine.monitoring import scoring
from engine.serving.prediction_log import PredictionLog, Record
from engine.store.base import Store
from engine.store.opening import open_store
from engine.store.sql import rollup_rows

LINE = "quality-predictor"
AUC_TOLERANCE = 0.002


@pytest.fixture
def plumbing(engine: Engine) -> Iterator[tuple[PredictionLog, Store, int]]:
    with engine.store.read() as tx:
        version_id = tx.registry.get_version(LINE, "v1.0").id
    log = PredictionLog(engine.workspace.db_path, tolerance=5.0, batch=100_000)
    log.store.migrate()
    store = open_store(engine.workspace.db_path)
    try:
        yield log, store, version_id
    finally:
        log.close()
        store.close()


def _scores(rng: np.random.Generator, y: np.ndarray, kind: str) -> np.ndarray:
    """Scores as models give them (float32 probabilities), or plain random ones."""
    n = y.size
    if kind == "uniform":
        return rng.random(n)
    if kind == "rounded":  # many exact ties
        return np.round(rng.random(n), 2)
    separation = rng.uniform(0, 3)
    logits = rng.normal(size=n) * rng.uniform(0.3, 3) + separation * (y - 0.5)
    return (1 / (1 + np.exp(-logits))).astype(np.float32).astype(np.float64)


def _log(
    log: PredictionLog, version_id: int, scores: np.ndarray, rng: np.random.Generator
) -> list[str]:
    """Log one prediction per score: some minutes 3–5 hours ago (compacted later), some in
    the last hour (kept as minutes)."""
    now_ms = time.time_ns() // 1_000_000
    ago = np.where(rng.random(scores.size) < 0.5, rng.integers(180, 300, scores.size), 0)
    ago = np.where(ago == 0, rng.integers(0, 50, scores.size), ago)
    ago[0], ago[-1] = 240, 1  # one of each, whatever the draw
    pids = []
    for score, minutes in zip(scores.tolist(), ago.tolist(), strict=True):
        at_ms = now_ms - minutes * 60_000
        pid = ids.new_id(at_ms)
        pids.append(pid)
        log.submit(
            Record(pid, at_ms, LINE, version_id, "production", "", None, b"", score, 500, None)
        )
    log.flush()
    return pids


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 600),
    kind=st.sampled_from(["model", "model", "uniform", "rounded"]),
    threshold=st.floats(0.05, 0.95),
    positive_share=st.floats(0.02, 0.98),
)
def test_binary_metrics_from_rollups_equal_scikit_learns(
    plumbing: tuple[PredictionLog, Store, int],
    *,
    seed: int,
    n: int,
    kind: str,
    threshold: float,
    positive_share: float,
) -> None:
    log, store, version_id = plumbing
    with store.write() as tx:  # each example reads its own rollups only
        tx.conn.execute("DELETE FROM rollups")
        tx.conn.execute("DELETE FROM rollups_hourly")
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_share).astype(int)
    s = _scores(rng, y, kind)
    pids = _log(log, version_id, s, rng)
    contracts = labels.Contracts(
        ((LINE, LineSettings(task=tasks.BINARY, label_range=(0, 1), decision_threshold=threshold)),)
    )
    half = n // 2
    # Labels as JSON sends them: 0/1 and false/true alike.
    items = [
        (pid, bool(v) if i % 3 == 0 else int(v))
        for i, (pid, v) in enumerate(zip(pids, y, strict=True))
    ]
    first = labels.record_many(store, items[:half], contracts)
    log.compact()  # the old minutes fold into hours (if the writer's upkeep has not yet)
    with store.read() as tx:
        assert tx.conn.execute("SELECT count(*) FROM rollups_hourly").fetchone()[0] > 0
    second = labels.record_many(store, items[half:], contracts)
    assert {a.status for a in first + second} == {"recorded"}

    with store.read() as tx:
        got = metrics.load(tx, version_id).window(None).metrics(tasks.BINARY)
    predicted = (s >= threshold).astype(int)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, predicted))
    assert got["brier"] == pytest.approx(sk.brier_score_loss(y, s))
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, s, labels=[0, 1]))
    expected = scoring.metrics(tasks.BINARY, s, y, threshold=threshold)
    if predicted.any():
        assert got["precision"] == pytest.approx(sk.precision_score(y, predicted))
    else:
        assert got["precision"] is None and "precision" not in expected
    if y.any():
        assert got["recall"] == pytest.approx(sk.recall_score(y, predicted))
    else:
        assert got["recall"] is None
    if 0 < y.sum() < n:
        assert got["auc"] == pytest.approx(sk.roc_auc_score(y, s), abs=AUC_TOLERANCE)
    else:
        assert got["auc"] is None


def test_auc_from_class_histograms_is_within_the_tolerance_on_large_samples() -> None:
    """The binning alone (no store): 200,000 model-like and uniform scores, as one minute's
    histogram or as many minutes merged."""
    rng = np.random.default_rng(5)
    for kind in ("model", "uniform"):
        y = (rng.random(200_000) < 0.3).astype(int)
        s = _scores(rng, y, kind)
        keys = [rollups.class_key(v, bool(c)) for v, c in zip(s.tolist(), y.tolist(), strict=True)]
        parts = [
            rollups.encode_classes(dict(zip(*np.unique(k, return_counts=True), strict=True)))
            for k in np.array_split(np.array(keys), 7)
        ]
        merged = rollups.decode_classes(rollups.merge_classes(parts))
        got = metrics.auc_of(np.array(sorted(merged.items()), dtype=np.int64))
        assert got == pytest.approx(sk.roc_auc_score(y, s), abs=AUC_TOLERANCE), kind


def _pairs_auc(merged: dict[int, int]) -> float | None:
    """AUC by counting every (positive, negative) pair of a sparse histogram: the
    definition, pair by pair (1 above, ½ equal), without the vectorised sort."""
    bins = rollups.CLASS_BINS
    pos = {k - bins: c for k, c in merged.items() if k >= bins}
    neg = {k: c for k, c in merged.items() if k < bins}
    pairs = sum(pos.values()) * sum(neg.values())
    if not pairs:
        return None
    wins = sum(
        cp * cn * (1.0 if kp > kn else 0.5 if kp == kn else 0.0)
        for kp, cp in pos.items()
        for kn, cn in neg.items()
    )
    return wins / pairs


def test_a_class_key_is_the_score_itself_ordered_and_clipped() -> None:
    assert rollups.class_bin(0.0) == 0 == rollups.class_bin(-0.0) == rollups.class_bin(-3.0)
    assert rollups.class_bin(1.0) == rollups.class_bin(7.0) < rollups.CLASS_BINS
    close = [0.5, float(np.nextafter(np.float32(0.5), np.float32(1)))]  # neighbouring float32s
    assert rollups.class_bin(close[0]) < rollups.class_bin(close[1])
    edges = np.sort(np.random.default_rng(2).random(5001).astype(np.float32)).tolist()
    keys = [rollups.class_bin(v) for v in edges]
    assert keys == sorted(keys)  # monotone in the score


def test_auc_from_rollups_is_exact_where_fixed_bins_were_not() -> None:
    """15 uniform scores, two of them 0.0004 apart across the classes: the 16,384-bin
    histograms this replaced were 0.009 off here (seed 676 of a 3,000-sample sweep)."""
    rng = np.random.default_rng(676)
    n = int(rng.integers(2, 600))
    y = (rng.random(n) < rng.uniform(0.02, 0.98)).astype(int)
    s = rng.random(n)
    entries: dict[int, int] = {}
    for v, c in zip(s.tolist(), y.tolist(), strict=True):
        key = rollups.class_key(v, bool(c))
        entries[key] = entries.get(key, 0) + 1
    got = metrics.auc_of(np.array(sorted(entries.items()), dtype=np.int64))
    assert got == pytest.approx(sk.roc_auc_score(y, s.astype(np.float32)), abs=1e-12)


def test_feedbacks_eps_is_scorings() -> None:
    assert labels.EPS == scoring.EPS


def test_an_unlabelled_window_has_no_binary_metrics() -> None:
    empty = metrics.VersionRollups(
        np.zeros(0, np.int64),
        np.zeros((0, rollups.SCALARS)),
        np.zeros((0, 0), np.int64),
        None,
        None,
    ).window(None)
    assert empty.metrics(tasks.BINARY) == dict.fromkeys(tasks.METRICS[tasks.BINARY])


def test_each_minutes_auc_for_the_sparklines_is_its_own_histograms() -> None:
    """series(task="binary") reads every minute's AUC at once from the sparse entries; each
    equals the AUC of that minute's own entries counted pair by pair (rows merged)."""
    rng = np.random.default_rng(1)
    bins = rollups.CLASS_BINS
    for _ in range(100):
        rows = int(rng.integers(1, 8))
        blobs: list[bytes | None] = []
        for _ in range(rows):
            if rng.random() < 0.3:
                blobs.append(None)
                continue
            crowded = [5, 6, bins + 4, bins + 5, bins + 6]  # shared bins: ties across classes
            keys = (
                rng.integers(0, 2 * bins, int(rng.integers(1, 50)))
                if rng.random() < 0.5
                else rng.choice(crowded, int(rng.integers(1, 20)))
            )
            found, counts = np.unique(keys, return_counts=True)
            blobs.append(
                rollups.encode_classes(dict(zip(found.tolist(), counts.tolist(), strict=True)))
            )
        classes = rollup_rows._classes(blobs)
        minutes = np.sort(rng.integers(0, 4, rows))
        version = metrics.VersionRollups(
            minutes,
            np.ones((rows, rollups.SCALARS)),
            np.zeros((rows, 0), np.int64),
            None,
            None,
            None,
            classes,
        )
        points = version.series(0, tasks.BINARY)
        for point in points:
            merged: dict[int, int] = {}
            for row, key, count in classes if classes is not None else ():
                if minutes[row] == point.minute:
                    merged[int(key)] = merged.get(int(key), 0) + int(count)
            expected = _pairs_auc(merged)
            if expected is None:
                assert point.primary is None
            else:
                assert point.primary == pytest.approx(expected, abs=1e-12)
