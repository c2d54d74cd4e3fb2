"""A/B statistics from moments equal scipy on raw samples; verdicts behave on known arms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from engine.monitoring.abstats import (
    MIN_CLASS,
    Arm,
    AucArm,
    auc_verdict,
    hanley_mcneil_se,
    two_proportion_p,
    verdict,
    welch_p,
)


def arm_of(errors: np.ndarray, tolerance: float = 5.0) -> Arm:
    return Arm(
        int(errors.size),
        int(np.sum(errors <= tolerance)),
        float(errors.sum()),
        float(np.sum(errors**2)),
    )


def test_two_proportion_matches_chi_square_without_correction() -> None:
    table = np.array([[420, 580], [380, 620]])
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert two_proportion_p(420, 1000, 380, 1000) == pytest.approx(expected, rel=1e-9)


def test_welch_from_moments_matches_scipy_on_raw_samples() -> None:
    rng = np.random.default_rng(1)
    a, b = np.abs(rng.normal(0, 4, 700)), np.abs(rng.normal(0.4, 5, 900))
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_p(arm_of(a), arm_of(b)) == pytest.approx(expected, rel=1e-7)


def simulate(seed: int, control_sd: float, candidate_sd: float, n: int) -> tuple[Arm, Arm]:
    rng = np.random.default_rng(seed)
    return (
        arm_of(np.abs(rng.normal(0, control_sd, n))),
        arm_of(np.abs(rng.normal(0, candidate_sd, n))),
    )


def test_a_equals_a_is_inconclusive_in_the_large_majority_of_seeds() -> None:
    outcomes = [
        verdict(*simulate(seed, 4.0, 4.0, 1500), min_samples=200, min_improvement=0.01).outcome
        for seed in range(300)
    ]
    inconclusive = outcomes.count("inconclusive") / len(outcomes)
    assert inconclusive >= 0.9, outcomes
    assert outcomes.count("candidate wins") / len(outcomes) <= 0.05


def test_a_clearly_better_candidate_wins_and_a_worse_one_loses() -> None:
    wins = [
        verdict(*simulate(s, 5.0, 3.5, 1500), min_samples=200, min_improvement=0.01).outcome
        for s in range(50)
    ]
    assert wins.count("candidate wins") >= 48
    losses = [
        verdict(*simulate(s, 3.5, 5.0, 1500), min_samples=200, min_improvement=0.01).outcome
        for s in range(50)
    ]
    assert losses.count("control wins") >= 48


def test_too_few_samples_is_not_enough_data() -> None:
    control, candidate = simulate(3, 5.0, 1.0, 50)
    result = verdict(control, candidate, min_samples=100, min_improvement=0.01)
    assert result.outcome == "not enough data" and "100" in result.reason


def test_min_improvement_is_required_even_when_significant() -> None:
    control, candidate = simulate(4, 4.0, 3.9, 200_000)
    result = verdict(control, candidate, min_samples=100, min_improvement=0.05)
    assert result.outcome == "inconclusive"


# -- binary lines: AUC ------------------------------------------------------------------------


def auc_arm(seed: int, separation: float, n: int, positive_share: float = 0.3) -> AucArm:
    """An arm of `n` labelled predictions of a model whose logits separate the classes by
    `separation` standard deviations."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_share).astype(int)
    scores = rng.normal(size=n) + separation * y
    return AucArm(float(roc_auc_score(y, scores)), int(y.sum()), int(n - y.sum()))


def test_hanley_mcneil_se_matches_the_spread_of_auc_across_samples() -> None:
    aucs = [auc_arm(seed, 1.0, 600).auc for seed in range(400)]
    one = auc_arm(0, 1.0, 600)
    assert one.auc is not None
    se = hanley_mcneil_se(one.auc, one.positives, one.negatives)
    assert se == pytest.approx(float(np.std(aucs)), rel=0.15)


def test_equal_models_rarely_differ_significantly() -> None:
    """Under the null (both arms the same model) a verdict is rarely decisive: about alpha."""
    decided = sum(
        auc_verdict(
            auc_arm(2 * i, 1.0, 800),
            auc_arm(2 * i + 1, 1.0, 800),
            min_samples=100,
            min_improvement=0.0,
        ).outcome
        != "inconclusive"
        for i in range(300)
    )
    assert decided / 300 < 0.09


@pytest.mark.parametrize(
    ("control", "candidate", "n", "outcome"),
    [
        (0.8, 1.6, 2000, "candidate wins"),
        (1.6, 0.8, 2000, "control wins"),
        (1.0, 1.05, 2000, "inconclusive"),  # a hair better: not significant
        (1.0, 1.6, 50, "not enough data"),
    ],
)
def test_auc_verdicts_on_known_arms(control: float, candidate: float, n: int, outcome: str) -> None:
    found = auc_verdict(
        auc_arm(1, control, n), auc_arm(2, candidate, n), min_samples=100, min_improvement=0.01
    )
    assert found.outcome == outcome, found.reason
    assert found.metric == "auc"


def test_a_significant_auc_gain_below_the_minimum_improvement_is_inconclusive() -> None:
    control, candidate = auc_arm(1, 1.0, 20_000), auc_arm(2, 1.15, 20_000)
    assert candidate.auc is not None and control.auc is not None
    gain = candidate.auc - control.auc
    found = auc_verdict(control, candidate, min_samples=100, min_improvement=gain + 0.01)
    assert found.auc_p < 0.05 and found.outcome == "inconclusive"
    assert auc_verdict(control, candidate, min_samples=100, min_improvement=0.0).outcome == (
        "candidate wins"
    )


def test_an_arm_with_too_few_of_one_class_is_not_enough_data() -> None:
    few = AucArm(0.9, MIN_CLASS - 1, 5000)
    found = auc_verdict(auc_arm(1, 1.0, 5000), few, min_samples=100, min_improvement=0.01)
    assert found.outcome == "not enough data" and "candidate" in found.reason
