"""Shadow scoring (issue 17, part 3): a version scored on production's requests without
serving it, its scores logged against the same prediction ids, labels pairing with both
models, and the paired verdict it gives (and gives an A/B test whose candidate it is)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.cli.main import main
from engine.core.errors import BeastError, Conflict
from engine.serving import router, shadow
from engine.store.opening import open_store
from tests.conftest import BOTH_BACKENDS
from tests.helpers import history_of, model_path, set_config
from tests.serving_helpers import LINE, serving, version_id

ROW = {"coverage": 0.4, "complexity": 0.2, "lint_density": 0.7, "duplication": 0.1, "churn": 0.5}


def _rows(n: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).random((n, 5)).round(4).tolist()  # type: ignore[no-any-return]


def _label(value: float) -> float:
    """A score as a label of the line's range [0, 100]."""
    return min(max(value, 0.0), 100.0)


def _no_skips(ws: Workspace) -> None:
    """A budget no row outwaits, even on a loaded machine (the tests that count every row)."""
    set_config(ws, budget_ms="60000")


@pytest.fixture
def shadowed(engine: Engine, registered: Workspace) -> Iterator[Engine]:
    """v1.0 in production, v4.0 its 100% shadow."""
    _no_skips(registered)
    engine.deploy(version="v1.0")
    engine.shadow(version="v4.0")
    yield engine


def _scores(ws: Workspace, shadow_id: int) -> dict[str, float | None]:
    store = open_store(ws.db_path)
    try:
        with store.read() as tx:
            return tx.shadows.scores(shadow_id)
    finally:
        store.close()


def _pairs(ws: Workspace, shadow_id: int, control: str) -> tuple[np.ndarray, ...]:
    store = open_store(ws.db_path)
    try:
        with store.read() as tx:
            return tx.shadows.pairs(shadow_id, version_id(ws, control))
    finally:
        store.close()


@BOTH_BACKENDS
def test_a_shadow_starts_and_stops_as_history_rows_and_one_runs_per_line(
    engine: Engine, registered: Workspace
) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", ab_test="t1", traffic=10)
    before = engine.status()
    change = engine.shadow(version="v3.0", traffic=25)
    assert "shadow v3.0 started" in change.message
    start = history_of(registered)[-1]
    assert (start.action, start.version, start.experiment) == ("shadow_start", "v3.0", "t1")
    assert start.from_state == start.to_state  # nothing served changed
    status = engine.status()
    assert [(s.line, s.version, s.share_bp) for s in status.shadows] == [(LINE, "v3.0", 2500)]
    assert status.to_json()["shadows"][0]["share"] == 25.0
    assert status.experiments == before.experiments  # the running test is untouched
    assert [(d.version, d.role, d.traffic_bp) for d in status.deployments] == [
        (d.version, d.role, d.traffic_bp) for d in before.deployments
    ]
    with pytest.raises(Conflict, match="already running"):
        engine.shadow(version="v4.0")  # refused, never replaced: stop it first
    with pytest.raises(Conflict, match="production already"):
        engine.shadow_stop()
        engine.shadow(version="v1.0")
    end = history_of(registered)[-1]
    assert (end.action, end.version) == ("shadow_end", "v3.0")
    assert end.from_state == end.to_state
    assert engine.status().shadows == ()
    with pytest.raises(BeastError, match="no shadow is running"):
        engine.shadow_stop()
    with pytest.raises(BeastError, match="--shadow-traffic"):
        engine.shadow(version="v4.0", traffic=0)


@BOTH_BACKENDS
def test_shadow_scores_are_logged_against_production_ids_and_labels_pair_both(
    shadowed: Engine, registered: Workspace
) -> None:
    with serving(registered) as (router, log):
        assert log is not None and router.shadows is not None
        singles = [router.predict(row) for row in _rows(12)]
        batch = router.predict_batch(_rows(40, seed=1))
        router.shadows.flush()
        log.flush()
    shadow = shadowed.status().shadows[0]
    scores = _scores(registered, shadow.id)
    served = singles + batch
    assert set(scores) == {p.prediction_id for p in served}  # the same ids as production's
    assert shadow.scored == len(served) and shadow.dropped == 0
    # They are v4.0's own scores of the same rows.
    booster = xgb.Booster(model_file=str(model_path(registered, "v4.0")))
    x = np.array(_rows(12) + _rows(40, seed=1), dtype=np.float32)
    expected = booster.inplace_predict(x, validate_features=False)
    got = [scores[p.prediction_id] for p in served]
    assert np.allclose(np.array(got, dtype=np.float64), expected, rtol=1e-6)
    # Feedback on a prediction's id labels both models' scores of it.
    labelled = [served[0], served[5], served[20], served[45]]
    for p in labelled:
        assert p.score is not None
        assert shadowed.feedback(p.prediction_id, _label(p.score + 1.0)) == "recorded"
    shadow_scores, control, actual = _pairs(registered, shadow.id, "v1.0")
    assert sorted(control.tolist()) == sorted(p.score for p in labelled)  # type: ignore[type-var]
    assert sorted(actual.tolist()) == sorted(_label(p.score + 1.0) for p in labelled)  # type: ignore[operator]
    assert sorted(shadow_scores.tolist()) == pytest.approx(
        sorted(scores[p.prediction_id] for p in labelled)  # type: ignore[type-var]
    )


