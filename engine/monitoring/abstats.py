"""Always-valid A/B statistics from sufficient statistics: a verdict needs rollups, not a scan.

The console redraws a test's verdict every two seconds and an operator promotes the moment it
says "candidate wins": the test is peeked at continuously. A fixed-horizon test read that way
declares a winner between two equal models far more often than its α (tests/test_abstats_sim.py
measures it). So every verdict here is always valid: its error rate holds however often, and
whenever, it is read.

The method is the mixture sequential probability ratio test (mSPRT) with a normal mixture
(Johari, Koomen, Pekelis & Walsh 2017, "Peeking at A/B tests"; the normal-mixture confidence
sequence of Howard, Ramdas, McAuliffe & Sekhon 2021), in its asymptotic form (Waudby-Smith et
al. 2023): the difference θ̂ (candidate − control) of the line's primary metric is treated as
normal with the variance V its arms estimate now. With a N(0, τ²) mixture over the true
difference θ, the likelihood ratio against θ = 0 is

    Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²)))

Λ is a nonnegative martingale under θ = 0, so by Ville's inequality P(ever Λ ≥ 1/α) ≤ α: the
always-valid p-value is p = min(1, 1/Λ), and rejecting whenever p < α, at any look, keeps the
error at α. Inverting the test gives the confidence sequence — an interval that covers θ at
every look at once with probability 1 − α:

    θ̂ ± sqrt( V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V)) )

τ² is chosen for the planned maximum sample ([monitoring] ab_max_samples labelled predictions
in the smaller arm), as Johari et al. do: the interval is narrowest there when τ² = x · V_max,
where V_max is the variance the difference will have at that sample (V scaled by n / n_max)
and x solves x = 2 log(1/α) + log(1 + x) (x = 8.2 at α = 0.05). At that sample the interval is
θ̂ ± sqrt((1 + x) · V_max) = ±3.0 standard errors, against 1.96 for a fixed-horizon test read once:
the price of reading it at will. Past the plan τ² stays what it was (a fixed mixture is what
makes Λ a martingale), so the boundary widens slowly in standard errors instead of staying at 3.

What V is, per test:
- regression, accuracy (a proportion, the primary metric): p(1 − p)/n per arm, summed;
- regression, MAE (a guard: a candidate whose MAE is surely worse never wins): Welch's
  s²/n per arm, summed;
- binary, ROC AUC: Hanley & McNeil's (1982) standard errors from each arm's AUC and class
  counts, squared and summed;
- paired (a shadow, or a replay, scores both models on the same requests): the variance of
  the per-request loss differences over n.

The verdict: "candidate wins" when the interval lies above 0 and the estimate reaches the
configured least improvement ([retrain] min_accuracy_improvement); "control wins" when it
lies below 0; "no difference" when it lies inside ±margin ([monitoring] ab_margin, the
non-inferiority margin, in the primary metric's points); otherwise "not enough data" — as it
is below `min_samples` labelled predictions per arm. Only the primary metric declares: two
tests that could each declare would spend α twice.

Sample-ratio mismatch (`srm_p`): the sequential Dirichlet–multinomial test of Lindon & Malek
(2020), which GrowthBook uses: its p is always valid too, so checking the split at every
evaluation never cries wolf more often than its threshold.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from engine.core.config import Config

CANDIDATE_WINS = "candidate wins"
CONTROL_WINS = "control wins"
NO_DIFFERENCE = "no difference"
NOT_ENOUGH = "not enough data"
OUTCOMES = (CANDIDATE_WINS, CONTROL_WINS, NO_DIFFERENCE, NOT_ENOUGH)

MIN_CLASS = 10  # labels of each class per arm: below it Hanley–McNeil's SE is not trusted
# A variance of exactly 0 (every label right in both arms) would divide by zero: floored.
_TINY = 1e-12


@dataclass(frozen=True)
class Arm:
    """What one arm of a regression test has seen: labelled predictions and their errors."""

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


@dataclass(frozen=True)
class Paired:
    """Per-request differences (candidate − control) of one loss over the same requests:
    their count, sum and sum of squares."""

    n: int
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def var_of_mean(self) -> float:
        """The variance of the mean difference (sample variance over n)."""
        if self.n < 2:
            return math.nan
        mean = self.mean
        return max(0.0, (self.squares - self.n * mean * mean) / (self.n - 1)) / self.n


@dataclass(frozen=True)
class Rules:
    """How a test is decided ([monitoring] ab_*, [retrain] min_accuracy_improvement)."""

    min_samples: int = 100  # labelled predictions per arm before any verdict
    min_improvement: float = 0.01  # primary metric points a winner must gain
    margin: float = 0.02  # non-inferiority margin, primary metric points
    max_samples: int = 2_000  # planned labelled predictions in the smaller arm (τ²)
    alpha: float = 0.05

    @staticmethod
    def of(config: Config) -> Rules:
        """The rules a workspace's config.toml sets."""
        m = config.monitoring
        return Rules(
            m.ab_min_samples,
            config.retrain.min_accuracy_improvement,
            m.ab_margin,
            m.ab_max_samples,
            m.ab_alpha,
        )


