"""engine.core.tasks: which XGBoost objectives serve which task, and binary labels."""

from __future__ import annotations

import pytest

from engine.core import tasks


@pytest.mark.parametrize(
    ("objective", "task"),
    [
        ("reg:squarederror", "regression"),
        ("reg:absoluteerror", "regression"),
        ("reg:pseudohubererror", "regression"),
        ("count:poisson", "regression"),
        ("binary:logistic", "binary"),
    ],
)
def test_objectives_name_their_task(objective: str, task: str) -> None:
    assert tasks.objective_task(objective) == task
    assert tasks.objective_refusal(objective, task) is None


@pytest.mark.parametrize(
    ("objective", "task", "words"),
    [
        ("binary:logistic", "regression", ["binary:logistic", "binary model", "regression"]),
        ("reg:squarederror", "binary", ["reg:squarederror", "regression model", "binary"]),
        ("multi:softprob", "binary", ["multi:softprob", "multi-class"]),
        ("multi:softmax", "regression", ["multi-class"]),
        ("binary:hinge", "binary", ["binary:hinge", "probability", "binary:logistic"]),
        ("binary:logitraw", "binary", ["binary:logitraw", "probability"]),
        ("rank:pairwise", "regression", ["rank:pairwise", "neither"]),
    ],
)
def test_a_contradicting_objective_is_refused_with_the_reason(
    objective: str, task: str, words: list[str]
) -> None:
    reason = tasks.objective_refusal(objective, task)
    assert reason is not None
    for word in words:
        assert word in reason, reason


def test_an_objective_a_file_does_not_state_is_not_refused_here() -> None:
    assert tasks.objective_refusal(None, "binary") is None


@pytest.mark.parametrize(
    ("value", "label"),
    [(0, 0), (1, 1), (0.0, 0), (1.0, 1), (True, 1), (False, 0), ("true", 1), (" 0 ", 0)],
)
def test_binary_labels(value: object, label: int) -> None:
    assert tasks.binary_label(value) == label


@pytest.mark.parametrize("value", [0.5, 2, -1, "yes", None, float("nan")])
def test_anything_else_is_not_a_binary_label(value: object) -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        tasks.binary_label(value)


def test_every_task_names_its_primary_metric_among_its_metrics() -> None:
    for task in tasks.TASKS:
        assert tasks.PRIMARY[task] in tasks.METRICS[task]
