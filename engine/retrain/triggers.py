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

All three are plain SQL on one snapshot: the daemon's scheduler calls this every tick.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from engine.core.config import RetrainSettings
from engine.retrain import jobs

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


def last_training(conn: sqlite3.Connection, line: str) -> str | None:
    """UTC time of the last training: newest finished job, else production's registration."""
    finished = jobs.last_finished(conn, line)
    if finished is not None and finished.finished_at is not None:
        return finished.finished_at
    found = conn.execute(
        "SELECT a.registered_at FROM line_state s JOIN versions v ON v.id = s.production_id"
        " JOIN artifacts a ON a.id = v.artifact_id WHERE s.line = ?",
        (line,),
    ).fetchone()
    return str(found[0]) if found else None


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


def labelled_since(conn: sqlite3.Connection, line: str, since: str | None) -> int:
    """Labelled predictions made from the minute of `since` on, from the minute rollups and
    the hourly ones older minutes are compacted into (an hour that holds `since` counts)."""
    minute = 0 if since is None else int(_parse(since).timestamp()) // 60
    found = conn.execute(
        "SELECT coalesce(sum(r.labelled), 0) FROM rollups r JOIN versions v ON v.id = r.version_id"
        " WHERE v.line = ? AND r.minute >= ?",
        (line, minute),
    ).fetchone()
    total = int(found[0])
    hourly = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rollups_hourly'"
    ).fetchone()
    if hourly:
        total += int(
            conn.execute(
                "SELECT coalesce(sum(r.labelled), 0) FROM rollups_hourly r"
                " JOIN versions v ON v.id = r.version_id WHERE v.line = ? AND r.hour >= ?",
                (line, minute // 60),
            ).fetchone()[0]
        )
    return total


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


def health_trigger(conn: sqlite3.Connection, line: str) -> Trigger:
    production = conn.execute(
        "SELECT v.name FROM line_state s JOIN versions v ON v.id = s.production_id"
        " WHERE s.line = ?",
        (line,),
    ).fetchone()
    if production is None:
        return Trigger("health", None, "critical", False, "nothing deployed")
    alerts = conn.execute(
        "SELECT metric, message FROM alerts WHERE line = ? AND version = ?"
        " AND resolved_at IS NULL AND severity = 'critical' ORDER BY id",
        (line, production[0]),
    ).fetchall()
    if alerts:
        causes = "; ".join(str(a[1]) for a in alerts)
        return Trigger("health", "critical", "critical", True, f"{production[0]}: {causes}")
    return Trigger(
        "health", "not critical", "critical", False, f"{production[0]}: no critical alert"
    )


def evaluate(
    conn: sqlite3.Connection, line: str, settings: RetrainSettings, now: datetime | None = None
) -> TriggerReport:
    """Every trigger of a line, from one snapshot."""
    when = now or datetime.now(UTC)
    last = last_training(conn, line)
    found = (
        time_trigger(last, settings, when),
        data_trigger(labelled_since(conn, line, last), settings),
        health_trigger(conn, line),
    )
    running = jobs.active(conn, line)
    return TriggerReport(
        line,
        any(t.fires for t in found),
        found,
        last,
        running.id if running is not None else None,
    )
