"""What a model line's task means: its metrics, its primary metric, the objectives it accepts.

A line declares its task in config.toml (`[lines.NAME] task`, engine.core.config); the line
that declares nothing is the seed's regression. These names are contracts: the JSON keys of
every metric are exactly `METRICS[task]`.
"""

from __future__ import annotations

REGRESSION = "regression"
BINARY = "binary"
TASKS = (REGRESSION, BINARY)

# The metric keys a line of each task reports (JSON, /metrics, the console), in display order.
METRICS: dict[str, tuple[str, ...]] = {
    REGRESSION: ("accuracy", "mae", "rmse"),
    BINARY: ("accuracy", "auc", "log_loss", "precision", "recall", "brier"),
}

# What the A/B verdict and the retraining gate compare, and what model drift is measured on.
# Binary: ROC AUC — threshold-free, so a candidate is not judged on where the threshold sits,
# and unlike accuracy it is not flattered by class imbalance (log loss is reported beside it).
PRIMARY: dict[str, str] = {REGRESSION: "accuracy", BINARY: "auc"}

# Metrics where lower is better (a drop in the others is a degradation).
LOWER_IS_BETTER = frozenset({"mae", "rmse", "log_loss", "brier"})

# XGBoost objective families. Regression objectives output a value to compare with the label;
# binary ones must say a probability of class 1 (binary:logistic; logitraw and hinge do not).
_REGRESSION_PREFIXES = ("reg:", "count:")
_BINARY_PREFIXES = ("binary:",)


def objective_task(objective: str) -> str:
    """The task an XGBoost objective serves, or ValueError saying why it cannot be served."""
    if objective.startswith(_REGRESSION_PREFIXES):
        return REGRESSION
    if objective == "binary:logistic":
        return BINARY
    if objective.startswith(_BINARY_PREFIXES):
        raise ValueError(
            f"objective {objective} does not output a probability of class 1: log loss, Brier "
            "score and the decision threshold need binary:logistic"
        )
    if objective.startswith("multi:"):
        raise ValueError(
            f"objective {objective} is a multi-class model: beast-mode serves regression and "
            "binary lines only (one score per prediction)"
        )
    raise ValueError(
        f"objective {objective} is neither regression (reg:*) nor binary (binary:*): "
        "beast-mode serves those two tasks only"
    )


def objective_refusal(objective: str | None, task: str) -> str | None:
    """Why a model with `objective` cannot serve a line of `task` (None: it can, or the
    objective is unknown — a model file that does not say is judged by its predictions)."""
    if objective is None:
        return None
    try:
        served = objective_task(objective)
    except ValueError as exc:
        return str(exc)
    if served != task:
        return (
            f"objective {objective} is a {served} model, but the line's task is {task} "
            "([lines.NAME] task in config.toml)"
        )
    return None


def binary_label(value: object) -> int:
    """A binary label as 0 or 1: 0/1 (numbers or text), false/true; ValueError otherwise."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "false", "true"):
        return int(value.strip().lower() in ("1", "true"))
    raise ValueError(f"a binary label is 0 or 1 (or false/true), got {value!r}")
