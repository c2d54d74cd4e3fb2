"""The demo workspace and its generated data: documented schema, deterministic, honest."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine import Engine, Workspace
from engine.demo import sample_data
from engine.demo import workspace as demo
from engine.monitoring import baselines, scoring


def test_samples_follow_the_documented_function_and_schema(tmp_path: Path) -> None:
    a = sample_data.generate(2000, seed=3)
    b = sample_data.generate(2000, seed=3)
    assert np.array_equal(a.features, b.features) and np.array_equal(a.scores, b.scores)
    assert a.features.shape == (2000, len(sample_data.FEATURES))
    assert a.scores.min() >= 0 and a.scores.max() <= 100
    residual = a.scores - sample_data.quality_score(a.features)
    assert abs(float(np.std(residual)) - sample_data.NOISE_POINTS) < 0.5  # noise, not signal
    path = sample_data.write_csv(tmp_path / "s.csv", a)
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*sample_data.FEATURES, "score", "observed_at"]
    assert len(rows) == 2001 and rows[1][-1].endswith("Z")


def test_drift_moves_the_features_an_ageing_codebase_moves() -> None:
    base = sample_data.generate(5000, seed=1)
    aged = sample_data.generate(5000, seed=1, drift=1.0)
    col = {name: i for i, name in enumerate(sample_data.FEATURES)}
    assert (
        aged.features[:, col["test_coverage"]].mean()
        < base.features[:, col["test_coverage"]].mean()
    )
    assert (
        aged.features[:, col["lint_density"]].mean() > base.features[:, col["lint_density"]].mean()
    )
    assert aged.scores.mean() < base.scores.mean() - 5


def test_revert_samples_follow_the_documented_probability_and_schema(tmp_path: Path) -> None:
    a = sample_data.generate_reverts(4000, seed=3)
    b = sample_data.generate_reverts(4000, seed=3)
    assert np.array_equal(a.features, b.features) and np.array_equal(a.reverted, b.reverted)
    assert set(np.unique(a.reverted).tolist()) == {0.0, 1.0}
    p = sample_data.revert_probability(a.features)
    assert abs(float(a.reverted.mean()) - float(p.mean())) < 0.02  # drawn from p, not made up
    # The documented probability ranks reverted changes above kept ones: a learnable signal.
    auc = scoring.metrics("binary", p.astype(np.float64), a.reverted.astype(np.float64))["auc"]
    assert 0.7 < auc < 0.95
    rushed = sample_data.generate_reverts(4000, seed=3, drift=1.0)
    assert rushed.reverted.mean() > a.reverted.mean() + 0.1
    path = sample_data.write_reverts_csv(tmp_path / "r.csv", a)
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*sample_data.REVERT_FEATURES, "reverted", "merged_at"]
    assert {r[-2] for r in rows[1:]} == {"0", "1"} and rows[1][-1].endswith("Z")


def test_demo_build_deploys_both_lines_each_with_a_test(
    demo_built: demo.DemoResult, demo_ws: Workspace
) -> None:
    # The session's build (tests/conftest.py), copied: each demo build trains and validates
    # five versions (~20 s), and three test modules want one.
    result, ws = demo_built, demo_ws
    assert result.data.name == "demo-samples.csv"
    assert result.revert_data is not None and result.revert_data.name == "demo-reverts.csv"
    engine = Engine(ws)
    try:
        roles = {(d.line, d.version): (d.role, d.traffic_bp) for d in engine.status().deployments}
        assert roles == {
            (demo.LINE, "v1-enhanced"): ("production", 9000),
            (demo.LINE, "v3-advanced"): ("candidate", 1000),
            (demo.REVERT_LINE, "v1.0"): ("production", 8000),
            (demo.REVERT_LINE, "v2.0"): ("candidate", 2000),
        }
        for name, line_name in ((demo.DEMO_TEST, demo.LINE), (demo.REVERT_TEST, demo.REVERT_LINE)):
            test = engine.experiment(name)
            assert (test.line, test.status) == (line_name, "running")
        assert {a.status for a in engine.models().artifacts} == {"valid"}
        assert [a.format for a in engine.models().artifacts] == ["json"] * 5
        # The binary line is declared, and its baselines carry the binary task's metrics.
        line = engine.config.line(demo.REVERT_LINE)
        assert (line.task, line.label, line.time) == ("binary", "reverted", "merged_at")
    finally:
        engine.close()
    for version in ("v1.0", "v2.0"):
        sidecar = ws.models_dir / f"{demo.REVERT_LINE}-{version}.json"
        reference, metrics = baselines.read_sidecar(sidecar, sample_data.REVERT_FEATURES)
        assert reference is not None
        assert {"auc", "log_loss", "accuracy", "brier"} <= metrics.keys()
        assert metrics["auc"] > 0.65
