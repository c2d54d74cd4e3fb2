"""The evidence behind a change: the figures a rollback, promotion, abort or auto-pull was
decided on, taken from the one monitoring report the decision read.

`evidence_of` is pure: the facade (or the auto-pull) reads a `MonitorReport` once, builds the
evidence here, and the deploy service writes it with the change's history row, in the change's
transaction. A JSON object, full precision, no NaN (None instead): `beast history --json`,
deployments/history.json and the incident report carry it as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from engine.core import tasks

if TYPE_CHECKING:  # the report builds evidence of itself (auto-pull): no import back
    from engine.monitoring import rollups as metrics
    from engine.monitoring.report import ExperimentReport, MonitorReport, VersionReport

# What of an alert a reader needs to know why it fired (not its first/last seen times).
ALERT_FIELDS = ("id", "severity", "line", "version", "metric", "message", "value", "threshold")


def evidence_of(report: MonitorReport, line: str, *, test: str | None = None) -> dict[str, Any]:
    """The figures of `line` in `report`: its health, each serving version's health, findings
    and drift by feature, the alerts firing on it, and the verdict of `test` (or of the line's
    running test) with predictions and labelled predictions per arm."""
    versions = [v for v in report.versions if v.line == line]
    running = [e for e in report.experiments if e.experiment.line == line]
    chosen = next((e for e in running if e.experiment.name == test), None)
    if chosen is None and test is None and running:
        chosen = running[0]
    firing = [
        {key: safe(a.get(key)) for key in ALERT_FIELDS}
        for a in report.alerts
        if a["status"] == "firing" and a["line"] in (line, "*")
    ]
    return {
        "window": report.window,
        "generated_at": report.generated_at,
        "health": line_health(versions),
        "versions": [_version(v) for v in versions],
        "alerts": firing,
        "test": None if chosen is None else test_figures(chosen),
    }


def line_health(versions: Iterable[VersionReport]) -> str:
    """The worst health of some versions ("no data" for none): a line's in a change's
    evidence, a whole report's in `MonitorReport.health`."""
    order = {"no data": 0, "healthy": 1, "warning": 2, "critical": 3}
    return max((v.health for v in versions), key=order.__getitem__, default="no data")


def _version(v: VersionReport) -> dict[str, Any]:
    found = v.window.metrics(v.task)
    return {
        "version": v.version,
        "role": v.role,
        "health": v.health,
        "predictions": v.window.predictions,
        "labelled": v.window.labelled,
        "metric": v.primary,
        "value": safe(found.get(v.primary)),
        "findings": [
            {
                "metric": f.metric,
                "severity": f.severity,
                "value": safe(f.value),
                "threshold": safe(f.threshold),
                "message": f.message,
            }
            for f in v.findings
        ],
        "drift": safe(v.drift.to_json()),
    }


def test_figures(e: ExperimentReport) -> dict[str, Any]:
    """A test's verdict with what decided it: the metric, the difference with its always-valid
    interval (`lo`, `hi`) and p, the margin, whether it was paired, and per arm the
    predictions and labelled predictions (the same figures `beast monitor` shows)."""
    v = e.verdict
    return {
        "name": e.experiment.name,
        "verdict": v.outcome,
        "reason": v.reason,
        "metric": v.metric,
        "diff": safe(v.diff),
        "lo": safe(v.lo),
        "hi": safe(v.hi),
        "p": safe(v.p),
        "margin": v.margin,
        "paired": v.paired,
        "arms": {
            "control": _arm(e.experiment.control, e.control, e.task),
            "candidate": _arm(e.experiment.candidate, e.candidate, e.task),
        },
    }


def _arm(version: str, window: metrics.WindowMetrics, task: str) -> dict[str, Any]:
    primary = tasks.PRIMARY[task]
    return {
        "version": version,
        "predictions": window.predictions,
        "labelled": window.labelled,
        primary: safe(window.metrics(task).get(primary)),
    }


def safe(value: Any) -> Any:
    """`value` as JSON-able: NaN and infinities become None, containers are walked."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe(v) for v in value]
    return value
