"""A progressive rollout's gates: whether the step serving now advances, holds or fails.

Pure (no I/O): the rollout service reads the step's figures — each arm's predictions, errors,
labelled predictions and p99 latency over the test's own rollups since the step began, and
the test's always-valid verdict — and asks `judge_step`. A step advances when every gate
passes, fails (the candidate is pulled) as soon as one fails, and holds while any is
undecided, up to `[rollout] max_step_minutes`, after which the undecided step fails too:

- samples: each arm has `[rollout] min_samples` labelled predictions since the step began;
- health: the candidate's health is not critical (the findings the auto-pull pulls on: its
  data drift, accuracy, error rate, latency over the report's window) — judged at once, at
  every evaluation, as the auto-pull would: a rollout's candidate is pulled by this gate;
- srm: the step's realized split is the configured share (abstats.srm_p ≥ [monitoring] srm_p);
- error_rate: the candidate's at most production's + `error_rate_margin`;
- latency_p99: the candidate's p99 at most the limit: production's p99 × `latency_p99_ratio`,
  or production's + `latency_p99_slack_ms` where that is more (at a 2 ms p99 a ratio fails a
  model one millisecond slower: the demo's deeper candidate served 3.04 ms against 2.29). A
  p99 of the candidate's 200 requests is its second slowest — under load a coin flip (the
  demo pulled a candidate at 9.56 ms against production's 4.46, both arms equally contended)
  — so the gate asks what p99 ≤ limit means: at most 1% of its requests slower than the
  limit, failing only when significantly more are (`abstats.exceedance_p` < `ab_alpha`,
  always valid, counted from the latency histogram's buckets wholly above the limit);
- verdict: non-inferior or better (`Verdict.non_inferior`); "control wins" fails at once.

The error-rate and latency gates are judged once the samples gate passes: a handful of
predictions says nothing about a rate (the health gate pulls a candidate whose health turns
critical before).
The verdict is always valid (engine.monitoring.abstats), so it may be read at every
evaluation without inflating its error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from engine.core.config import Config
from engine.monitoring import abstats
from engine.serving import latency

GateStatus = Literal["pass", "fail", "waiting"]
Decision = Literal["advance", "hold", "fail"]


@dataclass(frozen=True)
class ArmStep:
    """One arm's figures since the step began (the test's own predictions)."""

    predictions: int
    errors: int
    labelled: int
    p99_ms: float | None
    # The step's latency histogram (engine.serving.latency's buckets); () when not read.
    latency_hist: tuple[int, ...] = ()

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.predictions if self.predictions else None


@dataclass(frozen=True)
class StepFigures:
    """What a step is judged on."""

    control: ArmStep
    candidate: ArmStep
    # The split's units per arm (engine.monitoring.srm): from the step's first whole minute
    # (the minute a share changed mixes the old share with the new).
    split_control: int
    split_candidate: int
    share_bp: int  # the candidate's share at this step
    minutes: float  # since the step began
    verdict: abstats.Verdict
    split_unit: str = "prediction"  # or "key": distinct keys, and requests without one
    # The candidate's health in the monitoring report judged on, and its critical findings.
    health: str = "ok"
    critical: str = ""


@dataclass(frozen=True)
class GateSettings:
    """[rollout]'s gates and [monitoring] srm_p."""

    min_samples: int
    max_step_minutes: float
    error_rate_margin: float
    latency_p99_ratio: float
    srm_p: float
    latency_p99_slack_ms: float = 0.0
    alpha: float = 0.05  # [monitoring] ab_alpha: the latency gate's always-valid level

    @classmethod
    def of(cls, config: Config) -> GateSettings:
        """The gates a workspace's config sets."""
        r = config.rollout
        return cls(
            r.rollout_min_samples,
            r.max_step_minutes,
            r.error_rate_margin,
            r.latency_p99_ratio,
            config.monitoring.srm_p,
            r.latency_p99_slack_ms,
            config.monitoring.ab_alpha,
        )


@dataclass(frozen=True)
class Gate:
    """One gate's outcome, with the figure it read and the limit it held it to."""

    name: str
    status: GateStatus
    detail: str
    value: float | None = None
    limit: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.name,
            "status": self.status,
            "detail": self.detail,
            "value": self.value,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class StepDecision:
    """What a step's gates decided, and why."""

    decision: Decision
    reason: str
    gates: tuple[Gate, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "gates": [g.to_json() for g in self.gates],
        }


