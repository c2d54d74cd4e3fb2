"""A/B statistics from moments equal scipy on raw samples; verdicts behave on known arms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from engine.monitoring.abstats import Arm, two_proportion_p, verdict, welch_p


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