def test_a_shadow_scores_its_share_of_production_requests(
    engine: Engine, registered: Workspace
) -> None:
    _no_skips(registered)
    engine.deploy(version="v1.0")
    engine.shadow(version="v2.0", traffic=20)
    with serving(registered) as (router, log):
        assert log is not None and router.shadows is not None
        for row in _rows(600):
            router.predict(row)
        router.predict_batch(_rows(1400, seed=2))
        router.shadows.flush()
        log.flush()
    found = engine.status().shadows[0]
    taken = found.scored + found.dropped  # every row its share took: scored or skipped
    # 2,000 requests at 20%: 400 expected, sd ~18; ±5 sd.
    assert 310 <= taken <= 490


def test_rows_that_wait_past_the_budget_are_dropped_and_counted(
    engine: Engine, registered: Workspace
) -> None:
    set_config(registered, budget_ms="0.000001")  # every row waits longer than this
    engine.deploy(version="v1.0")
    engine.shadow(version="v2.0")
    with serving(registered) as (router, log):
        assert log is not None and router.shadows is not None
        for row in _rows(30):
            router.predict(row)
        router.predict_batch(_rows(70, seed=3))
        router.shadows.flush()
        log.flush()
        assert router.shadows.stats().dropped == 100
    shadow = engine.status().shadows[0]
    assert (shadow.scored, shadow.dropped) == (0, 100)
    assert shadow.to_json()["dropped"] == 100


def _label_with_shadow_scores(engine: Engine, ws: Workspace, n: int) -> None:
    """Serve n rows and label each with v4.0's score of it: the shadow is right, v1.0 is not."""
    with serving(ws) as (router, log):
        assert log is not None and router.shadows is not None
        served = router.predict_batch(_rows(n, seed=4))
        router.shadows.flush()
        log.flush()
    shadow = engine.status().shadows[0]
    scores = _scores(ws, shadow.id)
    items: list[tuple[str, object]] = []
    for p in served:
        own = scores.get(p.prediction_id)  # a candidate-served row has no shadow score
        value = own if own is not None else p.score
        assert value is not None
        items.append((p.prediction_id, _label(value)))
    engine.feedback_many(items)


def test_the_shadows_paired_verdict_is_in_the_monitoring_report(
    shadowed: Engine, registered: Workspace
) -> None:
    _label_with_shadow_scores(shadowed, registered, 300)
    report = shadowed.monitoring.report()
    (found,) = report.shadows
    assert found.comparison.n == 300
    assert found.verdict.paired
    assert found.verdict.outcome == "candidate wins"
    out = report.to_json()["shadows"][0]
    assert {k: out[k] for k in ("line", "version", "share", "labelled_pairs", "verdict")} == {
        "line": LINE,
        "version": "v4.0",
        "share": 100.0,
        "labelled_pairs": 300,
        "verdict": "candidate wins",
    }
    assert out["verdict_detail"]["paired"] is True
    assert out["scored"] == 300 and out["valid"] is True


def test_an_ab_test_whose_candidate_is_shadowed_is_judged_paired_unless_the_line_says_not(
    engine: Engine, registered: Workspace
) -> None:
    _no_skips(registered)
    engine.deploy(version="v1.0")
    engine.deploy(version="v4.0", ab_test="t1", traffic=10)
    engine.shadow(version="v4.0")
    _label_with_shadow_scores(engine, registered, 400)
    paired = engine.monitoring.experiment(engine.experiment("t1")).verdict
    assert paired.paired
    assert paired.outcome == "candidate wins"
    assert paired.n_control == paired.n_candidate > 300  # the production-served rows, paired
    with registered.config_path.open("a", encoding="utf-8") as f:
        f.write(f"\n[lines.{LINE}]\nprediction_changes_outcome = true\n")
    again = Engine(registered, actor="tester")
    try:
        served_arms = again.monitoring.experiment(again.experiment("t1")).verdict
        assert not served_arms.paired  # the test between served arms, as without a shadow
        (shadow,) = again.monitoring.report().shadows
        assert shadow.valid is False
    finally:
        again.close()


def test_the_cli_starts_shows_and_stops_a_shadow(
    engine: Engine, registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    def beast(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--workspace", str(registered.root), *args])
        out, err = capsys.readouterr()
        return code, out, err

    engine.deploy(version="v1.0")
    code, out, _ = beast("deploy", "--version", "v2.0", "--shadow", "--shadow-traffic", "50")
    assert code == 0 and "shadow v2.0 started" in out
    code, out, _ = beast("status", "--json")
    assert json.loads(out)["shadows"][0]["share"] == 50.0
    code, out, _ = beast("status")
    assert "shadow v2.0: scored on 50% of production's requests" in out
    code, out, _ = beast("monitor", "--readonly")
    assert code == 0 and "paired verdict not enough data" in out
    code, _, err = beast("deploy", "--version", "v3.0", "--shadow")
    assert code == 1 and err.count("\n") == 1 and "already running" in err
    code, _, err = beast("deploy", "--version", "v3.0", "--shadow-traffic", "5")
    assert code == 2 and "--shadow-traffic needs --shadow" in err
    code, out, _ = beast("deploy", "--shadow-stop", "--model", LINE)
    assert code == 0 and "shadow v2.0 stopped" in out
    assert [e.action for e in history_of(registered)[-2:]] == ["shadow_start", "shadow_end"]


def test_a_shadows_scoring_call_always_releases_the_gil() -> None:
    # The router's scorer holds the GIL up to HELD_ROWS rows; the shadow pads past it.
    assert shadow.RELEASED_ROWS > router.HELD_ROWS
