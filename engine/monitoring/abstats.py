"""A/B statistics from sufficient statistics, so a verdict needs rollups, not a scan.

The verdict compares the line's primary metric (engine.core.tasks.PRIMARY).
Regression — accuracy (within ±tolerance) is a proportion: a two-proportion z-test. Absolute
error is a mean: Welch's t-test from each arm's n, mean and variance.
Binary — ROC AUC (read from each arm's class histograms): the z-test of two independent AUCs
with Hanley & McNeil's (1982) standard errors, which need only each arm's AUC and its count of
each class. An arm needs `min_samples` labelled predictions and `MIN_CLASS` of each class.
The verdict also needs the configured minimum improvement ([retrain]
min_accuracy_improvement: accuracy points, or AUC points on a binary line); otherwise it is
"not enough data" or "inconclusive" — never a promotion on noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    """What one arm of a test has seen: labelled predictions and their errors."""

    n: int  # labelled predictions
    within: int  # of those, |prediction − actual| ≤ tolerance
    abs_err_sum: float
    abs_err_sq_sum: float

    @property
    def accuracy(self) -> float:
        return self.within / self.n if self.n else math.nan

    @property
    def mae(self) -> float:
        return self.abs_err_sum / self.n if self.n else math.nan

    @property
    def err_var(self) -> float:
        if self.n < 2:
            return math.nan
        mean = self.mae
        return max(0.0, (self.abs_err_sq_sum - self.n * mean * mean) / (self.n - 1))


@dataclass(frozen=True)
class AucArm:
    """What one arm of a binary line's test has seen: its AUC and its labels of each class."""

    auc: float | None
    positives: int
    negatives: int

    @property
    def n(self) -> int:
        return self.positives + self.negatives


MIN_CLASS = 10  # labels of each class per arm: below it Hanley–McNeil's SE is not trusted


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "candidate wins" | "control wins" | "inconclusive" | "not enough data"
    accuracy_diff: float  # candidate − control
    accuracy_p: float
    mae_diff: float  # candidate − control (negative is better)
    mae_p: float
    reason: str
    metric: str = "accuracy"  # what decided: the line's primary metric
    auc_diff: float = math.nan  # binary: candidate − control
    auc_p: float = math.nan


def hanley_mcneil_se(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC from its value and class counts (Hanley & McNeil 1982)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(var, 0.0))


def auc_p(a: AucArm, b: AucArm) -> float:
    """Two-sided p-value of the z-test of two independent AUCs."""
    if a.auc is None or b.auc is None:
        return math.nan
    se = math.hypot(
        hanley_mcneil_se(a.auc, a.positives, a.negatives),
        hanley_mcneil_se(b.auc, b.positives, b.negatives),
    )
    if se == 0:
        return 1.0 if a.auc == b.auc else 0.0
    return math.erfc(abs(a.auc - b.auc) / se / math.sqrt(2))


def auc_verdict(
    control: AucArm,
    candidate: AucArm,
    *,
    min_samples: int,
    min_improvement: float,
    alpha: float = 0.05,
) -> Verdict:
    """Decide a binary line's test on AUC (this module's docstring)."""
    nan = math.nan
    short = [
        f"{name} {arm.n} ({arm.positives} of class 1)"
        for name, arm in (("control", control), ("candidate", candidate))
        if arm.n < min_samples or min(arm.positives, arm.negatives) < MIN_CLASS
    ]
    if short or control.auc is None or candidate.auc is None:
        return Verdict(
            "not enough data",
            nan,
            nan,
            nan,
            nan,
            f"need {min_samples} labelled predictions per arm, {MIN_CLASS} of each class "
            f"({'; '.join(short)})",
            "auc",
        )
    diff = candidate.auc - control.auc
    p = auc_p(candidate, control)
    found = f"AUC {diff:+.3f} (p={p:.3g})"
    if p < alpha and diff >= min_improvement:
        outcome, why = "candidate wins", f"{found} ≥ +{min_improvement:g}"
    elif p < alpha and diff < 0:
        outcome, why = "control wins", f"candidate worse: {found}"
    else:
        outcome = "inconclusive"
        why = f"no significant difference: {found}, needs ≥ +{min_improvement:g} at p<{alpha:g}"
    return Verdict(outcome, nan, nan, nan, nan, why, "auc", diff, p)


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    if n1 == 0 or n2 == 0:
        return math.nan
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if x1 / n1 == x2 / n2 else 0.0
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def welch_p(a: Arm, b: Arm) -> float:
    """Two-sided p-value of Welch's t-test on absolute error, from each arm's moments."""
    # scipy.special, not scipy.stats: the same Student t tail, without 1.5 s of import.
    from scipy.special import stdtr

    m1, v1, n1, m2, v2, n2 = a.mae, a.err_var, a.n, b.mae, b.err_var, b.n
    if n1 < 2 or n2 < 2:
        return math.nan
    se2 = v1 / n1 + v2 / n2
    if se2 == 0:
        return 1.0 if m1 == m2 else 0.0
    t = (m1 - m2) / math.sqrt(se2)
    df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    return float(2 * stdtr(df, -abs(t)))


def verdict(
    control: Arm, candidate: Arm, *, min_samples: int, min_improvement: float, alpha: float = 0.05
) -> Verdict:
    """Decide a test. Accuracy decides; MAE must not be significantly worse for a win."""
    acc_diff = candidate.accuracy - control.accuracy if control.n and candidate.n else math.nan
    mae_diff = candidate.mae - control.mae if control.n and candidate.n else math.nan
    if min(control.n, candidate.n) < min_samples:
        return Verdict(
            "not enough data",
            acc_diff,
            math.nan,
            mae_diff,
            math.nan,
            f"need {min_samples} labelled predictions per arm "
            f"(control {control.n}, candidate {candidate.n})",
        )
    acc_p = two_proportion_p(candidate.within, candidate.n, control.within, control.n)
    mae_p = welch_p(candidate, control)
    mae_worse = mae_diff > 0 and mae_p < alpha
    mae_better = mae_diff < 0 and mae_p < alpha
    if acc_p < alpha and acc_diff >= min_improvement and not mae_worse:
        return Verdict(
            "candidate wins",
            acc_diff,
            acc_p,
            mae_diff,
            mae_p,
            f"accuracy +{acc_diff:.3f} (p={acc_p:.3g}) ≥ +{min_improvement:g}",
        )
    if (acc_p < alpha and acc_diff < 0) or (mae_worse and not acc_diff > 0):
        return Verdict(
            "control wins",
            acc_diff,
            acc_p,
            mae_diff,
            mae_p,
            f"candidate worse: accuracy {acc_diff:+.3f} (p={acc_p:.3g}), "
            f"MAE {mae_diff:+.2f} (p={mae_p:.3g})",
        )
    detail = "MAE better" if mae_better else "no significant difference"
    return Verdict(
        "inconclusive",
        acc_diff,
        acc_p,
        mae_diff,
        mae_p,
        f"{detail}: accuracy {acc_diff:+.3f} (p={acc_p:.3g}), "
        f"needs ≥ +{min_improvement:g} at p<{alpha:g}",
    )
