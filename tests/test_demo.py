"""The demo workspace and its generated data: documented schema, deterministic, honest."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine import Engine, Workspace
from engine.demo import sample_data
from engine.demo import workspace as demo
from tests.helpers import assert_invariants


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


def test_demo_build_deploys_production_and_a_test(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".beast-mode")
    result = demo.build(ws)
    assert result.data.name == "demo-samples.csv"
    engine = Engine(ws)
    try:
        roles = {d.version: (d.role, d.traffic_bp) for d in engine.status().deployments}
        assert roles == {"v1-enhanced": ("production", 9000), "v3-advanced": ("candidate", 1000)}
        assert {a.status for a in engine.models().artifacts} == {"valid"}
        assert [a.format for a in engine.models().artifacts] == ["json", "json", "json"]
    finally:
        engine.close()
    assert_invariants(ws)