def judge_step(f: StepFigures, s: GateSettings) -> StepDecision:
    """Advance, hold or fail the step whose figures are `f` (the module's docstring)."""
    samples = _samples(f, s)
    judged = samples.status == "pass"
    gates = (
        samples,
        _health(f),
        _srm(f, s),
        _error_rate(f, s, judged),
        _latency(f, s, judged),
        _verdict(f),
    )
    failed = [g for g in gates if g.status == "fail"]
    if failed:
        return StepDecision("fail", "; ".join(f"{g.name}: {g.detail}" for g in failed), gates)
    waiting = [g for g in gates if g.status == "waiting"]
    if not waiting:
        return StepDecision("advance", "every gate passed", gates)
    why = "; ".join(f"{g.name}: {g.detail}" for g in waiting)
    if f.minutes >= s.max_step_minutes:
        return StepDecision(
            "fail", f"step undecided after {s.max_step_minutes:g} minutes ({why})", gates
        )
    return StepDecision("hold", why, gates)


def _samples(f: StepFigures, s: GateSettings) -> Gate:
    fewest = min(f.control.labelled, f.candidate.labelled)
    status: GateStatus = "pass" if fewest >= s.min_samples else "waiting"
    detail = (
        f"{f.control.labelled} control, {f.candidate.labelled} candidate labelled "
        f"of {s.min_samples} per arm"
    )
    return Gate("samples", status, detail, float(fewest), float(s.min_samples))


def _health(f: StepFigures) -> Gate:
    if f.health == "critical":
        return Gate("health", "fail", f"candidate critical: {f.critical}")
    return Gate("health", "pass", f"candidate {f.health}")


def _srm(f: StepFigures, s: GateSettings) -> Gate:
    p = abstats.srm_p(f.split_control, f.split_candidate, f.share_bp / 10_000)
    detail = (
        f"split {f.split_control}:{f.split_candidate} {f.split_unit}s at a "
        f"{f.share_bp / 100:g}% share, "
        f"p={p:.3g} (mismatch below {s.srm_p:g})"
    )
    return Gate("srm", "fail" if p < s.srm_p else "pass", detail, p, s.srm_p)


def _error_rate(f: StepFigures, s: GateSettings, judged: bool) -> Gate:
    ours, theirs = f.candidate.error_rate, f.control.error_rate
    if not judged or ours is None or theirs is None:
        return Gate("error_rate", "waiting", "judged once the step has its samples")
    limit = theirs + s.error_rate_margin
    detail = f"candidate {ours:.2%} vs production {theirs:.2%} (at most {limit:.2%})"
    return Gate("error_rate", "pass" if ours <= limit else "fail", detail, ours, limit)


def _latency(f: StepFigures, s: GateSettings, judged: bool) -> Gate:
    ours, theirs = f.candidate.p99_ms, f.control.p99_ms
    if not judged or ours is None or theirs is None:
        return Gate("latency_p99", "waiting", "judged once the step has its samples")
    limit = max(theirs * s.latency_p99_ratio, theirs + s.latency_p99_slack_ms)
    shown = f"candidate p99 {ours:.3g} ms vs production {theirs:.3g} ms (limit {limit:.3g})"
    if not f.candidate.latency_hist:  # no histogram: the p99 itself
        return Gate("latency_p99", "pass" if ours <= limit else "fail", shown, ours, limit)
    above, n = slower_than(f.candidate.latency_hist, limit)
    p = abstats.exceedance_p(above, n, SLOW_SHARE)
    detail = (
        f"{shown}: {above} of {n} requests slower than the limit, "
        f"p={p:.3g} that at most {SLOW_SHARE:.0%} are (fails below {s.alpha:g})"
    )
    return Gate("latency_p99", "fail" if p < s.alpha else "pass", detail, ours, limit)


SLOW_SHARE = 0.01  # a p99: at most 1% of requests slower


def slower_than(hist: tuple[int, ...], limit_ms: float) -> tuple[int, int]:
    """(requests surely slower than `limit_ms`, all requests) of a latency histogram: only
    buckets whose lower edge is at or above the limit count (a bucket spans 10%)."""
    limit_us = limit_ms * 1000.0
    above = sum(
        count for i, count in enumerate(hist) if i > 0 and latency.upper_us(i - 1) >= limit_us
    )
    return above, sum(hist)


def _verdict(f: StepFigures) -> Gate:
    v = f.verdict
    detail = f"{v.outcome} ({v.reason})"
    if v.outcome == abstats.CONTROL_WINS:
        return Gate("verdict", "fail", detail, _finite(v.lo), -v.margin)
    if v.non_inferior:
        return Gate("verdict", "pass", detail, v.lo, -v.margin)
    return Gate("verdict", "waiting", detail, _finite(v.lo), -v.margin)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
