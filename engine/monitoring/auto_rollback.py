"""Automatic rollback: the guide's "Automatic Rollback", opt-in (`[rollback] automatic = true`).

When a line's production turns critical (its `VersionReport.health`, from the report the
evaluation read) within `[rollback] watch_minutes` of the last change of production (a deploy,
promotion or rollback that changed it: `LineState.production_since`), the evaluation rolls the
line back to the previous production — the rollback the deploy service would do by hand
(its undo stack picks the target), recorded with the report's evidence and the actor
`AUTO_ROLLBACK_ACTOR`. Never a flip-flop:

- once: when the change that made the current production was itself an automatic rollback,
  nothing is done (a person decides what comes next);
- not into something as bad: the previous production is judged on its own predictions over the
  `watch_minutes` before the change, by the same thresholds (`report.assess`: error rate over
  its alert line, primary metric surely under its alert line); drift is not judged there — it
  is the data's, which a rollback does not change. Critical there: no rollback. Too few
  predictions to judge ("no data") is not critical;
- against the state it read: the rollback expects the line's revision it judged, so a change
  made meanwhile (by a person, another engine) wins and nothing is done.

The module decides and calls the `Rollback` it is given (the facade's `Engine.rollback`); it
never imports the deploy service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from engine.core import text
from engine.core.config import Config
from engine.core.errors import BeastError
from engine.core.records import Change, Expect, HistoryEntry, LineState
from engine.monitoring import evidence
from engine.monitoring import rollups as metrics
from engine.store.base import Store

if TYPE_CHECKING:  # the report calls this module: no import back
    from engine.monitoring.report import Finding, MonitorReport, VersionReport

AUTO_ROLLBACK_ACTOR = "beast-engine (auto-rollback)"


class Rollback(Protocol):
    """Rolls a line back (the facade's `Engine.rollback`), recorded with `evidence`."""

    def __call__(
        self,
        version: str | None = None,
        *,
        model: str | None = None,
        note: str | None = None,
        expect: Expect | None = None,
        actor: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> Change: ...


class Target(Protocol):
    """The production a rollback of `model` would go to now (BeastError: none)."""

    def __call__(self, version: str | None = None, *, model: str | None = None) -> str: ...


# A window's health by the thresholds, and its findings (report.assess without drift).
Judge = Callable[[metrics.WindowMetrics, str], "tuple[str, tuple[Finding, ...]]"]


@dataclass(frozen=True)
class Due:
    """A line to roll back: its production, the change that made it, where it goes."""

    line: str
    production: str
    revision: int
    changed_minute: int


def run(
    store: Store,
    config: Config,
    report: MonitorReport,
    *,
    rollback: Rollback,
    target: Target,
    judge: Judge,
    now: datetime | None = None,
) -> list[str]:
    """Roll back each line whose production turned critical within the watch window (the
    module's docstring); what was done, one message per rollback."""
    settings = config.rollback
    if not settings.automatic_rollback:
        return []
    at = now or datetime.now(UTC)
    done = []
    for version in report.versions:
        if version.role != "production" or version.health != "critical":
            continue
        due = _due(store, version, settings.rollback_watch_minutes, at)
        if due is None:
            continue
        try:
            previous = target(model=due.line)
        except BeastError:  # nothing to go back to
            continue
        if _previous_critical(store, config, due, previous, judge):
            continue
        why = "; ".join(f.message for f in version.findings if f.severity == "critical")
        note = text.escape(
            f"auto-rollback: {due.production} critical within "
            f"{settings.rollback_watch_minutes:g} min of becoming production ({why})"
        )[: text.MAX_NOTE_CHARS]
        try:
            change = rollback(
                model=due.line,
                note=note,
                expect=Expect(revision=due.revision),
                actor=AUTO_ROLLBACK_ACTOR,
                evidence=evidence.evidence_of(report, due.line),
            )
        except BeastError:  # the line moved on meanwhile: what was judged no longer serves
            continue
        done.append(f"auto-rollback: {change.message}")
    return done


def _due(store: Store, version: VersionReport, watch_minutes: float, now: datetime) -> Due | None:
    """The line of a critical production, if its last change of production is within the
    watch window and was not an automatic rollback."""
    with store.read() as tx:
        state = tx.deployments.state(version.line)
        if state is None or state.production.name != version.version:
            return None
        since = _parse(state.production_since)
        if now - since > timedelta(minutes=watch_minutes):
            return None
        made = _made_production(tx.history.entries(version.line), state)
    if made is None or made.actor == AUTO_ROLLBACK_ACTOR:
        return None
    return Due(state.line, state.production.name, state.revision, int(since.timestamp() // 60))


def _made_production(entries: list[HistoryEntry], state: LineState) -> HistoryEntry | None:
    """The newest history row that changed the line's production to what serves now."""
    for entry in reversed(entries):
        if entry.from_state.production != entry.to_state.production:
            return entry if entry.to_state.production == state.production.name else None
    return None


def _previous_critical(store: Store, config: Config, due: Due, previous: str, judge: Judge) -> bool:
    """Whether `previous` was critical over its own predictions in the watch window before
    the change (the thresholds of `judge`; drift left out)."""
    start = due.changed_minute - max(1, round(config.rollback.rollback_watch_minutes))
    with store.read() as tx:
        ref = tx.registry.get_version(due.line, previous)
        window = metrics.load(tx, ref.id, since_minute=start).between(start, due.changed_minute)
    health, _ = judge(window, config.line(due.line).task)
    return health == "critical"


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))
