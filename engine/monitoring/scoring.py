"""A task's metrics over scored, labelled rows held in memory: a reference file, a holdout.

The live figures come from rollups (engine.monitoring.rollups); these are their definitions
over whole arrays, so a baseline and a live window are the same numbers when their rows are:
- regression: `accuracy` (share within ±tolerance), `mae`, `rmse`;
- binary: `accuracy` (at the decision threshold: a score ≥ it predicts 1), `auc` (ROC, ties
  counting half), `log_loss` (scores clipped to [eps, 1 − eps], eps the float64 epsilon, as
  scikit-learn does), `precision`, `recall`, `brier`.
A ratio with nothing to divide (no predicted positives; one class only, for AUC) is absent.
"""

from __future__ import annotations

import numpy as np

from engine.core import tasks

EPS = float(np.finfo(np.float64).eps)


def metrics(
    task: str,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    tolerance: float = 5.0,
    threshold: float = 0.5,
) -> dict[str, float]:
    """The task's metrics (engine.core.tasks.METRICS keys) of `scores` against `labels`."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    if s.size == 0:
        return {}
    if task == tasks.BINARY:
        return _binary(s, y, threshold)
    errors = np.abs(s - y)
    return {
        "accuracy": float(np.mean(errors <= tolerance)),
        "mae": float(np.mean(errors)),
        "rmse": float(np.sqrt(np.mean(errors * errors))),
    }


def _binary(s: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    positive = y == 1
    predicted = s >= threshold
    true_pos = int(np.sum(predicted & positive))
    p = np.clip(s, EPS, 1 - EPS)
    out = {
        "accuracy": float(np.mean(predicted == positive)),
        "log_loss": float(-np.mean(np.where(positive, np.log(p), np.log1p(-p)))),
        "brier": float(np.mean((s - y) ** 2)),
    }
    if predicted.any():
        out["precision"] = true_pos / int(predicted.sum())
    if positive.any():
        out["recall"] = true_pos / int(positive.sum())
    found = auc(s, positive)
    if found is not None:
        out["auc"] = found
    return out


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC by the Mann–Whitney rank sum (tied scores share their mean rank); None with
    one class only."""
    n_pos = int(np.sum(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    ranks = np.empty(scores.size, np.float64)
    # Mean rank per run of equal scores: runs start where the sorted value changes.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], scores.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks are 1-based: (start+1 + end) / 2
    ranks[order] = np.repeat(mean_rank, ends - starts)
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
