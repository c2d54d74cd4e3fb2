"""Simulations of the always-valid verdicts (engine.monitoring.abstats), seeded and bounded.

A test is read after every batch of labels, as the console and the evaluator read it. On A/A
data (two equal models) the share of runs that EVER declare a winner ("candidate wins" or
"control wins") must stay at α within Monte-Carlo error; beside it, on the very same runs, the
fixed-horizon test the verdict used to be (two proportions at p < 0.05, read at every batch)
declares one several times as often: that is peeking. With a real effect the verdict decides
within the planned maximum sample (`Rules.max_samples`) with the power stated here. And the
sample-ratio check (`srm_p`) finds a skewed split and never cries wolf on fair ones, read after
every batch too. `pytest -s` prints the figures.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from engine.core import tasks
from engine.monitoring import abstats, paired, scoring
from engine.monitoring.abstats import Arm, AucArm, Rules

RULES = Rules()  # the defaults: min_samples 100, max_samples 2,000 per arm, α 0.05
ALPHA = RULES.alpha
BATCH = 50  # labels per arm between two looks
TOLERANCE = 5.0
# Absolute errors |N(0, σ)|: within ±5 for 70% of requests at σ 4.826, 76% at σ 4.255.
SIGMA_70 = 4.826
SIGMA_76 = 4.255
# The power stated for a 6-point accuracy gain (70% → 76%) within max_samples per arm: the
# interval is ±3.0 standard errors there (abstats' docstring), and 6 points are 4.2 of them.
POWER = 0.90
DECIDED = (abstats.CANDIDATE_WINS, abstats.CONTROL_WINS)


def _within_mc(rate: float, bound: float, runs: int) -> bool:
    """`rate` is at most `bound` within three Monte-Carlo standard errors."""
    return rate <= bound + 3 * math.sqrt(bound * (1 - bound) / runs)


@dataclass(frozen=True)
class Paths:
    """Cumulative sums of each arm of `runs` simulated tests at every look (runs, looks)."""

    n: np.ndarray  # labels per arm at each look
    within: tuple[np.ndarray, np.ndarray]  # control, candidate
    abs_sum: tuple[np.ndarray, np.ndarray]
    abs_sq: tuple[np.ndarray, np.ndarray]

    def arm(self, which: int, run: int, look: int) -> Arm:
        return Arm(
            int(self.n[look]),
            int(self.within[which][run, look]),
            float(self.abs_sum[which][run, look]),
            float(self.abs_sq[which][run, look]),
        )


def _regression_paths(seed: int, runs: int, sigmas: tuple[float, float], labels: int) -> Paths:
    rng = np.random.default_rng(seed)
    looks = np.arange(BATCH, labels + 1, BATCH)
    within, sums, squares = [], [], []
    for sigma in sigmas:
        err = np.abs(rng.normal(0.0, sigma, (runs, labels)))
        within.append(np.cumsum(err <= TOLERANCE, axis=1)[:, looks - 1])
        sums.append(np.cumsum(err, axis=1)[:, looks - 1])
        squares.append(np.cumsum(err * err, axis=1)[:, looks - 1])
    return Paths(looks, (within[0], within[1]), (sums[0], sums[1]), (squares[0], squares[1]))


def _first_decision(paths: Paths, run: int) -> tuple[str, int] | None:
    """The verdict's first decision in one run, read after every batch, and its sample."""
    for look in range(paths.n.size):
        found = abstats.verdict(paths.arm(0, run, look), paths.arm(1, run, look), RULES)
        if found.outcome in DECIDED:
            return found.outcome, int(paths.n[look])
    return None


