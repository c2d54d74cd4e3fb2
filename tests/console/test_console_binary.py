"""The metric pane of a binary line: AUC first, its other metrics beside it, each value fitting
the pane's value column at 80 columns."""

from __future__ import annotations

from console import panes
from engine.core import tasks
from engine.core.config import Config
from engine.monitoring import report
from tests.test_binary_report import window

VALUE_WIDTH = 33  # console/styles.py: .metric-value is 34 wide with one cell of padding


def test_a_binary_lines_metric_values_name_its_metrics_and_fit() -> None:
    w = window(0.8123)
    version = report.VersionReport(
        "revert-risk",
        "v1.0",
        "production",
        10_000,
        "",
        "healthy",
        w,
        {"1h": w},
        report.DriftSummary(0.123, 0.05, None),
        (),
        task=tasks.BINARY,
        baseline=report.BaselineSource("first_labelled", "its first 200 labelled predictions"),
    )
    values = panes._metric_values(version, Config())
    assert values["primary"] == "0.812 (min 0.7) ll 0.400"  # sig: 3 significant digits
    assert values["second"] == "0.900 p 0.500 r 0.500 br 0.0500"
    assert values["drift"] == "12.3% (max 10%) 1st psi 0.0500"
    assert values["traffic"] == "1,000 pred, 1,000 lab, 100%"
    assert all(len(v) <= VALUE_WIDTH for v in values.values()), values
