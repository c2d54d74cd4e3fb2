"""engine.monitoring.scoring: a task's metrics over arrays equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from engine.monitoring import scoring


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 400),
    rounding=st.sampled_from([None, 1, 2]),
    threshold=st.floats(0.05, 0.95),
)
def test_binary_metrics_equal_scikit_learns(
    seed: int, n: int, rounding: int | None, threshold: float
) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + y * rng.uniform(0, 2))))
    if rounding is not None:  # ties, many of them
        s = np.round(s, rounding)
    got = scoring.metrics("binary", s, y, threshold=threshold)
    predicted = (s >= threshold).astype(int)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, predicted))
    assert got["brier"] == pytest.approx(sk.brier_score_loss(y, s))
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, s, labels=[0, 1]))
    if predicted.any():
        assert got["precision"] == pytest.approx(sk.precision_score(y, predicted))
    else:
        assert "precision" not in got
    if y.any():
        assert got["recall"] == pytest.approx(sk.recall_score(y, predicted))
    if 0 < y.sum() < n:
        assert got["auc"] == pytest.approx(sk.roc_auc_score(y, s))
    else:
        assert "auc" not in got


def test_regression_metrics() -> None:
    s = np.array([50.0, 60.0, 70.0, 80.0])
    y = np.array([52.0, 70.0, 70.0, 74.0])
    got = scoring.metrics("regression", s, y, tolerance=5)
    assert got["accuracy"] == 0.5
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, s))
    assert got["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, s)))


def test_nothing_scored_is_no_metric_and_mismatched_arrays_are_refused() -> None:
    assert scoring.metrics("binary", np.zeros(0), np.zeros(0)) == {}
    with pytest.raises(ValueError, match="2 scores for 3 labels"):
        scoring.metrics("regression", np.zeros(2), np.zeros(3))
