"""The deployment rules, as pure functions from the current state to a plan.

No I/O here: the deploy service reads the state inside its write transaction, asks for a plan,
and applies it with its history row in that same transaction. Keeping the rules pure makes them
easy to test exhaustively (see tests/test_rules_property.py).

Rollback is a stack: every forward change (deploy, A/B start, promote) is pushed; a plain
rollback pops the newest one and restores the production recorded before it; rolling back
twice goes back two steps and never flips between the last two. An aborted or promoted test's
start leaves the stack with it. A rollback to a named version unwinds the stack down to the
change that left that version, or, if it never served, is itself a forward change.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import BeastError, Conflict
from engine.core.records import (
    BASIS_POINTS,
    Action,
    Ending,
    Experiment,
    ExperimentStatus,
    HistoryEntry,
    LineState,
    Rollout,
    RolloutState,
    Shadow,
    VersionRef,
    percent,
)

MIN_BP, MAX_BP = 100, 9_900


@dataclass(frozen=True)
class Plan:
    """What a mutation will do; applied by the deploy service in one transaction."""

    action: Action
    production: VersionRef
    candidate: VersionRef | None
    candidate_bp: int
    experiment: str | None  # the running test after the change
    message: str
    version: str | None = None
    history_experiment: str | None = None
    start_test: str | None = None
    end_test: tuple[str, ExperimentStatus, str] | None = None  # (name, status, reason)
    undoes: tuple[int, ...] = ()
    forced: bool = False
    # How the test it ends ends, and the verdict read when it was decided (the caller's).
    ending: Ending | None = None
    verdict: str | None = None
    # The figures the change was decided on, kept with its history row (the caller's).
    evidence: Mapping[str, Any] | None = None
    start_shadow: int | None = None  # a shadow of `version` starts, on this share (bp)
    end_shadow: int | None = None  # this running shadow ends (its id)


def traffic_bp(value: float) -> int:
    """A candidate share in percent (1–99, up to two decimals) as basis points."""
    bp = round(value * 100)
    if not MIN_BP <= bp <= MAX_BP or abs(bp - value * 100) > 1e-6:
        raise BeastError(
            f"traffic must be a percentage from 1 to 99 (two decimals at most), got {value:g}"
        )
    return bp


def shadow_bp(value: float) -> int:
    """A shadow's share of production's requests in percent (above 0, up to 100, two decimals
    at most) as basis points."""
    bp = round(value * 100)
    if not 1 <= bp <= BASIS_POINTS or abs(bp - value * 100) > 1e-6:
        raise BeastError(
            f"--shadow-traffic must be a percentage above 0 and up to 100 (two decimals at "
            f"most), got {value:g}"
        )
    return bp


def _unchanged(state: LineState, action: Action, message: str, **more: Any) -> Plan:
    """A plan that leaves what serves as it is (a shadow's start or end)."""
    return Plan(
        action,
        state.production,
        state.candidate,
        state.candidate_bp,
        state.experiment,
        message,
        history_experiment=state.experiment,
        **more,
    )


def plan_shadow_start(
    state: LineState | None, target: VersionRef, bp: int, running: Shadow | None
) -> Plan:
    """Score `target` on `bp` of production's requests without serving it. A line has one
    shadow at a time: a second is refused while one runs (stop it first), so a running
    shadow's scores are never mixed with another version's."""
    if state is None:
        raise BeastError(
            f"no production on {target.line} yet: deploy one first, then shadow a version beside it"
        )
    if running is not None:
        raise Conflict(
            f"shadow {running.version} is already running on {state.line}: stop it first "
            f"(beast deploy --shadow-stop --model {state.line})"
        )
    if target.id == state.production.id or target.sha256 == state.production.sha256:
        raise Conflict(f"{target.name} is production already; a shadow needs another version")
    message = (
        f"shadow {target.name} started on {state.line}: scored on {percent(bp):g}% of "
        f"production {state.production.name}'s requests, never served"
    )
    return _unchanged(state, "shadow_start", message, version=target.name, start_shadow=bp)


def plan_shadow_end(state: LineState | None, line: str, running: Shadow | None) -> Plan:
    """End the line's running shadow (its scores stay, for its verdict and replay)."""
    if state is None or running is None:
        raise BeastError(f"no shadow is running on {line}")
    message = (
        f"shadow {running.version} stopped on {line} after {running.scored} scored requests "
        f"({running.dropped} skipped)"
    )
    return _unchanged(state, "shadow_end", message, version=running.version, end_shadow=running.id)


def plan_deploy(state: LineState | None, target: VersionRef) -> Plan:
    if state is not None:
        if state.experiment:
            raise Conflict(
                f"A/B test {state.experiment} is running on {state.line}: promote or abort it "
                "before replacing production"
            )
        if state.production.id == target.id:
            raise Conflict(f"{target.name} is already production of {state.line}")
        if state.production.sha256 == target.sha256:
            raise Conflict(f"{target.name} is the same file as production {state.production.name}")
        message = f"production {state.production.name} → {target.name} (100%)"
    else:
        message = f"{target.name} deployed to production of {target.line} (100%)"
    return Plan("deploy", target, None, 0, None, message, version=target.name)


def plan_ab_start(
    state: LineState | None, target: VersionRef, bp: int, test: str, existing: Experiment | None
) -> Plan:
    if state is None:
        raise BeastError(
            f"no production on {target.line} yet: deploy one first "
            f"(beast deploy PATH --version V), then start an A/B test against it"
        )
    if existing is not None:
        raise Conflict(
            f"an A/B test named {test} already exists ({existing.status}); pick a new name"
        )
    if state.experiment:
        raise Conflict(
            f"A/B test {state.experiment} is already running on {state.line}: "
            "promote or abort it first"
        )
    if target.id == state.production.id or target.sha256 == state.production.sha256:
        raise Conflict(f"{target.name} is production already; an A/B test needs another version")
    message = (
        f"A/B test {test} started: candidate {target.name} at {percent(bp):g}% against "
        f"production {state.production.name} at {percent(BASIS_POINTS - bp):g}%"
    )
    return Plan(
        "ab_start",
        state.production,
        target,
        bp,
        test,
        message,
        version=target.name,
        history_experiment=test,
        start_test=test,
    )


def _running(state: LineState, test: Experiment) -> None:
    if test.status != "running":
        raise Conflict(f"A/B test {test.name} already ended ({test.status})")
    if state.experiment != test.name or state.candidate is None:
        raise Conflict(f"A/B test {test.name} is not the running test of {state.line}")


def plan_promote(state: LineState, test: Experiment, *, forced: bool) -> Plan:
    _running(state, test)
    assert state.candidate is not None
    message = (
        f"{state.candidate.name} promoted: production {state.production.name} → "
        f"{state.candidate.name} (100%); test {test.name} closed as promoted"
        + ("; forced without a winning verdict" if forced else "")
    )
    return Plan(
        "promote",
        state.candidate,
        None,
        0,
        None,
        message,
        version=state.candidate.name,
        history_experiment=test.name,
        end_test=(test.name, "promoted", "forced" if forced else "verdict"),
        forced=forced,
        ending="forced" if forced else "promoted on verdict",
    )


def plan_abort(state: LineState, test: Experiment, reason: str, ending: Ending = "aborted") -> Plan:
    _running(state, test)
    assert state.candidate is not None
    message = (
        f"A/B test {test.name} aborted: candidate {state.candidate.name} → 0%, "
        f"production {state.production.name} at 100%"
    )
    return Plan(
        "abort",
        state.production,
        None,
        0,
        None,
        message,
        version=state.candidate.name,
        history_experiment=test.name,
        end_test=(test.name, "aborted", reason),
        ending=ending,
    )


def rollout_steps(values: Sequence[float]) -> tuple[int, ...]:
    """`--rollout 5,25,50,100` as basis points: rising shares, each 1–99% (two decimals at
    most) but the last, which is 100 (reaching it promotes the candidate)."""
    if len(values) < 2 or values[-1] != 100:
        raise BeastError(
            "--rollout needs rising percentages ending at 100 (reaching it promotes), "
            f"e.g. 5,25,50,100; got {','.join(f'{v:g}' for v in values)}"
        )
    steps = (*(traffic_bp(v) for v in values[:-1]), BASIS_POINTS)
    if any(a >= b for a, b in itertools.pairwise(steps)):
        raise BeastError(
            f"--rollout steps must rise: {','.join(f'{percent(bp):g}' for bp in steps)}"
        )
    return steps


def rollout_start_bp(steps: tuple[int, ...], traffic: float | None) -> int:
    """The candidate's first share: the rollout's first step. `--traffic`, if given too, must
    say the same (a script that always passes it keeps working; two different shares are a
    mistake)."""
    if traffic is not None and traffic_bp(traffic) != steps[0]:
        raise BeastError(
            f"--traffic {traffic:g} disagrees with the rollout's first step "
            f"({percent(steps[0]):g}%): drop --traffic, or make them equal"
        )
    return steps[0]


# How a rollout ends with its test (the test's `Ending`).
_ROLLOUT_END: dict[Ending, RolloutState] = {
    "promoted on verdict": "completed",
    "forced": "completed",
    "auto-pulled": "rolled back",
    "aborted": "aborted",
}


def rollout_ended(rollout: Rollout, ending: Ending, now: str) -> Rollout:
    """The rollout of a test that ended with `ending` (one already over is left as it is)."""
    if rollout.state not in ("running", "paused"):
        return rollout
    return dataclasses.replace(rollout, state=_ROLLOUT_END[ending], updated_at=now)


def _rollout_of(state: LineState, test: Experiment) -> Rollout:
    _running(state, test)
    if test.rollout is None:
        raise Conflict(f"A/B test {test.name} has no rollout (it was started without --rollout)")
    return test.rollout


def plan_rollout_step(state: LineState, test: Experiment, now: str) -> tuple[Plan, Rollout]:
    """The candidate's share moves to the rollout's next step (the last, 100%, is a promotion:
    `plan_promote`, on the rollout's verdict); the rollout as it stands after."""
    rollout = _rollout_of(state, test)
    if rollout.state != "running":
        raise Conflict(f"the rollout of {test.name} is {rollout.state}: it does not advance")
    following = rollout.step + 1
    after = dataclasses.replace(rollout, step=following, step_since=now, updated_at=now)
    if rollout.steps[following] == BASIS_POINTS:
        done = dataclasses.replace(after, state="completed")
        return plan_promote(state, test, forced=False), done
    assert state.candidate is not None
    bp = rollout.steps[following]
    message = (
        f"rollout {test.name}: candidate {state.candidate.name} "
        f"{percent(state.candidate_bp):g}% → {percent(bp):g}% "
        f"(step {following + 1} of {len(rollout.steps)})"
    )
    return _same_test(state, test, "rollout_step", bp, message), after


def plan_rollout_hold(
    state: LineState, test: Experiment, *, pause: bool, now: str
) -> tuple[Plan, Rollout]:
    """Pause a running rollout (it stays at its share; the evaluator leaves it) or resume a
    paused one (its step begins again: samples and clock count from now)."""
    rollout = _rollout_of(state, test)
    wanted: RolloutState = "running" if pause else "paused"
    if rollout.state != wanted:
        verb = "pause" if pause else "resume"
        raise Conflict(f"cannot {verb} the rollout of {test.name}: it is {rollout.state}")
    assert state.candidate is not None
    if pause:
        after = dataclasses.replace(rollout, state="paused", updated_at=now)
        what = "paused"
    else:
        after = dataclasses.replace(rollout, state="running", step_since=now, updated_at=now)
        what = "resumed"
    message = (
        f"rollout {test.name} {what} at {percent(state.candidate_bp):g}% "
        f"(step {rollout.step + 1} of {len(rollout.steps)})"
    )
    action: Action = "rollout_pause" if pause else "rollout_resume"
    return _same_test(state, test, action, state.candidate_bp, message), after


def _same_test(state: LineState, test: Experiment, action: Action, bp: int, message: str) -> Plan:
    """A change within a running test: the same arms, the candidate at `bp`."""
    assert state.candidate is not None
    return Plan(
        action,
        state.production,
        state.candidate,
        bp,
        test.name,
        message,
        version=state.candidate.name,
        history_experiment=test.name,
    )


def undo_stack(entries: Iterable[HistoryEntry]) -> list[HistoryEntry]:
    """The forward changes of one line that a plain rollback can still undo, oldest first."""
    stack: list[HistoryEntry] = []

    def drop_test_start(test: str | None) -> None:
        stack[:] = [e for e in stack if not (e.action == "ab_start" and e.experiment == test)]

    for entry in entries:
        if entry.action in ("deploy", "ab_start"):
            stack.append(entry)
        elif entry.action == "promote":
            drop_test_start(entry.experiment)
            stack.append(entry)
        elif entry.action == "abort":
            drop_test_start(entry.experiment)
        elif entry.action == "rollback":
            drop_test_start(entry.experiment)  # the test it aborted, if one was running
            if entry.undoes:
                undone = set(entry.undoes)
                stack[:] = [e for e in stack if e.id not in undone]
            else:
                stack.append(entry)  # a jump to a version that never served
    return stack


@dataclass(frozen=True)
class RollbackTarget:
    production: str
    undoes: tuple[int, ...]


def rollback_target(
    state: LineState, stack: list[HistoryEntry], named: str | None
) -> RollbackTarget:
    """Where a rollback goes: the production before the newest change, or the named version."""
    if named is None:
        if not stack:
            raise BeastError(
                f"nothing to roll back on {state.line}: no earlier change is recorded "
                f"(production is {state.production.name})"
            )
        top = stack[-1]
        previous = top.from_state.production
        if previous is None:
            raise BeastError(
                f"nothing to go back to: {state.production.name} is the first production "
                f"of {state.line}"
            )
        return RollbackTarget(previous, (top.id,))
    if named == state.production.name and state.experiment is None:
        raise Conflict(f"{named} is already production of {state.line}")
    for depth in range(len(stack) - 1, -1, -1):
        if stack[depth].from_state.production == named:
            return RollbackTarget(named, tuple(e.id for e in stack[depth:]))
    return RollbackTarget(named, ())


def plan_rollback(state: LineState, target: VersionRef, undoes: tuple[int, ...]) -> Plan:
    if target.id != state.production.id and target.sha256 == state.production.sha256:
        raise Conflict(f"{target.name} is the same file as production {state.production.name}")
    parts = []
    if target.id != state.production.id:
        parts.append(f"production {state.production.name} → {target.name}")
    else:
        parts.append(f"production stays {target.name}")
    end: tuple[str, ExperimentStatus, str] | None = None
    if state.experiment and state.candidate is not None:
        parts.append(f"A/B test {state.experiment} aborted (candidate {state.candidate.name} → 0%)")
        end = (state.experiment, "aborted", "rolled back")
    return Plan(
        "rollback",
        target,
        None,
        0,
        None,
        "rolled back: " + "; ".join(parts),
        version=target.name,
        history_experiment=state.experiment,
        end_test=end,
        undoes=undoes,
        forced=False,
        ending="aborted" if end is not None else None,
    )
