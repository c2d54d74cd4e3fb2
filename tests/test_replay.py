"""`beast replay` and `beast deploy --require-replay`: a registered version scored on the
requests its line's production really served (routed, logged, labelled through feedback),
compared with production paired — the same numbers `paired.compare` gives on those rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.cli.replay import render_replay
from engine.core.errors import BeastError, NotFound
from engine.monitoring import abstats, paired, replay
from tests.conftest import BOTH_BACKENDS
from tests.helpers import beast, model_path, production_of, train_model
from tests.serving_helpers import LINE, serving

ROWS = 400


def _wide_labels(ws: Workspace) -> None:
    """The test models score up to ~250 (the seed's label range is 0–100)."""
    with ws.config_path.open("a", encoding="utf-8") as f:
        f.write(f"\n[lines.{LINE}]\nlabel_range = [-1000, 1000]\n")


def _scores(ws: Workspace, version: str, rows: np.ndarray) -> np.ndarray:
    booster = xgb.Booster(model_file=str(model_path(ws, version)))
    return np.asarray(booster.inplace_predict(rows), dtype=np.float64)


def traffic(ws: Workspace, truth: str, *, n: int = ROWS, seed: int = 0) -> np.ndarray:
    """n requests served by the line (half one by one, half as a batch), each labelled with
    `truth`'s score of it: `truth` is exactly right, any other version as right as it agrees."""
    rows = np.random.default_rng(seed).random((n, 5)).astype(np.float32)
    with serving(ws, interval=3600) as (router, log):
        assert log is not None
        served = [router.predict(r.tolist()) for r in rows[: n // 2]]
        served += router.predict_batch([r.tolist() for r in rows[n // 2 :]])
        log.flush()
    labels = _scores(ws, truth, rows)
    engine = Engine(ws)
    try:
        answers = engine.feedback_many(
            [(p.prediction_id, float(y)) for p, y in zip(served, labels, strict=True)]
        )
    finally:
        engine.close()
    assert {a.status for a in answers} == {"recorded"}
    return rows


@pytest.fixture
def live(registered: Workspace) -> Workspace:
    """v1.0 in production, 400 labelled requests whose truth is v2.0's score."""
    _wide_labels(registered)
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(version="v1.0")
    finally:
        engine.close()
    traffic(registered, truth="v2.0")
    return registered


@BOTH_BACKENDS
def test_replay_scores_the_version_on_productions_rows_paired(live: Workspace) -> None:
    engine = Engine(live)
    try:
        found = engine.replay("v2.0")
        with engine.store.read() as tx:
            rows = list(tx.predictions.logged_rows(LINE))
    finally:
        engine.close()
    assert (found.line, found.version, found.production, found.n) == (LINE, "v2.0", "v1.0", ROWS)
    assert not found.capped
    # v2.0 is the truth: right on every request; production v1.0 is not
    assert found.comparison.candidate["accuracy"] == pytest.approx(1.0)
    assert found.comparison.control["accuracy"] < 0.5
    assert found.verdict.outcome == abstats.CANDIDATE_WINS and found.verdict.paired
    assert found.enough
    # the same verdict as the one paired comparison on the same rows' logged scores
    labelled = [r for r in rows if r.actual is not None and r.features is not None]
    x = np.frombuffer(b"".join(r.features or b"" for r in labelled), dtype=np.float32).reshape(
        -1, 5
    )
    logged = np.array([r.score for r in labelled])
    actual = np.array([r.actual for r in labelled])
    same = paired.compare(
        "regression", _scores(live, "v2.0", x), logged, actual, abstats.Rules(), tolerance=5.0
    )
    assert same.verdict == found.verdict
    assert same.control == found.comparison.control
    # nothing where the truth loses
    assert found.slices == ()


def test_replay_slices_name_where_it_loses(live: Workspace) -> None:
    engine = Engine(live)
    try:
        found = engine.replay("v3.0")
        with engine.store.read() as tx:
            rows = [r for r in tx.predictions.logged_rows(LINE) if r.actual is not None]
            schema = tx.registry.line_schema(LINE)
    finally:
        engine.close()
    assert found.slices, "v3.0 is not v2.0: it loses somewhere"
    worst = found.slices[0]
    assert worst.diff == min(s.diff for s in found.slices) < 0
    assert worst.n >= replay.MIN_SLICE_ROWS
    # The worst slice, re-derived from the logged rows: those whose feature lies in its range
    # are its n, and each model's accuracy over them is its figures.
    x = np.frombuffer(b"".join(r.features or b"" for r in rows), dtype=np.float32).reshape(-1, 5)
    assert schema is not None
    names = schema.feature_names or tuple(f"f{i}" for i in range(schema.n_features))
    column = x[:, list(names).index(worst.feature)]
    inside = (column >= worst.lo) & (column <= worst.hi)
    actual = np.array([r.actual for r in rows])[inside]
    logged = np.array([r.score for r in rows])[inside]
    assert int(inside.sum()) == worst.n
    assert worst.production == pytest.approx(np.mean(np.abs(logged - actual) <= 5.0))
    ours = _scores(live, "v3.0", x[inside])
    assert worst.candidate == pytest.approx(np.mean(np.abs(ours - actual) <= 5.0))
    assert len(found.slices) <= replay.WORST_SLICES
    assert [s.diff for s in found.slices] == sorted(s.diff for s in found.slices)


def test_slices_by_quartile_are_exact() -> None:
    x = np.arange(400, dtype=np.float32).reshape(-1, 1)
    actual = np.zeros(400)
    control = np.zeros(400)
    candidate = np.where(np.arange(400) >= 300, 50.0, 0.0)  # wrong on the top quartile only
    found = replay.slices(
        "regression", ("f",), x, actual, candidate=candidate, control=control, tolerance=5.0
    )
    assert [(s.feature, s.quartile, s.n, s.diff) for s in found] == [("f", 4, 100, -1.0)]
    assert (found[0].lo, found[0].hi) == (300.0, 399.0)


def test_replay_json_and_its_errors(live: Workspace) -> None:
    done = beast(live, "replay", "v2.0", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"] == "candidate wins" and doc["n"] == ROWS
    assert doc["metrics"]["delta"]["accuracy"] == pytest.approx(
        doc["metrics"]["candidate"]["accuracy"] - doc["metrics"]["production"]["accuracy"]
    )
    assert set(doc["verdict_detail"]) >= {"diff", "lo", "hi", "p", "margin", "n"}
    assert doc["limit"] == replay.LIMIT and doc["capped"] is False
    done = beast(live, "replay", "v9.0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["beast: no registered version v9.0"]
    engine = Engine(live)
    try:
        shown = render_replay(engine.replay("v3.0"))
        with pytest.raises(NotFound, match="no model line other"):
            engine.replay("v2.0", model="other")
        with pytest.raises(BeastError, match="--window takes"):
            engine.replay("v2.0", window="soon")
    finally:
        engine.close()
    assert shown.splitlines()[0].startswith("replay of v3.0 on quality-predictor: 400 labelled")
    assert "verdict: " in shown and "where it loses most (accuracy" in shown


def test_no_labelled_rows_in_the_window_and_another_lines_version(registered: Workspace) -> None:
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(version="v1.0")
        with pytest.raises(BeastError, match="no labelled predictions of quality-predictor"):
            engine.replay("v2.0")
        engine.register(train_model(registered.models_dir / "other-line-v7.0.json", seed=9))
        with pytest.raises(BeastError, match=r"v7\.0 is a version of other-line, not of"):
            engine.replay("v7.0", model=LINE)
        with pytest.raises(NotFound):
            engine.replay("v8.0", model=LINE)
    finally:
        engine.close()


@pytest.mark.parametrize(("truth", "accepted"), [("v2.0", True), ("v1.0", False)])
def test_require_replay_accepts_a_better_model_and_refuses_a_worse(
    registered: Workspace, truth: str, accepted: bool
) -> None:
    _wide_labels(registered)
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(version="v1.0")
    finally:
        engine.close()
    traffic(registered, truth=truth)
    done = beast(registered, "deploy", "--version", "v2.0", "--require-replay", "--json")
    if accepted:
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["replay"]["verdict"] == "candidate wins"
        checked = {i["name"]: i for i in doc["preflight"]["items"]}
        assert checked["tested on a validation set"]["checked"]
        assert "replay on 400 labelled requests" in checked["tested on a validation set"]["figure"]
        assert production_of(registered) == "v2.0"
    else:
        assert done.returncode == 1
        assert "refused (--require-replay)" in done.stderr and "control wins" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert production_of(registered) == "v1.0"  # nothing changed


@BOTH_BACKENDS
def test_served_rows_are_productions_within_the_window_most_recent_first_capped(
    registered: Workspace,
) -> None:
    _wide_labels(registered)
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(version="v1.0")
        engine.deploy(version="v3.0", traffic=50, ab_test="half")
    finally:
        engine.close()
    traffic(registered, truth="v2.0", n=200)
    engine = Engine(registered)
    try:
        with engine.store.read() as tx:
            logged = [r for r in tx.predictions.logged_rows(LINE) if r.actual is not None]
            v1 = tx.registry.get_version(LINE, "v1.0")
            x, scores, actual, at = tx.predictions.served_rows(v1.id, 5, 0, 1000)
            capped = tx.predictions.served_rows(v1.id, 5, 0, 10)
            later = tx.predictions.served_rows(v1.id, 5, int(at.max()) + 1, 1000)
            target = tx.registry.get_version(LINE, "v2.0")
        ours = [r for r in logged if r.version_id == v1.id]
        assert 0 < len(ours) < len(logged)  # the candidate's rows are not production's
        assert sorted(scores.tolist()) == sorted(r.score or 0.0 for r in ours)
        assert sorted(actual.tolist()) == sorted(r.actual or 0.0 for r in ours)
        assert x.shape == (len(ours), 5) and list(at) == sorted(at)
        assert capped[0].shape == (10, 5) and list(capped[3]) == list(at[-10:])
        assert later[0].shape == (0, 5)
        found = replay.replay(engine.store, engine.config, registered.models_dir, target, limit=50)
        assert found.capped and found.n == 50  # the most recent 50 of production's rows
    finally:
        engine.close()


def test_binary_slices_compare_auc_and_skip_a_bin_of_one_class() -> None:
    x = np.arange(400, dtype=np.float32).reshape(-1, 1)
    actual = np.where(np.arange(400) < 100, 0.0, np.arange(400) % 2)  # Q1: negatives only
    control = actual * 0.8 + 0.1  # ranks every bin perfectly
    candidate = np.where(np.arange(400) >= 300, 1 - control, control)  # Q4 reversed
    found = replay.slices("binary", ("f",), x, actual, candidate=candidate, control=control)
    assert [(s.quartile, s.n, s.production, s.candidate) for s in found] == [(4, 100, 1.0, 0.0)]
