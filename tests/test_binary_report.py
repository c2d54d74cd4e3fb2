"""The report by task: a binary line's health on AUC's thresholds, model drift on the primary
metric against the baseline's metrics, and the first-labelled fallback baseline."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core import tasks
from engine.core.config import Config, Thresholds
from engine.core.rollups import CLASS_BINS, SCALARS
from engine.monitoring import report
from engine.monitoring import rollups as metrics


def window(auc: float, *, labelled: int = 1000, within: int = 900) -> metrics.WindowMetrics:
    """A window whose class histogram has exactly `auc`: every negative in one bin, a share
    `auc` of the positives above it, the rest below."""
    positives = labelled // 2
    hist = np.array(  # sparse (key, count): engine.core.rollups' class histograms
        [
            (500, labelled - positives),
            (CLASS_BINS + 100, positives - round(positives * auc)),
            (CLASS_BINS + 700, round(positives * auc)),
        ],
        dtype=np.int64,
    )
    return metrics.WindowMetrics(
        labelled,
        0,
        labelled,
        within,
        100.0,
        50.0,
        np.zeros(1, np.int64),
        log_loss_sum=400.0,
        pred_pos=positives,
        actual_pos=positives,
        true_pos=positives // 2,
        class_hist=hist,
    )


def test_a_binary_lines_health_is_judged_on_auc_not_accuracy() -> None:
    config = Config(thresholds=Thresholds(auc_min=0.7, auc_alert=0.6))
    none = report.DriftSummary(None, None, None)
    low_accuracy = window(0.9, within=100)  # accuracy 0.1: a regression line would alarm
    assert report.assess(low_accuracy, none, config, tasks.BINARY) == ("healthy", ())
    health, [finding] = report.assess(window(0.65), none, config, tasks.BINARY)
    assert (health, finding.metric, finding.threshold) == ("warning", "auc", 0.7)
    health, [finding] = report.assess(window(0.5), none, config, tasks.BINARY)
    assert (health, finding.metric, finding.threshold) == ("critical", "auc", 0.6)
    health, [finding] = report.assess(low_accuracy, none, config, tasks.REGRESSION)
    assert (health, finding.metric) == ("critical", "accuracy")


def test_model_drift_is_the_primary_metrics_relative_degradation() -> None:
    live = window(0.72)
    assert live.auc == pytest.approx(0.72)
    base = {"auc": 0.8, "accuracy": 0.99, "log_loss": 0.1}  # only the primary counts
    assert report.model_drift(live, tasks.BINARY, base, 30) == pytest.approx(0.1)
    assert report.model_drift(live, tasks.BINARY, {"accuracy": 0.99}, 30) is None
    assert report.model_drift(live, tasks.BINARY, base, 5000) is None  # too few labels
    # Regression: the worse of accuracy's and MAE's (the seed's rule).
    assert report.model_drift(live, tasks.REGRESSION, {"accuracy": 1.0, "mae": 0.05}, 30) == (
        pytest.approx(1.0)
    )


def test_the_fallback_baseline_is_the_earliest_rows_holding_enough_labels() -> None:
    scalars = np.zeros((4, SCALARS))
    scalars[:, 0] = 100  # predictions
    scalars[:, 2] = [50, 120, 200, 10]  # labelled
    scalars[:, 3] = [50, 60, 20, 10]  # within
    rollups = metrics.VersionRollups(
        np.array([10, 11, 12, 13]), scalars, np.zeros((4, 0), np.int64), None, None
    )
    assert rollups.first_labelled(500) is None
    first = rollups.first_labelled(170)
    assert first is not None and first.labelled == 170 and first.within == 110
    assert report.FIRST_LABELLED == 200
    found, source = report._baseline_metrics(None, rollups, tasks.REGRESSION)
    assert source.source == "first_labelled" and "370" in (source.detail or "")
    assert found["accuracy"] == pytest.approx(130 / 370)
