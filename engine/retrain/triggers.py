"""Retraining triggers (seed: scripts/auto-retrain.js), OR-ed, from `config.toml [retrain]`.

- time: days since the last training ≥ `interval_days`. The last training is the newest
  finished job of the line (a failed attempt counts too, so a broken trainer is retried once
  per interval rather than on every scheduler tick); before any job, the registration time of
  the production artifact.
- data: labelled predictions made since the last training ≥ `min_new_samples` — counted from
  the per-minute rollups (never a scan of the prediction log), from the minute of the last
  training on.
- health: production has a firing critical alert (the monitoring evaluation keeps alerts
  current; reading them is one indexed query).

All three are indexed reads of one snapshot (a `Tx`): the daemon's scheduler calls this every
tick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from engine.core.config import RetrainSettings
from engine.store.base import Tx

DAY_S = 86_400.0


@dataclass(frozen=True)
class Trigger:
    """One trigger: its figure, the threshold it is held against, and whether it fires."""

    name: str  # time | data | health
    figure: float | str | None
    threshold: float | str
    fires: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class TriggerReport:
    """The triggers of one model line; `fires` when any of them does."""

    line: str
    fires: bool
    triggers: tuple[Trigger, ...]
    last_training: str | None
    active_job: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "line": self.line,
            "fires": self.fires,
            "last_training": self.last_training,
            "active_job": self.active_job,
            "triggers": [t.to_json() for t in self.triggers],
        }


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def last_training(tx: Tx, line: str) -> str | None:
    """UTC time of the last training: newest finished job, else production's registration."""
    finished = tx.jobs.last_finished(line)
    if finished is not None and finished.finished_at is not None:
        return finished.finished_at
    return tx.retrain_inputs.production_registered_at(line)


def time_trigger(last: str | None, settings: RetrainSettings, now: datetime) -> Trigger:
    if last is None:
        return Trigger(
            "time", None, settings.interval_days, False, "no training and nothing deployed yet"
        )
    days = (now - _parse(last)).total_seconds() / DAY_S
    fires = days >= settings.interval_days
    return Trigger(
        "time",
        round(days, 4),
        settings.interval_days,
        fires,
        f"{days:.2f} days since the last training (every {settings.interval_days:g})",
    )


def labelled_since(tx: Tx, line: str, since: str | None) -> int:
    """Labelled predictions made from the minute of `since` on, from the minute rollups and
    the hourly ones older minutes are compacted into (an hour that holds `since` counts)."""
    minute = 0 if since is None else int(_parse(since).timestamp()) // 60
    return tx.retrain_inputs.labelled_since(line, minute)


def data_trigger(count: int, settings: RetrainSettings) -> Trigger:
    fires = count >= settings.min_new_samples
    return Trigger(
        "data",
        float(count),
        float(settings.min_new_samples),
        fires,
        f"{count} new labelled predictions since the last training "
        f"(needs {settings.min_new_samples})",
    )


def health_trigger(tx: Tx, line: str) -> Trigger:
    state = tx.deployments.state(line)
    if state is None:
        return Trigger("health", None, "critical", False, "nothing deployed")
    production = state.production.name
    alerts = tx.retrain_inputs.critical_alerts(line, production)
    if alerts:
        causes = "; ".join(alerts)
        return Trigger("health", "critical", "critical", True, f"{production}: {causes}")
    return Trigger("health", "not critical", "critical", False, f"{production}: no critical alert")


def evaluate(
    tx: Tx, line: str, settings: RetrainSettings, now: datetime | None = None
) -> TriggerReport:
    """Every trigger of a line, from one snapshot."""
    when = now or datetime.now(UTC)
    last = last_training(tx, line)
    found = (
        time_trigger(last, settings, when),
        data_trigger(labelled_since(tx, line, last), settings),
        health_trigger(tx, line),
    )
    running = tx.jobs.active(line)
    return TriggerReport(
        line,
        any(t.fires for t in found),
        found,
        last,
        running.id if running is not None else None,
    )
