"""Unit tests of the always-valid verdicts (engine.monitoring.abstats): the rules a config
sets, each outcome of each verdict, the confidence sequence's shape, the mixture's fixed point
and the sample-ratio test's edges. tests/test_abstats_sim.py measures the error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.config import parse_config
from engine.monitoring import abstats
from engine.monitoring.abstats import Arm, AucArm, Paired, Rules

RULES = Rules()


def _arm(n: int, accuracy: float, mae: float = 3.0, sd: float = 3.0) -> Arm:
    """An arm of `n` labels with the given accuracy, MAE and standard deviation of |error|."""
    return Arm(n, round(n * accuracy), n * mae, n * (sd * sd + mae * mae))


def _paired(n: int, mean: float, sd: float) -> Paired:
    return Paired(n, n * mean, n * (sd * sd + mean * mean))


def test_rules_of_reads_the_config_keys() -> None:
    config = parse_config(
        "[monitoring]\nab_min_samples = 50\nab_alpha = 0.01\nab_max_samples = 500\n"
        "ab_margin = 0.05\n[retrain]\nmin_accuracy_improvement = 0.03\n"
    )
    assert Rules.of(config) == Rules(
        min_samples=50, min_improvement=0.03, margin=0.05, max_samples=500, alpha=0.01
    )
    assert Rules.of(parse_config("")) == Rules()  # the defaults are the config's defaults


def test_verdict_reaches_each_outcome() -> None:
    wins = abstats.verdict(_arm(1000, 0.70), _arm(1000, 0.80), RULES)
    assert wins.outcome == abstats.CANDIDATE_WINS and wins.lo > 0 and wins.metric == "accuracy"
    loses = abstats.verdict(_arm(1000, 0.80), _arm(1000, 0.70), RULES)
    assert loses.outcome == abstats.CONTROL_WINS and loses.hi < 0
    same = abstats.verdict(_arm(40_000, 0.70), _arm(40_000, 0.70), RULES)
    assert same.outcome == abstats.NO_DIFFERENCE
    assert -RULES.margin < same.lo < 0 < same.hi < RULES.margin and same.non_inferior
    undecided = abstats.verdict(_arm(1000, 0.70), _arm(1000, 0.72), RULES)
    assert undecided.outcome == abstats.NOT_ENOUGH and undecided.lo < 0 < undecided.hi
    assert "undecided" in undecided.reason
    short = abstats.verdict(_arm(99, 0.5), _arm(5000, 0.9), RULES)
    assert short.outcome == abstats.NOT_ENOUGH and math.isnan(short.diff)
    assert "need 100 labelled predictions per arm (control 99" in short.reason
    assert (short.n_control, short.n_candidate) == (99, 5000)


def test_a_surely_worse_mae_blocks_a_win() -> None:
    better_but_far = _arm(1000, 0.80, mae=10.0, sd=5.0)
    found = abstats.verdict(_arm(1000, 0.70), better_but_far, RULES)
    assert found.lo > 0 and found.mae_lo > 0  # accuracy surely up, MAE surely worse
    assert found.outcome == abstats.NOT_ENOUGH and "MAE surely worse" in found.reason
    assert found.mae_lo < found.mae_diff < found.mae_hi


def test_a_win_must_reach_the_least_improvement() -> None:
    strict = Rules(min_improvement=0.05)
    found = abstats.verdict(_arm(20_000, 0.70), _arm(20_000, 0.73), strict)
    assert found.lo > 0 and found.diff < 0.05 and found.outcome == abstats.NOT_ENOUGH
    assert abstats.verdict(_arm(20_000, 0.70), _arm(20_000, 0.73), RULES).outcome == (
        abstats.CANDIDATE_WINS
    )


def test_auc_verdict_outcomes_and_class_minimums() -> None:
    def arm(auc: float, n: int) -> AucArm:
        return AucArm(auc, n // 2, n - n // 2)

    assert abstats.auc_verdict(arm(0.70, 2000), arm(0.80, 2000), RULES).outcome == (
        abstats.CANDIDATE_WINS
    )
    assert abstats.auc_verdict(arm(0.80, 2000), arm(0.70, 2000), RULES).outcome == (
        abstats.CONTROL_WINS
    )
    same = abstats.auc_verdict(arm(0.80, 100_000), arm(0.80, 100_000), RULES)
    assert same.outcome == abstats.NO_DIFFERENCE and same.metric == "auc"
    assert abstats.auc_verdict(arm(0.80, 300), arm(0.81, 300), RULES).outcome == abstats.NOT_ENOUGH
    few = abstats.auc_verdict(AucArm(0.9, 9, 5000), arm(0.7, 5000), RULES)
    assert few.outcome == abstats.NOT_ENOUGH and math.isnan(few.lo)
    assert "10 of each class" in few.reason and "control 9 of class 1" in few.reason
    one_class = abstats.auc_verdict(AucArm(None, 0, 500), arm(0.7, 500), RULES)
    assert one_class.outcome == abstats.NOT_ENOUGH


def test_paired_verdict_outcomes() -> None:
    gain = abstats.paired_verdict(_paired(1000, 0.10, 0.5), RULES, metric="accuracy")
    assert gain.outcome == abstats.CANDIDATE_WINS and gain.paired
    assert (gain.n_control, gain.n_candidate) == (1000, 1000)
    assert "paired over 1,000 requests" in gain.reason
    loss = abstats.paired_verdict(_paired(1000, -0.10, 0.5), RULES, metric="accuracy")
    assert loss.outcome == abstats.CONTROL_WINS
    # Two models that mostly agree: the differences are small, so the interval is tight early.
    same = abstats.paired_verdict(_paired(2000, 0.0, 0.1), RULES, metric="accuracy")
    assert same.outcome == abstats.NO_DIFFERENCE
    short = abstats.paired_verdict(_paired(50, 0.5, 0.1), RULES, metric="accuracy")
    assert short.outcome == abstats.NOT_ENOUGH and "50 paired" in short.reason
    guarded = abstats.paired_verdict(
        _paired(1000, 0.10, 0.5), RULES, metric="accuracy", mae_loss=_paired(1000, 2.0, 1.0)
    )
    assert guarded.outcome == abstats.NOT_ENOUGH and guarded.mae_lo > 0
    from_delong = abstats.paired_from(0.05, 0.0001, 1000, RULES, metric="auc")
    assert from_delong.outcome == abstats.CANDIDATE_WINS and from_delong.metric == "auc"


def test_sequence_contains_the_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (100, 400, 1600, 6400, 25_600):
        found = abstats.sequence(0.03, 0.25 / n, alpha=0.05, n=n, n_max=2000)
        assert found.lo < found.diff == 0.03 < found.hi
        assert found.hi - found.diff == pytest.approx(found.diff - found.lo)
        widths.append(found.hi - found.lo)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 8
    for nothing in (
        abstats.sequence(math.nan, 1.0, alpha=0.05, n=10, n_max=20),
        abstats.sequence(0.1, math.nan, alpha=0.05, n=10, n_max=20),
        abstats.sequence(0.1, 1.0, alpha=0.05, n=0, n_max=20),
    ):
        assert all(math.isnan(v) for v in (nothing.diff, nothing.lo, nothing.hi, nothing.p))


def test_at_the_plan_the_interval_is_three_standard_errors() -> None:
    found = abstats.sequence(0.0, 1.0, alpha=0.05, n=2000, n_max=2000)
    assert found.hi == pytest.approx(math.sqrt(1 + abstats.mixture_x(0.05)))
    assert 3.0 < found.hi < 3.1


def test_past_the_plan_the_bar_rises_so_a_long_test_keeps_its_alpha() -> None:
    """τ² is fixed by the plan: re-planned at every n (τ² ∝ 1/n) the bar would stay at 3.03
    standard errors for ever, which an A/A test crosses more often than α given time."""
    sigma2 = 0.42  # two arms' p(1 − p) at 70%

    def p_at(z: float, n: int) -> float:
        var = sigma2 / n
        return abstats.sequence(z * math.sqrt(var), var, alpha=0.05, n=n, n_max=2000).p

    assert p_at(3.1, 2000) < 0.05
    assert p_at(3.1, 200_000) > 0.05
    assert p_at(3.1, 20_000) > p_at(3.1, 2000)


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(0, 0.5),
    b=st.floats(0, 0.5),
    var=st.floats(1e-6, 1.0),
    n=st.integers(1, 100_000),
)
def test_p_is_monotone_in_the_difference_and_dual_to_the_interval(
    a: float, b: float, var: float, n: int
) -> None:
    small, large = sorted((a, b))
    at_small = abstats.sequence(small, var, alpha=0.05, n=n, n_max=2000)
    at_large = abstats.sequence(-large, var, alpha=0.05, n=n, n_max=2000)
    assert 0 <= at_large.p <= at_small.p <= 1  # the sign does not matter, the size does
    for found in (at_small, at_large):
        excludes_zero = found.lo > 0 or found.hi < 0
        if abs(found.p - 0.05) > 1e-9:  # on the boundary itself rounding decides
            assert excludes_zero == (found.p < 0.05)


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.1, 0.3])
def test_mixture_x_is_the_fixed_point(alpha: float) -> None:
    x = abstats.mixture_x(alpha)
    assert x == pytest.approx(2 * math.log(1 / alpha) + math.log1p(x), abs=1e-9)


def test_mixture_x_at_five_percent() -> None:
    assert abstats.mixture_x(0.05) == pytest.approx(8.2, abs=0.05)


def test_srm_p_edges() -> None:
    assert abstats.srm_p(0, 0, 0.5) == 1.0  # nothing served yet: no evidence
    assert abstats.srm_p(5000, 5000, 0.5) == 1.0  # exactly the configured split
    assert abstats.srm_p(9000, 1000, 0.1) == 1.0
    assert abstats.srm_p(5600, 4400, 0.5) < 0.001  # 44% served for 50%
    assert abstats.srm_p(5200, 4800, 0.3) < 1e-100
    assert abstats.srm_p(5600, 4400, 0.5) == pytest.approx(abstats.srm_p(4400, 5600, 0.5))
    assert abstats.srm_p(9100, 900, 0.1) == pytest.approx(abstats.srm_p(900, 9100, 0.9))


@pytest.mark.parametrize(
    ("control", "candidate", "share"),
    [(10, 10, 0.0), (10, 10, 1.0), (10, 10, -0.2), (10, 10, 1.5), (-1, 10, 0.5), (10, -1, 0.5)],
)
def test_srm_p_refuses_a_bad_share_or_count(control: int, candidate: int, share: float) -> None:
    with pytest.raises(ValueError, match="a split needs a share in"):
        abstats.srm_p(control, candidate, share)


def test_exceedance_is_always_valid_and_finds_a_slow_candidate() -> None:
    """Read after every 100 requests up to 3,000: with exactly 1% of requests slower than the
    limit (the null's edge), ever failing stays under α; with 5%, it fails within 400."""
    rng = np.random.default_rng(7)
    false = sum(
        any(abstats.exceedance_p(int(c[n - 1]), n, 0.01) < 0.05 for n in range(100, 3001, 100))
        for c in (np.cumsum(rng.random(3000) < 0.01) for _ in range(300))
    )
    assert false / 300 <= 0.05 + 2 * (0.05 * 0.95 / 300) ** 0.5
    found = sum(
        any(abstats.exceedance_p(int(c[n - 1]), n, 0.01) < 0.05 for n in range(50, 401, 50))
        for c in (np.cumsum(rng.random(400) < 0.05) for _ in range(100))
    )
    assert found >= 90
    with pytest.raises(ValueError):
        abstats.exceedance_p(5, 4, 0.01)
