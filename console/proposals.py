"""What a mutation would do, worded for the confirm dialog, and the call that does it.

Built from the `ConsoleData` on screen, never from a fresh read: the dialog names the state
the operator saw, and the call carries that state as an `Expect`, so a change made meanwhile
by anyone else is refused by the engine ("state changed, retry") rather than acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from console.data import ConsoleData
from console.format import percent
from console.gateway import Gateway
from engine import Experiment, ExperimentReport


@dataclass(frozen=True)
class Proposal:
    action: str
    title: str
    changes: tuple[str, ...]
    context: tuple[str, ...]
    run: Callable[[Gateway], Any]
    # The version that becomes production, when production changes: with type-to-confirm on,
    # the dialog asks for this name to be typed (CONSOLE.md: operators ask for it).
    new_production: str | None = None


@dataclass(frozen=True)
class DeployRequest:
    """What the deploy form asks for: a version, as production or as an A/B candidate."""

    line: str
    version: str
    share: int | None = None  # percent; None deploys as production at 100%
    test: str | None = None


class Refused(Exception):
    """The action does not apply to what is on screen; the message says why."""


def running_test(data: ConsoleData, line: str) -> Experiment | None:
    return next(
        (e for e in data.status.experiments if e.line == line and e.status == "running"), None
    )


def _test_report(data: ConsoleData, name: str) -> ExperimentReport | None:
    if data.report is None:
        return None
    return next((e for e in data.report.experiments if e.experiment.name == name), None)


def _verdict(data: ConsoleData, test: Experiment) -> str:
    found = _test_report(data, test.name)
    if found is None:
        return "unknown"
    return f"{found.verdict.outcome} ({found.verdict.reason})"


def _alerts(data: ConsoleData, line: str, limit: int = 3) -> tuple[str, ...]:
    if data.report is None:
        return ()
    firing = [a for a in data.report.alerts if a["status"] == "firing" and a["line"] == line]
    lines = [f"alert: {a['severity']} {a['version']} {a['message']}" for a in firing[:limit]]
    return tuple(lines) or ("alerts: none firing",)


def _traffic(data: ConsoleData, line: str) -> str:
    parts = [
        f"{d.version} {percent(d.traffic_bp)}" for d in data.status.deployments if d.line == line
    ]
    return "traffic now: " + (", ".join(parts) or "none")


def _production(data: ConsoleData, line: str) -> str:
    prod = data.production(line)
    if prod is None:
        raise Refused(f"nothing is deployed on {line}")
    return prod.version


def rollback(data: ConsoleData, line: str) -> Proposal:
    current = _production(data, line)
    target = data.rollback_to.get(line, "refused: unknown")
    if target.startswith("refused: "):
        raise Refused(target.removeprefix("refused: "))
    test = running_test(data, line)
    changes = [
        f"production {current} → {target} (100%)"
        if target != current
        else f"production stays {current} (100%)"
    ]
    if test is not None:
        changes.append(f"A/B test {test.name} ends (aborted): {test.candidate} → 0%")
    expect = data.expect(line)
    return Proposal(
        "rollback",
        f"Roll back {line}",
        tuple(changes),
        (_traffic(data, line), *_alerts(data, line)),
        lambda gw: gw.rollback(line, expect),
        target if target != current else None,
    )


def promote(data: ConsoleData, line: str) -> Proposal:
    current = _production(data, line)
    test = running_test(data, line)
    if test is None:
        raise Refused(f"no running A/B test on {line} to promote")
    found = _test_report(data, test.name)
    wins = found is not None and found.verdict.outcome == "candidate wins"
    context = [f"verdict: {_verdict(data, test)}", _traffic(data, line)]
    if not wins:
        context.insert(1, "the verdict is not 'candidate wins': recorded as a forced promotion")
    expect = data.expect(line)
    return Proposal(
        "promote",
        f"Promote {test.name} on {line}",
        (
            f"production {current} → {test.candidate} (100%)",
            f"A/B test {test.name} ends (promoted), alias ab-winner-{test.name}",
        ),
        (*context, *_alerts(data, line)),
        lambda gw: gw.promote(test.name, force=not wins, expect=expect),
        test.candidate,
    )


def abort(data: ConsoleData, line: str) -> Proposal:
    current = _production(data, line)
    test = running_test(data, line)
    if test is None:
        raise Refused(f"no running A/B test on {line} to abort")
    expect = data.expect(line)
    return Proposal(
        "abort",
        f"Abort A/B test {test.name} on {line}",
        (
            f"candidate {test.candidate} {percent(test.traffic_bp)} → 0%",
            f"production {current} → 100%",
        ),
        (f"verdict: {_verdict(data, test)}", _traffic(data, line), *_alerts(data, line)),
        lambda gw: gw.abort(test.name, expect),
    )


def retrain(data: ConsoleData, line: str) -> Proposal:
    current = data.production(line)
    return Proposal(
        "retrain",
        f"Retrain {line}",
        (
            "start a retraining job in a background worker process",
            "the new version is registered if valid; nothing is deployed",
        ),
        (f"production: {current.version if current else 'none'}", *_alerts(data, line)),
        lambda gw: gw.retrain(line),
    )


def deploy(data: ConsoleData, request: DeployRequest) -> Proposal:
    line, version = request.line, request.version
    current = data.production(line)
    before = current.version if current else "nothing"
    test = running_test(data, line)
    if test is not None:
        raise Refused(f"A/B test {test.name} is running on {line}: promote or abort it first")
    if request.share is None:
        changes: tuple[str, ...] = (f"production {before} → {version} (100%)",)
    else:
        if current is None:
            raise Refused(f"nothing is deployed on {line}: deploy a production first")
        changes = (
            f"A/B test {request.test}: candidate {version} at {request.share}%",
            f"production {before} {100 - request.share}%",
        )
    expect = data.expect(line)
    return Proposal(
        "deploy",
        f"Deploy {version} on {line}",
        changes,
        (_traffic(data, line), *_alerts(data, line)),
        lambda gw: gw.deploy(
            line, version, traffic=request.share, ab_test=request.test, expect=expect
        ),
        version if request.share is None and version != before else None,
    )


PROPOSERS: dict[str, Callable[[ConsoleData, str], Proposal]] = {
    "rollback": rollback,
    "promote": promote,
    "abort": abort,
    "retrain": retrain,
}