def _two_proportion_p(x_control: np.ndarray, x_candidate: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The fixed-horizon test the verdict used to be: two proportions, pooled, two-sided."""
    pooled = (x_control + x_candidate) / (2 * n)
    se = np.sqrt(np.maximum(pooled * (1 - pooled) * 2 / n, 1e-300))
    z = np.abs(x_candidate - x_control) / n / se
    p: np.ndarray = np.vectorize(math.erfc)(z / math.sqrt(2))
    return p


def _peeked(p: np.ndarray, n: np.ndarray) -> float:
    """The share of runs whose fixed-horizon p fell under 0.05 at some look past min_samples."""
    read = n >= RULES.min_samples
    return float(np.mean((p[:, read] < 0.05).any(axis=1)))


def test_aa_regression_declares_a_winner_at_most_alpha_while_the_fixed_horizon_test_peeks() -> None:
    runs = 1000
    paths = _regression_paths(1, runs, (SIGMA_70, SIGMA_70), RULES.max_samples)
    decisions = [_first_decision(paths, run) for run in range(runs)]
    ours = sum(d is not None for d in decisions) / runs
    old = _peeked(_two_proportion_p(paths.within[0], paths.within[1], paths.n), paths.n)
    looks = int(np.sum(paths.n >= RULES.min_samples))
    print(
        f"\n[A/A regression, {runs} runs, read after every {BATCH} labels per arm, {looks} looks"
        f" to {RULES.max_samples}] ever declared a winner: always-valid {ours:.1%}"
        f" · old fixed-horizon two-proportion test (p < 0.05) {old:.1%} · α {ALPHA:.0%}"
    )
    assert _within_mc(ours, ALPHA, runs)
    assert old >= 2 * ALPHA  # peeking inflates the old test: the reason it is gone


def test_a_real_effect_is_decided_within_max_samples_with_the_stated_power() -> None:
    runs = 300
    paths = _regression_paths(2, runs, (SIGMA_70, SIGMA_76), RULES.max_samples)
    decisions = [_first_decision(paths, run) for run in range(runs)]
    wins = [
        n for d in decisions if d is not None and d[0] == abstats.CANDIDATE_WINS for n in [d[1]]
    ]
    wrong = sum(d is not None and d[0] == abstats.CONTROL_WINS for d in decisions)
    power = len(wins) / runs
    print(
        f"\n[70% → 76% accuracy, {runs} runs] candidate wins within {RULES.max_samples} labels"
        f" per arm: {power:.1%} (stated power {POWER:.0%}); median labels per arm at the"
        f" decision {statistics.median(wins):.0f}; control wins {wrong}"
    )
    assert power >= POWER
    assert wrong == 0
    assert max(wins) <= RULES.max_samples


def _auc_paths(seed: int, runs: int, looks: int, batch: int) -> list[list[tuple[AucArm, AucArm]]]:
    """Binary A/A: both arms' scores N(0.8, 1) for class 1 and N(0, 1) for class 0 (AUC 0.71),
    labels 50/50; each look's AUC over the labels so far (scoring.auc, the rank sum)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(runs):
        arms = []
        for _arm in range(2):
            y = rng.random(looks * batch) < 0.5
            s = rng.normal(0.0, 1.0, y.size) + 0.8 * y
            arms.append((s, y))
        run = []
        for k in range(1, looks + 1):
            found = []
            for s, y in arms:
                part, pos = s[: k * batch], y[: k * batch]
                positives = int(pos.sum())
                found.append(AucArm(scoring.auc(part, pos), positives, part.size - positives))
            run.append((found[0], found[1]))
        out.append(run)
    return out


def _fixed_horizon_z(control: AucArm, candidate: AucArm) -> float:
    assert control.auc is not None and candidate.auc is not None
    se = math.hypot(
        abstats.hanley_mcneil_se(control.auc, control.positives, control.negatives),
        abstats.hanley_mcneil_se(candidate.auc, candidate.positives, candidate.negatives),
    )
    return abs(candidate.auc - control.auc) / se


def test_aa_binary_auc_declares_a_winner_at_most_alpha() -> None:
    runs, looks, batch = 200, 20, 100
    paths = _auc_paths(3, runs, looks, batch)
    ours = old = 0
    for run in paths:
        outcomes = [abstats.auc_verdict(c, t, RULES).outcome for c, t in run]
        ours += any(o in DECIDED for o in outcomes)
        # The fixed-horizon reading of the same figures: |z| > 1.96 on Hanley–McNeil's SEs.
        z = [_fixed_horizon_z(c, t) for c, t in run if min(c.n, t.n) >= RULES.min_samples]
        old += any(value > 1.96 for value in z)
    print(
        f"\n[A/A binary AUC, {runs} runs, {looks} looks of {batch} labels per arm]"
        f" ever declared a winner: always-valid {ours / runs:.1%}"
        f" · fixed-horizon z on the same AUCs {old / runs:.1%} · α {ALPHA:.0%}"
    )
    assert _within_mc(ours / runs, ALPHA, runs)
    assert old / runs >= 2 * ALPHA


def test_aa_paired_comparison_declares_a_winner_at_most_alpha() -> None:
    """Two equally good models scored on the same requests (a shadow, a replay)."""
    runs, looks, batch = 200, 20, 100
    rng = np.random.default_rng(4)
    ours = old = 0
    for _ in range(runs):
        y = rng.normal(50.0, 10.0, looks * batch)
        control = y + rng.normal(0.0, SIGMA_70, y.size)
        candidate = y + rng.normal(0.0, SIGMA_70, y.size)
        decided = peeked = False
        for k in range(batch, y.size + 1, batch):
            found = paired.compare(
                tasks.REGRESSION, candidate[:k], control[:k], y[:k], RULES, tolerance=TOLERANCE
            )
            decided = decided or found.verdict.outcome in DECIDED
            if k >= RULES.min_samples:  # the fixed-horizon paired t-test, read at this look
                gain = (np.abs(candidate[:k] - y[:k]) <= TOLERANCE).astype(float) - (
                    np.abs(control[:k] - y[:k]) <= TOLERANCE
                )
                se = gain.std(ddof=1) / math.sqrt(k)
                peeked = peeked or (se > 0 and abs(gain.mean()) / se > 1.96)
        ours += decided
        old += peeked
    print(
        f"\n[A/A paired, {runs} runs, {looks} looks of {batch} shared requests]"
        f" ever declared a winner: always-valid {ours / runs:.1%}"
        f" · fixed-horizon paired t {old / runs:.1%} · α {ALPHA:.0%}"
    )
    assert _within_mc(ours / runs, ALPHA, runs)
    assert old / runs >= 2 * ALPHA


SRM_P = 0.001  # [monitoring] srm_p
SRM_BATCH = 200  # predictions between two checks
SRM_PREDICTIONS = 20_000


def _srm_path(rng: np.random.Generator, true_share: float) -> list[tuple[int, int]]:
    draws = rng.random(SRM_PREDICTIONS) < true_share
    candidate = np.cumsum(draws)[SRM_BATCH - 1 :: SRM_BATCH]
    looks = np.arange(SRM_BATCH, SRM_PREDICTIONS + 1, SRM_BATCH)
    return [(int(n - t), int(t)) for n, t in zip(looks, candidate, strict=True)]


def test_no_false_srm_on_100_fair_seeds_checked_after_every_batch() -> None:
    lowest = 1.0
    false = 0
    for seed in range(100):
        share = (0.5, 0.1)[seed % 2]
        path = _srm_path(np.random.default_rng(seed), share)
        found = min(abstats.srm_p(c, t, share) for c, t in path)
        lowest = min(lowest, found)
        false += found < SRM_P
    print(
        f"\n[SRM, 100 fair seeds (shares 50% and 10%), checked every {SRM_BATCH} predictions"
        f" to {SRM_PREDICTIONS:,}] false mismatches {false}; lowest p seen {lowest:.3g}"
    )
    assert false == 0


def test_a_skewed_split_is_detected() -> None:
    """Configured 50/50, served 46/54 (a cache or a redirect dropping candidate requests)."""
    found_at = []
    for seed in range(100):
        path = _srm_path(np.random.default_rng(1000 + seed), 0.46)
        first = next((c + t for c, t in path if abstats.srm_p(c, t, 0.5) < SRM_P), None)
        if first is not None:
            found_at.append(first)
    print(
        f"\n[SRM, 100 seeds served 46% for a configured 50%] detected in {len(found_at)};"
        f" median predictions at detection {statistics.median(found_at):,.0f}"
    )
    assert len(found_at) >= 95
