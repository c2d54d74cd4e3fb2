"""Two models scored on the same labelled requests, compared request by request.

A shadow (`beast deploy --shadow`) and a replay (`beast replay`) both end here, so the live
paired verdict and a replay over the same rows are the same numbers. Pairing removes the
requests' own variation from the comparison: two models that agree on most requests differ
by far less than two arms that saw different requests, so a paired test decides on a fraction
of the labels (valid when the served prediction does not change the outcome it is labelled
with: `[lines.NAME] prediction_changes_outcome`).

- regression: the per-request gain in the primary metric (1 when the candidate is within
  tolerance and production is not, −1 the other way, else 0) and the per-request difference
  of absolute errors (MAE's guard), each into `abstats.paired_verdict`;
- binary: ROC AUC is not a per-request sum, so the difference of the two AUCs over the same
  requests gets DeLong's (1988) variance for correlated AUCs, from each model's structural
  components, into the same always-valid sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core import tasks
from engine.monitoring import abstats, scoring


@dataclass(frozen=True)
class Comparison:
    """A paired comparison: the verdict and each model's metrics over the same rows."""

    verdict: abstats.Verdict
    n: int
    control: dict[str, float]
    candidate: dict[str, float]


def compare(
    task: str,
    candidate: np.ndarray,
    control: np.ndarray,
    actual: np.ndarray,
    rules: abstats.Rules,
    *,
    tolerance: float = 5.0,
    threshold: float = 0.5,
) -> Comparison:
    """Compare `candidate`'s scores with `control`'s on the requests labelled `actual`."""
    c = np.asarray(candidate, dtype=np.float64)
    p = np.asarray(control, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64)
    if not c.shape == p.shape == y.shape:
        raise ValueError(f"{c.size} candidate scores, {p.size} control scores, {y.size} labels")
    figures = {"tolerance": tolerance, "threshold": threshold}
    ours = scoring.metrics(task, c, y, **figures)
    theirs = scoring.metrics(task, p, y, **figures)
    if task == tasks.BINARY:
        found = _auc_verdict(c, p, y == 1, rules)
    else:
        gain = _sums((np.abs(c - y) <= tolerance).astype(np.float64) - (np.abs(p - y) <= tolerance))
        mae = _sums(np.abs(c - y) - np.abs(p - y))
        found = abstats.paired_verdict(gain, rules, metric="accuracy", mae_loss=mae)
    return Comparison(found, int(y.size), theirs, ours)


def _sums(d: np.ndarray) -> abstats.Paired:
    return abstats.Paired(int(d.size), float(d.sum()), float(np.dot(d, d)))


def _auc_verdict(
    candidate: np.ndarray, control: np.ndarray, positive: np.ndarray, rules: abstats.Rules
) -> abstats.Verdict:
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    n = positive.size
    if n < rules.min_samples or min(n_pos, n_neg) < abstats.MIN_CLASS:
        short = abstats.paired_verdict(abstats.Paired(n, 0.0, 0.0), rules, metric="auc")
        if n >= rules.min_samples:  # enough requests, too few of one class
            return abstats.short_of_classes(short, n_pos, n_neg)
        return short
    diff, var = delong_difference(candidate, control, positive)
    return abstats.paired_from(diff, var, n, rules, metric="auc")


def delong_difference(a: np.ndarray, b: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """AUC(a) − AUC(b) over the same requests and its variance (DeLong, DeLong &
    Clarke-Pearson 1988): each model's structural components — per positive, the share of
    negatives it outranks (ties half); per negative, the share of positives that outrank it —
    and their covariances across the two models."""
    pos, neg = positive, ~positive
    comps = [_components(s[pos], s[neg]) for s in (a, b)]
    v10 = np.vstack([c[0] for c in comps])  # (2, positives)
    v01 = np.vstack([c[1] for c in comps])  # (2, negatives)
    aucs = v10.mean(axis=1)
    s10 = np.cov(v10)
    s01 = np.cov(v01)
    contrast = np.array([1.0, -1.0])
    var = float(contrast @ s10 @ contrast / v10.shape[1] + contrast @ s01 @ contrast / v01.shape[1])
    return float(aucs[0] - aucs[1]), max(var, 0.0)


def _components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    neg_sorted = np.sort(neg)
    pos_sorted = np.sort(pos)
    below = np.searchsorted(neg_sorted, pos, side="left")
    ties = np.searchsorted(neg_sorted, pos, side="right") - below
    v10 = (below + 0.5 * ties) / neg.size
    above = pos.size - np.searchsorted(pos_sorted, neg, side="right")
    ties_n = np.searchsorted(pos_sorted, neg, side="right") - np.searchsorted(
        pos_sorted, neg, side="left"
    )
    v01 = (above + 0.5 * ties_n) / pos.size
    return v10, v01