@dataclass(frozen=True)
class Sequence:
    """One always-valid comparison: the estimate, its confidence sequence, its p."""

    diff: float  # candidate − control
    lo: float
    hi: float
    p: float  # always-valid p-value, min(1, 1/Λ)

    @staticmethod
    def none() -> Sequence:
        return Sequence(math.nan, math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Verdict:
    """A test's verdict and what decided it. `diff`, `lo`, `hi`, `p` are the primary
    metric's (higher is better for accuracy and AUC); `mae_*` a regression line's guard."""

    outcome: str  # one of OUTCOMES
    metric: str  # the line's primary metric: "accuracy" | "auc"
    diff: float
    lo: float
    hi: float
    p: float
    margin: float
    n_control: int
    n_candidate: int
    reason: str
    paired: bool = False
    mae_diff: float = math.nan
    mae_lo: float = math.nan
    mae_hi: float = math.nan

    @property
    def non_inferior(self) -> bool:
        """The candidate is surely no worse than the margin: the gate a rollout step needs."""
        return not math.isnan(self.lo) and self.lo > -self.margin


# Every sequence needs it, for one α or two: its 50 logs were most of a verdict's cost.
@functools.cache
def mixture_x(alpha: float) -> float:
    """x solving x = 2 log(1/α) + log(1 + x): τ² = x · V_max makes the confidence sequence
    narrowest at the planned maximum sample (this module's docstring)."""
    x = 2 * math.log(1 / alpha)
    for _ in range(50):  # a contraction: converges to 1e-12 in a dozen steps
        x = 2 * math.log(1 / alpha) + math.log1p(x)
    return x


def sequence(diff: float, var: float, *, alpha: float, n: int, n_max: int) -> Sequence:
    """The always-valid p and confidence sequence of an estimate `diff` with variance `var`,
    seen over `n` labelled predictions (the smaller arm's) of a planned `n_max`."""
    if math.isnan(diff) or math.isnan(var) or n <= 0:
        return Sequence.none()
    v = max(var, _TINY)
    # τ² stays the plan's past n_max too: the mixture must be one fixed distribution for Λ to
    # be a martingale. Re-planning at n (τ² ∝ 1/n) makes the boundary a constant 3 standard
    # errors, which a long A/A test crosses more often than α (5.7% by 200 × n_max).
    v_max = v * n / max(n_max, 1)
    tau2 = mixture_x(alpha) * v_max
    log_lambda = 0.5 * math.log(v / (v + tau2)) + diff * diff * tau2 / (2 * v * (v + tau2))
    p = 1.0 if log_lambda <= 0 else math.exp(-log_lambda)
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return Sequence(diff, diff - half, diff + half, p)


def _decide(primary: Sequence, rules: Rules, *, mae_worse: bool = False) -> tuple[str, str]:
    """The outcome and its reason from the primary metric's sequence (the module docstring)."""
    found = f"{primary.diff:+.3f} [{primary.lo:+.3f}, {primary.hi:+.3f}] (p={primary.p:.3g})"
    better, margin = rules.min_improvement, rules.margin
    if primary.lo > 0 and primary.diff >= better and not mae_worse:
        return CANDIDATE_WINS, f"{found} above 0, ≥ +{better:g}"
    if primary.hi < 0:
        return CONTROL_WINS, f"candidate worse: {found} below 0"
    if -margin < primary.lo and primary.hi < margin:
        return NO_DIFFERENCE, f"{found} inside ±{margin:g}"
    if primary.lo > 0 and mae_worse:
        return NOT_ENOUGH, f"{found} but MAE surely worse"
    return NOT_ENOUGH, f"undecided: {found} at α={rules.alpha:g}"


def _sequence(diff: float, var: float, n: int, rules: Rules) -> Sequence:
    return sequence(diff, var, alpha=rules.alpha, n=n, n_max=rules.max_samples)


def _judged(
    primary: Sequence,
    rules: Rules,
    metric: str,
    n: tuple[int, int],
    *,
    mae: Sequence | None = None,
    paired: bool = False,
    label: str,
) -> Verdict:
    outcome, reason = _decide(primary, rules, mae_worse=mae is not None and mae.lo > 0)
    guard = mae or Sequence.none()
    return Verdict(
        outcome,
        metric,
        primary.diff,
        primary.lo,
        primary.hi,
        primary.p,
        rules.margin,
        n[0],
        n[1],
        f"{label}{reason}",
        paired=paired,
        mae_diff=guard.diff,
        mae_lo=guard.lo,
        mae_hi=guard.hi,
    )


def accuracy_sequence(control: Arm, candidate: Arm, rules: Rules) -> Sequence:
    """A regression test's primary sequence (accuracy, candidate − control), as `verdict`
    judges it; none below `min_samples` per arm (a test's interval over time is these)."""
    least = min(control.n, candidate.n)
    if least < rules.min_samples:
        return Sequence.none()
    pc, pt = control.accuracy, candidate.accuracy
    var = pt * (1 - pt) / candidate.n + pc * (1 - pc) / control.n
    return _sequence(pt - pc, var, least, rules)


def verdict(control: Arm, candidate: Arm, rules: Rules) -> Verdict:
    """A regression line's test on accuracy, MAE guarding (the module docstring)."""
    least = min(control.n, candidate.n)
    if least < rules.min_samples:
        return _short("accuracy", control.n, candidate.n, rules)
    primary = accuracy_sequence(control, candidate, rules)
    mae_var = candidate.err_var / candidate.n + control.err_var / control.n
    mae = _sequence(candidate.mae - control.mae, mae_var, least, rules)
    n = (control.n, candidate.n)
    return _judged(primary, rules, "accuracy", n, mae=mae, label="accuracy ")


def hanley_mcneil_se(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC from its value and class counts (Hanley & McNeil 1982)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(var, 0.0))


def _auc_short(control: AucArm, candidate: AucArm, rules: Rules) -> bool:
    few = min(control.n, candidate.n) < rules.min_samples or any(
        min(arm.positives, arm.negatives) < MIN_CLASS for arm in (control, candidate)
    )
    return few or control.auc is None or candidate.auc is None


def auc_sequence(control: AucArm, candidate: AucArm, rules: Rules) -> Sequence:
    """A binary test's primary sequence (ROC AUC, candidate − control), as `auc_verdict`
    judges it; none below `min_samples` per arm or `MIN_CLASS` labels of each class."""
    if _auc_short(control, candidate, rules):
        return Sequence.none()
    assert control.auc is not None and candidate.auc is not None
    var = (
        hanley_mcneil_se(candidate.auc, candidate.positives, candidate.negatives) ** 2
        + hanley_mcneil_se(control.auc, control.positives, control.negatives) ** 2
    )
    least = min(control.n, candidate.n)
    return _sequence(candidate.auc - control.auc, var, least, rules)


def auc_verdict(control: AucArm, candidate: AucArm, rules: Rules) -> Verdict:
    """A binary line's test on ROC AUC (the module docstring)."""
    if _auc_short(control, candidate, rules):
        classes = "; ".join(
            f"{name} {arm.positives} of class 1"
            for name, arm in (("control", control), ("candidate", candidate))
        )
        found = _short("auc", control.n, candidate.n, rules)
        why = f"{found.reason}, {MIN_CLASS} of each class ({classes})"
        return dataclasses.replace(found, reason=why)
    primary = auc_sequence(control, candidate, rules)
    return _judged(primary, rules, "auc", (control.n, candidate.n), label="AUC ")


def paired_verdict(
    gain: Paired, rules: Rules, *, metric: str, mae_loss: Paired | None = None
) -> Verdict:
    """The test on per-request differences over the same requests (a shadow, a replay).

    `gain`: candidate − control per request of the primary metric's per-request value (for
    accuracy, 1 when the prediction is within tolerance, else 0), so higher is better as for
    the two-arm verdicts; `mae_loss`: of absolute error (higher is worse), the guard."""
    if gain.n < rules.min_samples:
        return _short(metric, gain.n, gain.n, rules, paired=True)
    primary = _sequence(gain.mean, gain.var_of_mean, gain.n, rules)
    mae = None
    if mae_loss is not None and mae_loss.n >= 2:
        mae = _sequence(mae_loss.mean, mae_loss.var_of_mean, mae_loss.n, rules)
    label = f"{metric} paired over {gain.n:,} requests: "
    return _judged(primary, rules, metric, (gain.n, gain.n), mae=mae, paired=True, label=label)


def paired_from(diff: float, var: float, n: int, rules: Rules, *, metric: str) -> Verdict:
    """The paired verdict from a difference over `n` shared requests and its variance (a
    binary line's AUC difference with DeLong's variance, engine.monitoring.paired)."""
    if n < rules.min_samples:
        return _short(metric, n, n, rules, paired=True)
    label = f"{metric} paired over {n:,} requests: "
    primary = _sequence(diff, var, n, rules)
    return _judged(primary, rules, metric, (n, n), paired=True, label=label)


def short_of_classes(found: Verdict, positives: int, negatives: int) -> Verdict:
    """`found` ("not enough data") saying it waits for labels of each class."""
    why = f"need {MIN_CLASS} labels of each class ({positives} of class 1, {negatives} of class 0)"
    return dataclasses.replace(found, reason=why)


def _short(
    metric: str, n_control: int, n_candidate: int, rules: Rules, *, paired: bool = False
) -> Verdict:
    nan = math.nan
    counted = f"{n_control} paired" if paired else f"control {n_control}, candidate {n_candidate}"
    return Verdict(
        NOT_ENOUGH,
        metric,
        nan,
        nan,
        nan,
        nan,
        rules.margin,
        n_control,
        n_candidate,
        f"need {rules.min_samples} labelled predictions per arm ({counted})",
        paired=paired,
    )


# Sample-ratio mismatch: the prior's concentration around the configured split. Lindon &
# Malek's test is valid for any; 100 pseudo-observations makes a mismatch of a few percent
# of the traffic visible within a few thousand predictions without reacting to the first few.
SRM_CONCENTRATION = 100.0


def srm_p(n_control: int, n_candidate: int, candidate_share: float) -> float:
    """The always-valid p-value that the realized split (predictions per arm) comes from the
    configured one (`candidate_share`, 0–1): the sequential Dirichlet–multinomial test
    (Lindon & Malek 2020). Its Bayes factor against the configured split is

        BF = [B(a_c + n_c, a_t + n_t) / B(a_c, a_t)] / (p_c^n_c · p_t^n_t),  a_i = k · p_i

    and p = min(1, 1/BF): below `[monitoring] srm_p` (0.001) the split is broken."""
    if not 0 < candidate_share < 1 or n_control < 0 or n_candidate < 0:
        raise ValueError(f"a split needs a share in (0, 1) and counts ≥ 0, got {candidate_share}")
    pt, pc = candidate_share, 1 - candidate_share
    at, ac = SRM_CONCENTRATION * pt, SRM_CONCENTRATION * pc
    log_bf = (
        _log_beta(ac + n_control, at + n_candidate)
        - _log_beta(ac, at)
        - n_control * math.log(pc)
        - n_candidate * math.log(pt)
    )
    return 1.0 if log_bf <= 0 else math.exp(-log_bf)


# The latency gate's mixture over the candidate's true exceedance rate q ≥ the allowed one:
# Beta(1, 20) (mean 5%), truncated. A uniform mixture (Beta(1, 1)) spreads its mass over rates
# no candidate has, and lost the gate its power: 20 of 1,000 requests over the limit (2%) gave
# p = 1 with it, p = 0.11 with this one; 8 of 200 (4%) p = 0.16 against 0.015.
EXCEEDANCE_B = 20


def exceedance_p(above: int, n: int, rate: float) -> float:
    """The always-valid p-value that at most `rate` of the requests exceed a limit, after
    `above` of `n` did: the Bayes factor of a Beta(1, b) mixture over rates q ≥ `rate`
    (truncated there) against q = `rate`,

        BF = ∫_r^1 (q/r)^k ((1−q)/(1−r))^(n−k) q'(q) dq,  prior Beta(1, b) on [r, 1],

    in closed form through ∫_r^1 q^k (1−q)^(n−k+b−1) dq = B(k+1, n−k+b) · P(Bin(n+b, r) ≤ k).
    Each factor (q/r)^X ((1−q)/(1−r))^(1−X) has expectation ≤ 1 under any rate ≤ r when
    q ≥ r, so BF is a supermartingale under the null and p = min(1, 1/BF) may be read at
    every evaluation (Ville). What the rollout's latency gate asks of a p99: "at most 1% of the
    candidate's requests slower than the limit" (engine.deploy.rollout_gates)."""
    if not 0 < rate < 1 or not 0 <= above <= n:
        raise ValueError(f"need 0 < rate < 1 and 0 ≤ above ≤ n, got {rate}, {above}, {n}")
    b = EXCEEDANCE_B
    log_mass = _log_beta(above + 1, n - above + b) + _log_binomial_cdf(above, n + b, rate)
    log_prior = b * math.log1p(-rate) - math.log(b)  # the truncated prior's normalizer
    log_bf = log_mass - log_prior - above * math.log(rate) - (n - above) * math.log1p(-rate)
    return 1.0 if log_bf <= 0 else math.exp(-log_bf)


def _log_binomial_cdf(k: int, m: int, x: float) -> float:
    """log P(Bin(m, x) ≤ k), summed in logs (k is a count of slow requests: small)."""
    terms = [
        math.lgamma(m + 1)
        - math.lgamma(j + 1)
        - math.lgamma(m - j + 1)
        + j * math.log(x)
        + (m - j) * math.log1p(-x)
        for j in range(k + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
