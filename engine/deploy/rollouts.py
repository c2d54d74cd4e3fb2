"""The rollout service: the leader's evaluator judges each running rollout's step and applies
the decision — the next share (or, at the last, the promotion), or the auto-pull.

It reads the step's figures from the test's own minute rollups since the step began (one
read transaction), asks the pure gates (engine.deploy.rollout_gates), and applies the change
through the deploy service (one write transaction with its history row and its evidence: the
line's figures from the monitoring report the decision read, and every gate's outcome).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.core import text
from engine.core.clock import ms_of
from engine.core.config import Config
from engine.core.errors import Conflict
from engine.core.records import Experiment, Rollout
from engine.deploy import rollout_gates as gates
from engine.deploy.service import Deployments, Judged
from engine.monitoring import evidence as evidence_mod
from engine.monitoring import rollups as metrics
from engine.monitoring import srm
from engine.monitoring.report import Abort, ExperimentReport, MonitorReport
from engine.store.base import Store, Tx

log = logging.getLogger("beast.rollout")

ROLLOUT_ACTOR = "beast-engine (rollout)"


@dataclass(frozen=True)
class Rollouts:
    """Judges and moves the running rollouts of one store."""

    store: Store
    config: Config
    deployments: Deployments  # acting as ROLLOUT_ACTOR
    abort: Abort

    def evaluate(self, report: MonitorReport) -> list[str]:
        """One evaluation of every running rollout in `report`: a message per change made."""
        settings = gates.GateSettings.of(self.config)
        actions = []
        for found in report.experiments:
            rollout = found.experiment.rollout
            if rollout is None or rollout.state != "running":
                continue
            with self.store.read() as tx:
                figures = step_figures(tx, self.config, found, rollout)
            figures = with_health(figures, report, found.experiment)
            decision = gates.judge_step(figures, settings)
            if decision.decision == "hold":
                continue
            try:
                actions.append(self._apply(report, found, rollout, decision))
            except Conflict as e:  # paused, ended or moved meanwhile: judged next round
                log.warning("rollout %s: not applied: %s", found.experiment.name, e)
        return actions

    def _apply(
        self,
        report: MonitorReport,
        found: ExperimentReport,
        rollout: Rollout,
        decision: gates.StepDecision,
    ) -> str:
        test = found.experiment
        evidence = rollout_evidence(report, test, rollout, decision)
        if decision.decision == "advance":
            verdict = found.verdict
            judged = Judged(verdict.outcome, verdict.reason, evidence)
            return self.deployments.rollout_step(test, judged, rollout, note=None).message
        note = text.escape(f"rollout gate failed: {decision.reason}")[: text.MAX_NOTE_CHARS]
        return self.abort(
            test.name,
            note=note,
            reason="auto-pulled: rollout gate failed",
            actor=ROLLOUT_ACTOR,
            evidence=evidence,
            pulled=True,
        ).message


def step_figures(
    tx: Tx, config: Config, found: ExperimentReport, rollout: Rollout
) -> gates.StepFigures:
    """The figures of the step `rollout` is at: its labelled samples from the log since it
    began, its health from the test's own rollups since that minute, its split in the units
    it assigned when its requests look mismatched (engine.monitoring.srm)."""
    test = found.experiment
    began_ms = ms_of(rollout.step_since)
    began = began_ms // 60_000
    # After a share changed, its first minute holds predictions at the old share too.
    split_from = began if rollout.step == 0 else began + 1
    arms = []
    for name in (test.control, test.candidate):
        version = tx.registry.get_version(test.line, name)
        rollups = metrics.load(tx, version.id, since_minute=began, experiment=test.name)
        arms.append((rollups.window(began), rollups.window(split_from)))
    (control, control_split), (candidate, candidate_split) = arms
    # A step's samples are its own: labelled predictions served since it began, to the
    # millisecond. The minute rollups would count the minute's earlier rows at the old share
    # too — 50 requests a second put a step's 200 labels in that one minute, and the demo's
    # rollout passed two steps on the same rows.
    labelled = tx.predictions.labelled_since(test.name, began_ms)
    share_bp = rollout.steps[rollout.step]
    served = (control_split.predictions, candidate_split.predictions)
    split = srm.check(tx, config, test, since_minute=split_from, share_bp=share_bp, served=served)
    counted = served if split is None else (split.control, split.candidate)
    return gates.StepFigures(
        control=_arm(control, labelled[0]),
        candidate=_arm(candidate, labelled[1]),
        split_control=counted[0],
        split_candidate=counted[1],
        split_unit="prediction" if split is None else split.unit,
        share_bp=share_bp,
        minutes=(time.time() * 1000 - began_ms) / 60_000,
        verdict=found.verdict,
    )


def with_health(
    figures: gates.StepFigures, report: MonitorReport, test: Experiment
) -> gates.StepFigures:
    """`figures` with the candidate's health from `report`, and what made it critical."""
    for v in report.versions:
        if v.line == test.line and v.version == test.candidate and v.role == "candidate":
            why = "; ".join(f.message for f in v.findings if f.severity == "critical")
            return dataclasses.replace(figures, health=v.health, critical=why)
    return figures


def _arm(window: metrics.WindowMetrics, labelled: int) -> gates.ArmStep:
    return gates.ArmStep(
        window.predictions,
        window.errors,
        labelled,
        window.latency_ms()["p99"],
        tuple(int(c) for c in window.latency_hist),
    )


def rollout_evidence(
    report: MonitorReport, test: Experiment, rollout: Rollout, decision: gates.StepDecision
) -> Mapping[str, Any]:
    """The line's figures from `report` and the step's gates, kept with the history row."""
    return {
        **evidence_mod.evidence_of(report, test.line, test=test.name),
        "rollout": {**rollout.to_json(), **evidence_mod.safe(decision.to_json())},
    }
