"""A progressive rollout's pure parts: its steps, its transitions, its gates, sticky keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.config import Config
from engine.core.errors import BeastError, Conflict
from engine.core.records import Experiment, LineState, Rollout, VersionRef
from engine.deploy import rules
from engine.deploy.rollout_gates import (
    ArmStep,
    GateSettings,
    StepFigures,
    judge_step,
    slower_than,
)
from engine.monitoring import abstats
from engine.serving import latency
from engine.serving.router import bucket

PROD = VersionRef(1, "line", "v1", 1, "a" * 64)
CAND = VersionRef(2, "line", "v2", 2, "b" * 64)
NOW = "2026-12-07T15:00:00.000Z"
SETTINGS = GateSettings(
    min_samples=100, max_step_minutes=60, error_rate_margin=0.01, latency_p99_ratio=1.25, srm_p=1e-3
)

rising = st.lists(st.integers(100, 9_900), min_size=1, max_size=6, unique=True).map(sorted)


@given(rising)
def test_rising_shares_ending_at_100_parse_to_basis_points(bps: list[int]) -> None:
    steps = rules.rollout_steps([bp / 100 for bp in bps] + [100])
    assert steps == (*bps, 10_000)
    assert (
        rules.rollout_start_bp(steps, None) == bps[0] == rules.rollout_start_bp(steps, bps[0] / 100)
    )


@pytest.mark.parametrize(
    "values",
    [[100], [5, 25, 50], [25, 5, 100], [5, 5, 100], [0.5, 100], [5, 99.5, 100], [5, 1.234, 100]],
)
def test_steps_that_do_not_rise_to_100_within_1_to_99_are_refused(values: list[float]) -> None:
    with pytest.raises(BeastError):
        rules.rollout_steps(values)


def test_a_traffic_that_disagrees_with_the_first_step_is_refused() -> None:
    with pytest.raises(BeastError, match="first step"):
        rules.rollout_start_bp((500, 10_000), 10)


def _at(steps: tuple[int, ...], step: int, state: str = "running") -> tuple[LineState, Experiment]:
    rollout = Rollout(steps, step, state, NOW, NOW)  # type: ignore[arg-type]
    line = LineState("line", PROD, NOW, "me", 7, CAND, steps[step], NOW, "me", "t")
    test = Experiment(
        1, "t", "line", "v1", "v2", steps[step], "running", NOW, "me", rollout=rollout
    )
    return line, test


@given(rising)
def test_each_step_moves_to_the_next_share_and_the_last_promotes(bps: list[int]) -> None:
    steps = (*bps, 10_000)
    for step in range(len(steps) - 1):
        line, test = _at(steps, step)
        plan, after = rules.plan_rollout_step(line, test, "later")
        assert after.step == step + 1 and after.step_since == "later"
        if steps[step + 1] == 10_000:
            assert plan.action == "promote" and plan.production == CAND and plan.candidate is None
            assert after.state == "completed" and plan.ending == "promoted on verdict"
        else:
            assert plan.action == "rollout_step" and plan.candidate_bp == steps[step + 1]
            assert (plan.production, plan.candidate, plan.experiment) == (PROD, CAND, "t")
            assert after.state == "running"


@pytest.mark.parametrize("state", ["paused", "completed", "rolled back", "aborted"])
def test_only_a_running_rollout_advances(state: str) -> None:
    line, test = _at((500, 10_000), 0, state)
    with pytest.raises(Conflict):
        rules.plan_rollout_step(line, test, "later")


def test_pause_holds_the_share_and_resume_begins_the_step_again() -> None:
    line, test = _at((500, 5_000, 10_000), 1)
    plan, paused = rules.plan_rollout_hold(line, test, pause=True, now="later")
    assert plan.action == "rollout_pause" and plan.candidate_bp == 5_000
    assert (paused.state, paused.step, paused.step_since) == ("paused", 1, NOW)
    with pytest.raises(Conflict, match="cannot pause"):
        rules.plan_rollout_hold(
            line, dataclasses.replace(test, rollout=paused), pause=True, now="x"
        )
    with pytest.raises(Conflict, match="cannot resume"):
        rules.plan_rollout_hold(line, test, pause=False, now="x")
    plan, resumed = rules.plan_rollout_hold(
        line, dataclasses.replace(test, rollout=paused), pause=False, now="later"
    )
    assert plan.action == "rollout_resume" and plan.candidate_bp == 5_000
    assert (resumed.state, resumed.step, resumed.step_since) == ("running", 1, "later")


def test_a_test_without_a_rollout_has_no_rollout_to_move() -> None:
    line, test = _at((500, 10_000), 0)
    with pytest.raises(Conflict, match="no rollout"):
        rules.plan_rollout_step(line, dataclasses.replace(test, rollout=None), "x")


@pytest.mark.parametrize(
    ("ending", "state"),
    [
        ("promoted on verdict", "completed"),
        ("forced", "completed"),
        ("auto-pulled", "rolled back"),
        ("aborted", "aborted"),
    ],
)
def test_a_rollout_ends_with_its_test(ending: str, state: str) -> None:
    rollout = Rollout((500, 10_000), 0, "paused", NOW, NOW)
    assert rules.rollout_ended(rollout, ending, "x").state == state  # type: ignore[arg-type]
    done = dataclasses.replace(rollout, state="completed")
    assert rules.rollout_ended(done, ending, "x") == done  # type: ignore[arg-type]


# -- the gates ------------------------------------------------------------------------------


def _verdict(outcome: str, lo: float) -> abstats.Verdict:
    return abstats.Verdict(outcome, "accuracy", lo + 0.01, lo, lo + 0.02, 0.5, 0.02, 500, 500, "")


BETTER = _verdict(abstats.CANDIDATE_WINS, 0.05)
WORSE = _verdict(abstats.CONTROL_WINS, -0.3)
UNSURE = _verdict(abstats.NO_DIFFERENCE, -0.05)


def _figures(
    n: int = 500,
    *,
    verdict: abstats.Verdict = BETTER,
    errors: tuple[int, int] = (0, 0),
    p99: tuple[float, float] = (2.0, 2.0),
    split: tuple[int, int] | None = None,
    share_bp: int = 1_000,
    minutes: float = 5,
) -> StepFigures:
    control_n = round(n * (10_000 - share_bp) / share_bp)
    return StepFigures(
        ArmStep(control_n, errors[0], control_n, p99[0]),
        ArmStep(n, errors[1], n, p99[1]),
        *(split or (control_n, n)),
        share_bp,
        minutes,
        verdict,
    )


def test_every_gate_passing_advances_the_step() -> None:
    decision = judge_step(_figures(), SETTINGS)
    assert decision.decision == "advance"
    assert {g.name: g.status for g in decision.gates} == dict.fromkeys(
        ("samples", "health", "srm", "error_rate", "latency_p99", "verdict"), "pass"
    )


@pytest.mark.parametrize(
    ("figures", "gate"),
    [
        (_figures(verdict=WORSE), "verdict"),
        (_figures(errors=(0, 20)), "error_rate"),
        (_figures(p99=(2.0, 2.6)), "latency_p99"),
        (_figures(split=(500, 500)), "srm"),
    ],
)
def test_one_failing_gate_fails_the_step(figures: StepFigures, gate: str) -> None:
    decision = judge_step(figures, SETTINGS)
    assert decision.decision == "fail"
    assert [g.name for g in decision.gates if g.status == "fail"] == [gate]
    assert decision.reason.startswith(gate)


def test_health_at_the_limits_passes() -> None:
    limit = _figures(errors=(45, 10), p99=(2.0, 2.5))  # 1% + 1 point = 2% of 500
    assert judge_step(limit, SETTINGS).decision == "advance"


@given(
    n=st.integers(0, 99),
    minutes=st.floats(0, 59.9),
    verdict=st.sampled_from([BETTER, UNSURE]),
)
def test_a_step_short_of_its_samples_or_its_verdict_holds(
    n: int, minutes: float, verdict: abstats.Verdict
) -> None:
    decision = judge_step(_figures(n, verdict=verdict, minutes=minutes), SETTINGS)
    assert decision.decision == "hold"
    decision = judge_step(_figures(500, verdict=UNSURE, minutes=minutes), SETTINGS)
    assert decision.decision == "hold" and decision.reason.startswith("verdict")


@given(n=st.integers(0, 2_000), minutes=st.floats(60, 1e4))
def test_an_undecided_step_fails_once_its_time_is_up(n: int, minutes: float) -> None:
    decision = judge_step(_figures(n, verdict=UNSURE, minutes=minutes), SETTINGS)
    assert decision.decision == "fail" and "undecided after 60 minutes" in decision.reason


@given(n=st.integers(0, 2_000), minutes=st.floats(0, 1e4))
def test_control_wins_fails_the_step_whatever_else(n: int, minutes: float) -> None:
    assert judge_step(_figures(n, verdict=WORSE, minutes=minutes), SETTINGS).decision == "fail"


def test_health_is_not_judged_on_a_handful() -> None:
    """Two errors in ten predictions is not a rate: the step waits for its samples."""
    decision = judge_step(_figures(10, errors=(0, 2)), SETTINGS)
    assert decision.decision == "hold"
    assert {g.name: g.status for g in decision.gates}["error_rate"] == "waiting"


# -- sticky keys ----------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=12))
def test_a_key_keeps_the_candidate_as_the_share_grows(key: str, test: str) -> None:
    """The router serves the candidate when bucket < share: a key the candidate served at
    10% is the candidate's at 50% (and a key production kept at 50% was production's at 10%)."""
    b = bucket(test, key)
    assert b == bucket(test, key)
    for low, high in ((1_000, 5_000), (500, 2_500), (2_500, 10_000)):
        assert not (b < low) or b < high


SLACK = dataclasses.replace(SETTINGS, latency_p99_slack_ms=5.0)


@pytest.mark.parametrize(
    ("p99", "status"),
    [
        ((2.29, 3.04), "pass"),  # the demo's deeper candidate: +0.75 ms, 1.33×
        ((2.0, 7.0), "pass"),  # at the slack
        ((2.0, 7.5), "fail"),  # beyond both
        ((40.0, 50.0), "pass"),  # the ratio governs slow models
        ((40.0, 50.5), "fail"),
    ],
)
def test_the_latency_gate_is_the_ratio_or_the_slack_whichever_is_more(
    p99: tuple[float, float], status: str
) -> None:
    [gate] = [g for g in judge_step(_figures(p99=p99), SLACK).gates if g.name == "latency_p99"]
    assert gate.status == status
    assert gate.limit == pytest.approx(max(p99[0] * 1.25, p99[0] + 5.0))


def test_the_default_config_gives_the_latency_gate_its_slack() -> None:
    assert GateSettings.of(Config()).latency_p99_slack_ms == 5.0


@given(n=st.integers(0, 600), minutes=st.floats(0, 59.9))
def test_a_critical_candidate_fails_its_health_gate_at_once(n: int, minutes: float) -> None:
    # Short of its samples or not: the auto-pull would pull it, and the rollout does.
    critical = dataclasses.replace(
        _figures(n, minutes=minutes), health="critical", critical="data drift PSI 0.31"
    )
    decision = judge_step(critical, SETTINGS)
    assert decision.decision == "fail"
    assert "health: candidate critical: data drift PSI 0.31" in decision.reason


def _hist(latencies_ms: list[float]) -> tuple[int, ...]:
    return tuple(int(c) for c in latency.histogram(np.array(latencies_ms) * 1000.0))


def _timed(candidate_ms: list[float]) -> StepFigures:
    """A step whose production answered 2,000 requests in 2 ms (p99 2 ms: limit 7 ms with
    the slack) and whose candidate answered `candidate_ms`."""
    control = ArmStep(2000, 0, 2000, 2.0, _hist([2.0] * 2000))
    hist = _hist(candidate_ms)
    p99 = latency.percentile(np.array(hist), 99)
    candidate = ArmStep(len(candidate_ms), 0, len(candidate_ms), p99, hist)
    return dataclasses.replace(_figures(), control=control, candidate=candidate, share_bp=1000)


def test_three_slow_requests_of_two_hundred_do_not_fail_the_latency_gate() -> None:
    # Its p99 is its third slowest, 40 ms: far over the 7 ms limit, yet 1% of 200 is two.
    figures = _timed([2.5] * 197 + [40.0] * 3)
    assert figures.candidate.p99_ms is not None and figures.candidate.p99_ms > 30
    [gate] = [g for g in judge_step(figures, SLACK).gates if g.name == "latency_p99"]
    assert gate.status == "pass", gate.detail
    assert "3 of 200 requests slower than the limit" in gate.detail


def test_a_candidate_slow_on_many_requests_fails_the_latency_gate() -> None:
    figures = _timed([2.5] * 180 + [40.0] * 20)  # 10% slower than the limit
    [gate] = [g for g in judge_step(figures, SLACK).gates if g.name == "latency_p99"]
    assert gate.status == "fail", gate.detail


def test_slower_than_counts_only_buckets_wholly_above_the_limit() -> None:
    hist = _hist([6.9, 7.0, 7.71, 8.0, 100.0])
    above, n = slower_than(hist, 7.0)
    assert n == 5 and above in (3, 4)  # 7.71 shares a bucket edge region; 8 and 100 are above
    assert slower_than(hist, 200.0) == (0, 5)
