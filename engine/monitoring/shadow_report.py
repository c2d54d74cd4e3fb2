"""A shadow's live verdict: its labelled pairs with production, compared request by request.

A shadow (`beast deploy … --shadow`) scores production's own requests, so each labelled
request carries both models' scores: the paired comparison (engine.monitoring.paired, the one
a replay uses too) decides on them. Only pairs answered by the line's current production
count (a shadow that outlives a deploy is compared with the production it now shadows).

The pairing is valid when the served prediction does not change the outcome it is labelled
with. A line that declares it does (`[lines.NAME] prediction_changes_outcome = true`) still
shows the paired figures here (marked not valid), and its A/B test keeps the test between
the served arms (`experiment_verdict` returns None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core.config import Config
from engine.core.records import Experiment, Shadow, percent
from engine.monitoring import abstats
from engine.store.base import Tx

if TYPE_CHECKING:
    from engine.monitoring import paired


@dataclass(frozen=True)
class ShadowReport:
    """A running shadow, what it scored, and its paired verdict against production."""

    shadow: Shadow
    production: str  # the production version it is compared with
    task: str
    comparison: paired.Comparison
    valid: bool  # False: the line declares its prediction changes the outcome

    @property
    def verdict(self) -> abstats.Verdict:
        return self.comparison.verdict

    def to_json(self) -> dict[str, Any]:
        """The shadow's figures ("verdict_detail" is added by the monitoring report)."""
        return {
            "line": self.shadow.line,
            "version": self.shadow.version,
            "production": self.production,
            "share": percent(self.shadow.share_bp),
            "scored": self.shadow.scored,
            "dropped": self.shadow.dropped,
            "labelled_pairs": self.comparison.n,
            "task": self.task,
            "metrics": {
                "production": self.comparison.control,
                "shadow": self.comparison.candidate,
            },
            "valid": self.valid,
            "verdict": self.verdict.outcome,
        }


def shadow_reports(tx: Tx, config: Config, model: str | None = None) -> tuple[ShadowReport, ...]:
    """Every running shadow (of `model`, or of every line) and its paired verdict."""
    found = []
    for shadow in tx.shadows.running(model):
        state = tx.deployments.state(shadow.line)
        if state is None:
            continue
        found.append(
            ShadowReport(
                shadow,
                state.production.name,
                config.line(shadow.line).task,
                _compare(tx, config, shadow, state.production.id),
                not config.line(shadow.line).prediction_changes_outcome,
            )
        )
    return tuple(found)


def experiment_verdict(
    tx: Tx,
    config: Config,
    experiment: Experiment,
    shadows: Sequence[ShadowReport] | None = None,
) -> abstats.Verdict | None:
    """The paired verdict of a running test whose candidate is also the line's shadow (its
    control is then the production the shadow scores beside); None when the test keeps its
    served-arm verdict: no such shadow, or the line's prediction changes the outcome.
    `shadows`: the running shadows' reports already read (`shadow_reports`), so their pairs
    are not read twice; without them the line's shadow is read here."""
    if config.line(experiment.line).prediction_changes_outcome:
        return None
    if shadows is not None:
        return next(
            (
                s.verdict
                for s in shadows
                if s.shadow.line == experiment.line and s.shadow.version == experiment.candidate
            ),
            None,
        )
    for shadow in tx.shadows.running(experiment.line):
        if shadow.version == experiment.candidate:
            control = tx.registry.get_version(experiment.line, experiment.control)
            return _compare(tx, config, shadow, control.id).verdict
    return None


def _compare(tx: Tx, config: Config, shadow: Shadow, control_id: int) -> paired.Comparison:
    # Here, not at import: every `beast monitor` asks for the running shadows, and a cold one
    # without any need not import the pairs' arithmetic (tests/test_monitoring.py pins it).
    from engine.monitoring import paired

    settings = config.line(shadow.line)
    candidate, control, actual = tx.shadows.pairs(shadow.id, control_id)
    return paired.compare(
        settings.task,
        candidate,
        control,
        actual,
        abstats.Rules.of(config),
        tolerance=settings.tolerance_points,
        threshold=settings.decision_threshold,
    )
