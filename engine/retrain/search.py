"""Retraining, the pure parts: time-ordered splits, the bounded search, the gate, naming.

Data (DESIGN.md §6, engine.retrain.data) = the workspace's `data/` files plus the line's
labelled production predictions, by the line's declared columns.

Rows are ordered by time; the newest `HOLDOUT_FRACTION` is the holdout that judges the new
model against production, the newest `VALID_FRACTION` of the rest stops boosting early, and
the oldest part trains. A regression line trains `reg:squarederror` (chosen on validation
MAE), a binary line `binary:logistic` (chosen on validation log loss). At most `len(SEARCH)`
configurations are tried. The gate compares the line's primary metric
(engine.core.tasks.PRIMARY), computed by engine.monitoring.scoring like every other figure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.core import tasks
from engine.monitoring import scoring
from engine.retrain.data import Dataset

HOLDOUT_FRACTION = 0.2
VALID_FRACTION = 0.2
MIN_ROWS = 50
MAX_ROUNDS = 400
SEARCH_ROWS = 16_000
EARLY_STOPPING_ROUNDS = 20
THREADS = 2

BASE_PARAMS: dict[str, Any] = {
    "tree_method": "hist",
    "max_bin": 128,  # half the default bins: faster histograms, no loss on scores 0–100
    "nthread": THREADS,
    "seed": 0,
}
# What each task trains, and the validation metric that stops boosting and picks the winner
# (lower is better for both).
TASK_PARAMS: dict[str, dict[str, Any]] = {
    tasks.REGRESSION: {"objective": "reg:squarederror", "eval_metric": "mae"},
    tasks.BINARY: {"objective": "binary:logistic", "eval_metric": "logloss"},
}
# A small, bounded grid: shallow and deeper trees, fast and slow learning, one with row and
# column sampling. (Depth 8 was dropped: on 100k rows it cost a fifth of the job's time and
# never won on the sample data.)
SEARCH: tuple[dict[str, Any], ...] = (
    {"max_depth": 4, "eta": 0.3},
    {"max_depth": 6, "eta": 0.3},
    {"max_depth": 4, "eta": 0.1},
    {"max_depth": 6, "eta": 0.1},
    {"max_depth": 6, "eta": 0.1, "subsample": 0.8, "colsample_bytree": 0.8},
)


@dataclass(frozen=True)
class Split:
    """Index ranges into a time-ordered dataset: oldest trains, newest judges."""

    train: slice
    valid: slice
    holdout: slice


def time_split(rows: int) -> Split:
    if rows < MIN_ROWS:
        raise ValueError(f"not enough training data: {rows} rows (needs at least {MIN_ROWS})")
    holdout_start = rows - max(1, int(rows * HOLDOUT_FRACTION))
    valid_start = holdout_start - max(1, int(holdout_start * VALID_FRACTION))
    return Split(
        slice(0, valid_start), slice(valid_start, holdout_start), slice(holdout_start, rows)
    )


@dataclass(frozen=True)
class Trial:
    params: dict[str, Any]
    rounds: int
    valid_score: float  # the task's validation metric (TASK_PARAMS eval_metric): lower wins


@dataclass(frozen=True)
class Trained:
    booster: Any
    params: dict[str, Any]
    rounds: int
    valid_score: float
    trials: tuple[Trial, ...] = field(default=())

    @property
    def valid_metric(self) -> str:
        return str(self.params["eval_metric"])


def params_for(task: str) -> dict[str, Any]:
    """The fixed training parameters of a line of `task`."""
    return {**BASE_PARAMS, **TASK_PARAMS[task]}


def settings(task: str) -> dict[str, Any]:
    """Everything besides the rows that decides what a job trains (a job's input hash)."""
    return {
        "params": params_for(task),
        "search": SEARCH,
        "max_rounds": MAX_ROUNDS,
        "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
        "search_rows": SEARCH_ROWS,
        "holdout_fraction": HOLDOUT_FRACTION,
        "valid_fraction": VALID_FRACTION,
    }


def search(
    data: Dataset,
    split: Split,
    names: tuple[str, ...],
    on_trial: Callable[[int, Trial], None] | None = None,
    grid: Iterable[dict[str, Any]] = SEARCH,
    *,
    task: str = tasks.REGRESSION,
) -> Trained:
    """Try each configuration with early stopping on the validation rows; keep the best.

    On large data the configurations are compared on the newest `SEARCH_ROWS` training rows
    and half as many validation rows (the ranking of a handful of configurations settles long
    before 100k rows), and the winner alone is then trained on all of them, stopped early on
    the whole validation part: that keeps 100k rows within seconds.
    """
    x, y = data.x[split.train], data.y[split.train]
    vx, vy = data.x[split.valid], data.y[split.valid]
    matrix = _matrices(names)
    full = sample = matrix(x, y, None)
    valid = judge = matrix(vx, vy, full)
    if y.shape[0] > SEARCH_ROWS:
        sample = matrix(x[-SEARCH_ROWS:], y[-SEARCH_ROWS:], None)
        judge = matrix(vx[-SEARCH_ROWS // 2 :], vy[-SEARCH_ROWS // 2 :], sample)
    return best_of(_fit, params_for(task), grid, (sample, judge), (full, valid), on_trial=on_trial)


Fit = Callable[
    [dict[str, Any], Any, Any], Any
]  # (params, train, valid) -> an early-stopped booster


def best_of(
    fit: Fit,
    base: dict[str, Any],
    grid: Iterable[dict[str, Any]],
    compared: tuple[Any, Any],
    whole: tuple[Any, Any],
    *,
    on_trial: Callable[[int, Trial], None] | None = None,
) -> Trained:
    """The search itself, wherever `fit` trains (in this process, or on a Dask cluster):
    each configuration fitted on `compared` (train, valid), the best kept, and retrained on
    `whole` when the comparison was on a sample of it (`compared is not whole`)."""
    trials: list[Trial] = []
    best: tuple[Trial, Any] | None = None
    for i, extra in enumerate(grid):
        booster = fit({**base, **extra}, *compared)
        trial = Trial(extra, int(booster.best_iteration) + 1, float(booster.best_score))
        trials.append(trial)
        if on_trial is not None:
            on_trial(i, trial)
        if best is None or trial.valid_score < best[0].valid_score:
            best = (trial, booster)
    assert best is not None, "the search grid is empty"
    winner, booster = best
    params = {**base, **winner.params}
    if compared[0] is not whole[0]:
        booster = fit(params, *whole)
    rounds = int(booster.best_iteration) + 1
    return Trained(booster[:rounds], params, rounds, float(booster.best_score), tuple(trials))


def _matrices(names: tuple[str, ...]) -> Callable[[np.ndarray, np.ndarray, Any], Any]:
    """QuantileDMatrix builder: `hist` bins once at construction, sharing its reference's cuts
    (cheaper than DMatrix, which is sketched again by every training run)."""
    import xgboost as xgb  # ~2 s to import: the trigger checks load this module without training

    def build(x: np.ndarray, y: np.ndarray, ref: Any) -> Any:
        return xgb.QuantileDMatrix(
            x,
            label=y,
            feature_names=list(names),
            max_bin=BASE_PARAMS["max_bin"],
            ref=ref,
            nthread=THREADS,
        )

    return build


def _fit(params: dict[str, Any], train: Any, valid: Any) -> Any:
    import xgboost as xgb  # as in _matrices

    return xgb.train(
        params,
        train,
        num_boost_round=MAX_ROUNDS,
        evals=[(valid, "valid")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
    )


@dataclass(frozen=True)
class Scores:
    """A model's figures on the holdout: the task's metrics (engine.monitoring.scoring) by
    key, and the rows they cover; no metrics when a prediction was not finite."""

    task: str
    metrics: Mapping[str, float]
    rows: int

    @property
    def finite(self) -> bool:
        return bool(self.metrics)

    @property
    def primary(self) -> float | None:
        """The line's primary metric (None: undefined here, e.g. AUC with one class)."""
        return self.metrics.get(tasks.PRIMARY[self.task])

    def to_json(self) -> dict[str, float | int | None]:
        return {**{k: self.metrics.get(k) for k in tasks.METRICS[self.task]}, "rows": self.rows}


def score(
    task: str,
    predicted: np.ndarray,
    actual: np.ndarray,
    *,
    tolerance: float = 5.0,
    threshold: float = 0.5,
) -> Scores:
    """No metrics when any prediction is not finite: such a model is never deployed."""
    predicted = np.asarray(predicted, dtype=np.float64)
    rows = int(actual.shape[0])
    if not np.isfinite(predicted).all():
        return Scores(task, {}, rows)
    found = scoring.metrics(task, predicted, actual, tolerance=tolerance, threshold=threshold)
    return Scores(task, found, rows)


@dataclass(frozen=True)
class Decision:
    deploy: bool
    reason: str


# Shown beside the primary metric in the gate's reason (key, label).
_BESIDE = {tasks.REGRESSION: ("mae", "MAE"), tasks.BINARY: ("log_loss", "log loss")}


def _figures(new: Scores, production: Scores, gain: float, needs: float) -> str:
    primary, (beside, label) = tasks.PRIMARY[new.task], _BESIDE[new.task]
    shown = f"holdout {primary} {new.primary:.3f} vs production {production.primary:.3f} "
    shown += f"(gain {gain:+.3f}, needs {needs:g})"
    if beside in new.metrics and beside in production.metrics:
        shown += f", {label} {new.metrics[beside]:.2f} vs {production.metrics[beside]:.2f}"
    return shown


def decide(
    new: Scores, production: Scores | None, *, min_improvement: float, wanted: bool
) -> Decision:
    """Deploy only if wanted, finite, and at least `min_improvement` better on the line's
    primary metric (accuracy for regression, AUC for binary: higher is better for both)."""
    if not new.finite:
        return Decision(False, "not deployed: the new model's holdout metrics are NaN")
    if production is None:
        return Decision(False, "not deployed: nothing in production to compare with")
    if not production.finite:
        return Decision(False, "not deployed: production's holdout metrics are NaN")
    primary = tasks.PRIMARY[new.task]
    if new.primary is None or production.primary is None:
        return Decision(False, f"not deployed: the holdout gives no {primary} (one class only)")
    gain = new.primary - production.primary
    figures = _figures(new, production, gain, min_improvement)
    if gain < min_improvement - 1e-12:  # float noise must not decide a boundary
        return Decision(False, f"not deployed: not better than production: {figures}")
    if not wanted:
        return Decision(
            False, f"not deployed: no --deploy and auto_deploy = false (it qualifies: {figures})"
        )
    return Decision(True, f"deployed: beats production: {figures}")


_MAJOR = re.compile(r"^v(\d+)")


def next_version(names: Iterable[str], taken: Callable[[str], bool]) -> str:
    """The next free `vN.0` after the highest major version of the line (the seed's
    convention: v1.0, v1-enhanced, v3-advanced → v4.0); skips names whose file exists."""
    majors = [int(m.group(1)) for n in names if (m := _MAJOR.match(n))]
    major = max(majors, default=0) + 1
    existing = set(names)
    while f"v{major}.0" in existing or taken(f"v{major}.0"):
        major += 1
    return f"v{major}.0"
