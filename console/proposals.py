"""What a mutation would do, worded for the confirm dialog, and the call that does it.

Built from the `ConsoleData` on screen, never from a fresh read: the dialog names the state
the operator saw, and the call carries that state as an `Expect`, so a change made meanwhile
by anyone else is refused by the engine ("state changed, retry") rather than acted on.

The figures come from the report the panes draw (`ConsoleData.report`): the alerts firing
now as in the Alerts pane, and a test's verdict and arms as in the A/B pane. Each proposal
also carries the `beast …` arguments that do the same from a shell, with the same `--expect`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.data import ConsoleData
from console.format import p_value, percent, setting
from console.gateway import Gateway
from engine import Experiment, ExperimentReport, Workspace, sig

WORKSPACE_WIDE = "*"  # the line of an alert that is no line's (the prediction log's loss)


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
    # `beast` arguments that make the same change from a shell (`command_line` adds the rest).
    argv: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()  # the alerts firing now, as the Alerts pane shows them


@dataclass(frozen=True)
class DeployRequest:
    """What the deploy form asks for: a version, as production or as an A/B candidate."""

    line: str
    version: str
    share: int | None = None  # percent; None deploys as production at 100%
    test: str | None = None


class Refused(Exception):
    """The action does not apply to what is on screen; the message says why."""


def command_line(argv: Sequence[str], workspace: Path) -> str:
    """`beast ARGV`, quoted for a POSIX shell, with `--workspace` unless `workspace` is the
    one a bare `beast` would open here (`$BEAST_HOME`, else `./.beast-mode`)."""
    words = ["beast", *argv]
    if workspace.absolute() != Workspace.locate().root:
        words += ["--workspace", str(workspace.absolute())]
    return shlex.join(words)


def running_test(data: ConsoleData, line: str) -> Experiment | None:
    return next(
        (e for e in data.status.experiments if e.line == line and e.status == "running"), None
    )


def _test_report(data: ConsoleData, name: str) -> ExperimentReport | None:
    if data.report is None:
        return None
    return next((e for e in data.report.experiments if e.experiment.name == name), None)


def _verdict(data: ConsoleData, test: Experiment) -> tuple[str, ...]:
    """The verdict, per arm predictions and labelled predictions, and the difference with its
    always-valid interval and p (engine.monitoring.abstats)."""
    found = _test_report(data, test.name)
    if found is None:
        return ("verdict: unknown (no report for this test)",)
    v = found.verdict
    arms = tuple(
        f"  {arm} {version}: {count(window.predictions)} predictions, "
        f"{count(window.labelled)} labelled"
        for arm, version, window in (
            ("control", test.control, found.control),
            ("candidate", test.candidate, found.candidate),
        )
    )
    p = (
        f"  {v.metric} diff {sig(v.diff)} [{sig(v.lo)}, {sig(v.hi)}]"
        f" (always-valid 95%) · margin ±{setting(v.margin)} · p = {p_value(v.p)}"
    )
    return (f"verdict: {v.outcome} ({v.reason})", *arms, p)


def srm_block(data: ConsoleData, test: Experiment) -> str | None:
    """`promotion is blocked …` while the test's split mismatches its share (SRM) and no
    one has acknowledged it: the engine refuses the promotion until `beast alerts ack ID`
    (the firing srm alert's id, as the Alerts pane shows it)."""
    found = _test_report(data, test.name)
    srm = found.srm if found is not None else None
    if srm is None or not srm.mismatch or srm.acknowledged:
        return None
    alerts = data.report.alerts if data.report is not None else ()
    alert = next(
        (
            a
            for a in alerts
            if a["status"] == "firing" and a.get("metric") == "srm" and a["line"] == test.line
        ),
        None,
    )
    ack = f"beast alerts ack {alert['id']}" if alert is not None else "beast alerts ack ID"
    return (
        f"promotion is blocked: sample-ratio mismatch (SRM p = {p_value(srm.p)}, "
        f"{count(srm.control)} / {count(srm.candidate)} {srm.noun}) until `{ack}`"
    )


def count(n: int) -> str:
    """A count, whole and grouped (`1,653`)."""
    return f"{n:,}"


def firing_alerts(data: ConsoleData, line: str, limit: int = 3) -> tuple[str, ...]:
    """The alerts firing now that concern `line`: its own and the workspace-wide ones (the
    prediction log's loss is every line's), from the report the Alerts pane draws; and how
    many more fire on other lines."""
    if data.report is None:
        return ("alerts: unknown (monitoring could not be read)",)
    firing = [a for a in data.report.alerts if a["status"] == "firing"]
    here = [a for a in firing if a["line"] in (line, WORKSPACE_WIDE)]
    elsewhere = len(firing) - len(here)
    shown = [
        f"  {a['severity']} {'workspace' if a['line'] == WORKSPACE_WIDE else a['version']}: "
        f"{a['message']}"
        for a in here[:limit]
    ]
    if len(here) > limit:
        shown.append(f"  … and {len(here) - limit} more (Alerts pane)")
    other = f"; {elsewhere} on other lines" if elsewhere else ""
    head = f"alerts firing now: {len(here)} on {line} or workspace-wide{other}"
    if not firing:
        head = "alerts firing now: none"
    return (head, *shown)


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


def _expect_args(data: ConsoleData, line: str) -> tuple[str, ...]:
    """`--expect` and `--expect-revision` of what the dialog shows (as `data.expect`)."""
    expect = data.expect(line)
    words: tuple[str, ...] = ()
    if expect.production is not None:
        words += ("--expect", expect.production)
    if expect.revision is not None:
        words += ("--expect-revision", str(expect.revision))
    return words


def _model_args(data: ConsoleData, line: str) -> tuple[str, ...]:
    """`--model LINE`, needed when the workspace has more than one line."""
    return ("--model", line) if len(data.status.lines) > 1 else ()


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
    context = [_traffic(data, line)]
    if test is not None:
        changes.append(f"A/B test {test.name} ends (aborted): {test.candidate} → 0%")
        context += _verdict(data, test)
    expect = data.expect(line)
    return Proposal(
        "rollback",
        f"Roll back {line}",
        tuple(changes),
        tuple(context),
        lambda gw: gw.rollback(line, expect),
        target if target != current else None,
        ("rollback", *_model_args(data, line), *_expect_args(data, line)),
        firing_alerts(data, line),
    )


def promote(data: ConsoleData, line: str) -> Proposal:
    current = _production(data, line)
    test = running_test(data, line)
    if test is None:
        raise Refused(f"no running A/B test on {line} to promote")
    found = _test_report(data, test.name)
    wins = found is not None and found.verdict.outcome == "candidate wins"
    context = [*_verdict(data, test), _traffic(data, line)]
    if not wins:
        context.insert(1, "the verdict is not 'candidate wins': recorded as a forced promotion")
    blocked = srm_block(data, test)
    if blocked is not None:
        context.insert(0, blocked)
    expect = data.expect(line)
    force = () if wins else ("--force",)
    return Proposal(
        "promote",
        f"Promote {test.name} on {line}",
        (
            f"production {current} → {test.candidate} (100%)",
            f"A/B test {test.name} ends (promoted), alias ab-winner-{test.name}",
        ),
        tuple(context),
        lambda gw: gw.promote(test.name, force=not wins, expect=expect),
        test.candidate,
        ("promote", test.name, *force, *_expect_args(data, line)),
        firing_alerts(data, line),
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
        (*_verdict(data, test), _traffic(data, line)),
        lambda gw: gw.abort(test.name, expect),
        argv=("abort", test.name, *_expect_args(data, line)),
        alerts=firing_alerts(data, line),
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
        (f"production: {current.version if current else 'none'}",),
        lambda gw: gw.retrain(line),
        # --detach: like the console, start the job and return (`beast jobs ID` follows it).
        argv=("retrain", "--force", "--detach", *_model_args(data, line)),
        alerts=firing_alerts(data, line),
    )


def deploy(data: ConsoleData, request: DeployRequest) -> Proposal:
    line, version = request.line, request.version
    current = data.production(line)
    before = current.version if current else "nothing"
    test = running_test(data, line)
    if test is not None:
        raise Refused(f"A/B test {test.name} is running on {line}: promote or abort it first")
    argv: tuple[str, ...] = ("deploy", "--version", version, *_model_args(data, line))
    if request.share is None:
        changes: tuple[str, ...] = (f"production {before} → {version} (100%)",)
    else:
        if current is None:
            raise Refused(f"nothing is deployed on {line}: deploy a production first")
        changes = (
            f"A/B test {request.test}: candidate {version} at {request.share}%",
            f"production {before} {100 - request.share}%",
        )
        argv += ("--traffic", str(request.share), "--ab-test", str(request.test))
    expect = data.expect(line)
    return Proposal(
        "deploy",
        f"Deploy {version} on {line}",
        changes,
        (_traffic(data, line),),
        lambda gw: gw.deploy(
            line, version, traffic=request.share, ab_test=request.test, expect=expect
        ),
        version if request.share is None and version != before else None,
        (*argv, *_expect_args(data, line)),
        firing_alerts(data, line),
    )


PROPOSERS: dict[str, Callable[[ConsoleData, str], Proposal]] = {
    "rollback": rollback,
    "promote": promote,
    "abort": abort,
    "retrain": retrain,
}
