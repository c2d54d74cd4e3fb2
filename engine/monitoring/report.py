"""Health, drift, alerts and A/B verdicts: the seed's "Monitoring", made real.

The `Monitoring` service (over a Store, a Config and the models directory; the facade's
`Engine.report` and `Engine.monitoring`) reads, in one transaction (`read`), the rollups of
every deployed version and judges it against config.toml's thresholds. `evaluate` also
writes: it syncs the alerts table (one firing row per version and metric, deduplicated while
it fires, resolved when it clears) and pulls a running test's candidate to 0% when its health
is critical — once, recorded in history like any abort.

Below `monitoring.min_samples` predictions a version is "no data"; its primary metric (and
model drift) waits for `monitoring.min_labelled` labelled predictions ("not enough labelled
data (n of N)", `VersionReport.waiting`) and is critical only when its 95% upper bound is
under the alert line: never an alarm on a handful of labels. Data drift asks for more: PSI
over fewer values than `drift.min_samples` (360 for ten bins) is mostly sampling noise.
Every finding's message names the n it was judged over.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.core import tasks, text
from engine.core.clock import utc_now
from engine.core.config import Config
from engine.core.records import BASIS_POINTS, Change, Experiment, LineState
from engine.monitoring import (
    abstats,
    artifact_alerts,
    baselines,
    drift,
    evidence,
    shadow_report,
    srm,
)
from engine.monitoring import rollups as metrics
from engine.monitoring.srm import SrmCheck
from engine.store.base import Store, Tx

if TYPE_CHECKING:
    from engine.monitoring import auto_rollback

AUTO_PULL_ACTOR = "beast-engine (auto-pull)"
# A version without baseline metrics (no reference file, no training lineage) is measured
# against its own first labelled predictions since deployment, once it has this many: enough
# that an accuracy or AUC is within about ±0.05 (one standard error ≤ 0.035).
FIRST_LABELLED = 200
SEVERITY = {"healthy": 0, "no data": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Finding:
    metric: str
    severity: str  # "warning" | "critical"
    value: float
    threshold: float
    message: str


@dataclass(frozen=True)
class DriftSummary:
    model: float | None  # relative degradation against the version's baseline
    data: float | None  # worst feature PSI
    score_psi: float | None
    features: tuple[drift.FeatureDrift, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": _r(self.model),
            "data": _r(self.data),
            "score_psi": _r(self.score_psi),
            "features": [
                {"name": f.name, "psi": _r(f.psi), "ks": _r(f.ks), "level": f.level}
                for f in self.features
            ],
        }


@dataclass(frozen=True)
class BaselineSource:
    """Where the figures a version's drift is measured against came from.

    `source`: the metrics' ("reference", "training", "first_labelled", or None while there
    are none), `detail` says which (a reference file, or why there is none); `reference`: the
    drift reference's source (data drift), None without one.
    """

    source: str | None
    detail: str | None
    reference: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "detail": self.detail, "reference": self.reference}


@dataclass(frozen=True)
class VersionReport:
    line: str
    version: str
    role: str
    traffic_bp: int
    since: str
    health: str
    window: metrics.WindowMetrics
    windows: dict[str, metrics.WindowMetrics]
    drift: DriftSummary
    findings: tuple[Finding, ...]
    series: tuple[metrics.MinutePoint, ...] = field(default=(), repr=False)
    task: str = tasks.REGRESSION
    baseline: BaselineSource = BaselineSource(None, None)
    # Why the primary metric is not judged yet: "accuracy: not enough labelled data (40 of
    # 200)"; None once it is (`labelled_wait`).
    waiting: str | None = None

    @property
    def primary(self) -> str:
        """The line's primary metric (engine.core.tasks.PRIMARY)."""
        return tasks.PRIMARY[self.task]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "line": self.line,
            "version": self.version,
            "task": self.task,
            "role": self.role,
            "traffic": self.traffic_bp / 100,
            "since": self.since,
            **self.window.to_json(self.task),
            "drift": self.drift.to_json(),
            "baseline": self.baseline.to_json(),
            "waiting": self.waiting,
            "health": self.health,
            "findings": [f.__dict__ for f in self.findings],
            "windows": {k: w.to_json(self.task) for k, w in self.windows.items()},
        }
        return out


@dataclass(frozen=True)
class IntervalPoint:
    """The verdict's interval as it stood at the end of one minute of the test."""

    minute: int  # minutes since the epoch
    diff: float
    lo: float
    hi: float

    def to_json(self) -> dict[str, Any]:
        return {"minute": self.minute, "diff": _r(self.diff), "lo": _r(self.lo), "hi": _r(self.hi)}


@dataclass(frozen=True)
class ExperimentReport:
    experiment: Experiment
    control: metrics.WindowMetrics
    candidate: metrics.WindowMetrics
    verdict: abstats.Verdict
    task: str = tasks.REGRESSION
    # The interval minute by minute since the test began (the console draws it narrowing).
    interval: tuple[IntervalPoint, ...] = ()
    srm: SrmCheck | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.experiment.to_json(),
            "task": self.task,
            "arms": {
                "control": self.control.to_json(self.task),
                "candidate": self.candidate.to_json(self.task),
            },
            "verdict": self.verdict.outcome,
            "verdict_detail": verdict_detail(self.verdict, self.task),
            "interval": [point.to_json() for point in self.interval],
            "srm": None if self.srm is None else self.srm.to_json(),
        }


@dataclass(frozen=True)
class MonitorReport:
    window: str
    generated_at: str
    versions: tuple[VersionReport, ...]
    alerts: tuple[dict[str, Any], ...]
    experiments: tuple[ExperimentReport, ...]
    actions: tuple[str, ...] = ()
    feedback_pending: int = 0  # early feedback waiting for its prediction's row
    feedback_unmatched: int = 0  # feedback whose prediction never reached the log (labels)
    shadows: tuple[shadow_report.ShadowReport, ...] = ()  # running shadows, paired verdicts

    @property
    def health(self) -> str:
        """The worst health of what serves (a change's evidence judges a line by the same rule)."""
        return evidence.line_health(self.versions)

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "generated_at": self.generated_at,
            "health": self.health,
            "versions": [v.to_json() for v in self.versions],
            "alerts": list(self.alerts),
            "experiments": [e.to_json() for e in self.experiments],
            "actions": list(self.actions),
            "feedback": {"pending": self.feedback_pending, "unmatched": self.feedback_unmatched},
            "shadows": [
                {**s.to_json(), "verdict_detail": verdict_detail(s.verdict, s.task)}
                for s in self.shadows
            ],
        }


def verdict_detail(v: abstats.Verdict, task: str) -> dict[str, Any]:
    """A verdict's figures as JSON: the primary metric's difference (candidate − control),
    its always-valid interval and p, the margin, n per arm; a regression line's MAE guard."""
    out: dict[str, Any] = {
        "metric": v.metric,
        "diff": _r(v.diff),
        "lo": _r(v.lo),
        "hi": _r(v.hi),
        "p": _r(v.p),
        "margin": v.margin,
        "paired": v.paired,
        "n": {"control": v.n_control, "candidate": v.n_candidate},
    }
    if task != tasks.BINARY:
        out.update(mae_diff=_r(v.mae_diff), mae_lo=_r(v.mae_lo), mae_hi=_r(v.mae_hi))
    out["reason"] = v.reason
    return out


def _r(value: float | None) -> float | None:
    """A figure for JSON: full precision (screens round for people), None for NaN."""
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def now_minute() -> int:
    return int(time.time() // 60)


def minute_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() // 60)


def _since(window: str, deployed_since: str) -> int | None:
    if window not in metrics.WINDOWS:
        raise ValueError(f"unknown window {window!r} (use {', '.join(metrics.WINDOWS)})")
    span = metrics.WINDOWS[window]
    deployed = minute_of(deployed_since) if deployed_since else None
    start = metrics.window_start(span, now_minute())  # 24h: whole hours (metrics' docstring)
    if start is None:
        return deployed
    return max(start, deployed) if deployed is not None else start


def data_drift(
    reference: baselines.VersionReference | None, window: metrics.WindowMetrics, min_samples: int
) -> tuple[float | None, float | None, tuple[drift.FeatureDrift, ...]]:
    if reference is None or window.feature_hist is None:
        return None, None, ()
    enough = max(
        min_samples, drift.min_samples(reference.features), drift.min_samples(reference.score)
    )
    if window.drift_n < enough:
        return None, None, ()
    per_feature = reference.split(window.feature_hist.astype(float))
    found = sorted(
        (
            drift.FeatureDrift(
                name,
                psi := drift.psi_from_counts(reference.features.shares[j], per_feature[j]),
                drift.ks_from_counts(reference.features.shares[j], per_feature[j]),
                drift.level(psi),
            )
            for j, name in enumerate(reference.features.names)
        ),
        key=lambda d: d.psi,
        reverse=True,
    )
    score_psi = None
    if window.score_hist is not None:
        score_psi = drift.psi_from_counts(
            reference.score.shares[0], window.score_hist.astype(float)
        )
    return (found[0].psi if found else None), score_psi, tuple(found[:5])


def model_drift(
    window: metrics.WindowMetrics, task: str, baseline: Mapping[str, float], min_labelled: int
) -> float | None:
    """The seed's "model drift": relative degradation of the line's primary metric (and, on
    a regression line, MAE) against the version's baseline metrics; the worse of the two.
    None below `min_labelled` labelled predictions ([monitoring] min_labelled): a drop
    measured on a handful of labels is noise, never an alarm."""
    if window.labelled < min_labelled:
        return None
    keys = [tasks.PRIMARY[task]] + (["mae"] if task == tasks.REGRESSION else [])
    found = window.metrics(task)
    drops = []
    for key in keys:
        base, live = baseline.get(key), found.get(key)
        if not base or live is None:
            continue
        drop = (live - base) / base if key in tasks.LOWER_IS_BETTER else (base - live) / base
        drops.append(drop)
    return max(drops) if drops else None


# A primary metric under its alert line is critical (a candidate is pulled on it) only when
# its one-sided 95% upper confidence bound is under the line too: accuracy 0.74 over 300
# labels (bound 0.782) may well be a 0.76 model; over 10,000 (bound 0.747) it is not.
Z_ONE_SIDED_95 = 1.645


def upper_bound(window: metrics.WindowMetrics, key: str, value: float) -> float:
    """The one-sided 95% upper confidence bound of the primary metric `key` ("accuracy", a
    proportion: its normal bound; "auc": Hanley & McNeil's standard error)."""
    n = window.labelled
    if key == "auc":
        negatives = n - window.actual_pos
        if window.actual_pos < 1 or negatives < 1:
            return math.inf
        se = abstats.hanley_mcneil_se(value, window.actual_pos, negatives)
    else:
        se = math.sqrt(max(value * (1 - value), 0.0) / n) if n else math.inf
    return value + Z_ONE_SIDED_95 * se


def labelled_wait(window: metrics.WindowMetrics, config: Config, task: str) -> str | None:
    """What the line's primary metric says while it waits for labels, for those who show it:
    "accuracy: not enough labelled data (40 of 200)"; None once it is judged."""
    least = config.monitoring.min_labelled
    if window.labelled >= least:
        return None
    return f"{tasks.PRIMARY[task]}: not enough labelled data ({window.labelled:,} of {least:,})"


def _primary_finding(window: metrics.WindowMetrics, config: Config, task: str) -> Finding | None:
    """The line's primary metric judged: nothing below [monitoring] min_labelled labelled
    predictions ("not enough labelled data", never an alarm); under its min line a warning;
    critical only when surely under its alert line (`upper_bound`)."""
    t, least = config.thresholds, config.monitoring.min_labelled
    key = tasks.PRIMARY[task]
    value = window.metrics(task)[key]
    if window.labelled < least or value is None:
        return None
    low, alert = (t.auc_min, t.auc_alert) if key == "auc" else (t.accuracy_min, t.accuracy_alert)
    over = f"over {window.labelled:,} labelled"
    bound = upper_bound(window, key, value)
    if bound < alert:
        why = f"{key} {value:.3f} < {alert:g} (alert; 95% upper bound {bound:.3f}) {over}"
        return Finding(key, "critical", value, alert, why)
    if value < low:
        return Finding(key, "warning", value, low, f"{key} {value:.3f} < {low:g} (min) {over}")
    return None


def assess(
    window: metrics.WindowMetrics,
    summary: DriftSummary,
    config: Config,
    task: str = tasks.REGRESSION,
) -> tuple[str, tuple[Finding, ...]]:
    """Health from the thresholds (seed: accuracy and errors critical; latency, drift warn).
    A binary line's primary metric is AUC: [thresholds] auc's min warns, its alert is
    critical, in place of accuracy's. Each message names what it was measured over."""
    t = config.thresholds
    if window.predictions < config.monitoring.min_samples:
        return "no data", ()
    out: list[Finding] = []
    primary = _primary_finding(window, config, task)
    if primary is not None:
        out.append(primary)
    served = f"over {window.predictions:,} predictions"
    rate = window.error_rate or 0.0
    if rate > t.error_rate_alert:
        out.append(
            Finding(
                "error_rate",
                "critical",
                rate,
                t.error_rate_alert,
                f"error rate {rate:.3f} > {t.error_rate_alert:g} (alert) {served}",
            )
        )
    elif rate > t.error_rate_max:
        out.append(
            Finding(
                "error_rate",
                "warning",
                rate,
                t.error_rate_max,
                f"error rate {rate:.3f} > {t.error_rate_max:g} (max) {served}",
            )
        )
    p95 = window.latency_ms()["p95"]
    if p95 is not None and p95 > t.latency_max_ms:
        limit = t.latency_alert_ms if p95 > t.latency_alert_ms else t.latency_max_ms
        kind = "alert" if p95 > t.latency_alert_ms else "max"
        out.append(
            Finding(
                "latency_p95",
                "warning",
                p95,
                limit,
                f"p95 latency {p95:.1f} ms > {limit:g} ms ({kind}) {served}",
            )
        )
    if summary.model is not None and summary.model > t.drift_threshold:
        out.append(
            Finding(
                "model_drift",
                "warning",
                summary.model,
                t.drift_threshold,
                f"model drift {summary.model:.1%} > {t.drift_threshold:.0%} of baseline "
                f"over {window.labelled:,} labelled",
            )
        )
    if summary.data is not None and summary.data >= drift.PSI_WARNING:
        severity = "critical" if summary.data >= drift.PSI_CRITICAL else "warning"
        limit = drift.PSI_CRITICAL if severity == "critical" else drift.PSI_WARNING
        top = summary.features[0].name if summary.features else "?"
        out.append(
            Finding(
                "data_drift",
                severity,
                summary.data,
                limit,
                f"data drift PSI {summary.data:.2f} ≥ {limit:g} (worst: {top}) "
                f"over {window.drift_n:,} rows",
            )
        )
    worst = max((SEVERITY[f.severity] for f in out), default=0)
    return ("healthy", "warning", "critical")[worst], tuple(out)


def _version_report(
    tx: Tx, config: Config, state: LineState, role: str, window: str
) -> VersionReport:
    ref = state.production if role == "production" else state.candidate
    assert ref is not None
    since = state.production_since if role == "production" else (state.candidate_since or "")
    traffic = BASIS_POINTS - state.candidate_bp if role == "production" else state.candidate_bp
    task = config.line(state.line).task
    deployed = minute_of(since) if since else None
    rollups = metrics.load(tx, ref.id, since_minute=deployed)
    windows = {name: rollups.window(_since(name, since)) for name in metrics.WINDOWS}
    chosen = windows[window]
    baseline = baselines.for_version(tx, ref.id)
    reference = baseline.reference if baseline is not None else None
    base_metrics, source = _baseline_metrics(baseline, rollups, task)
    minimum = config.monitoring.min_samples
    worst_psi, score_psi, top = data_drift(reference, chosen, minimum)
    summary = DriftSummary(
        model_drift(chosen, task, base_metrics, config.monitoring.min_labelled),
        worst_psi,
        score_psi,
        top,
    )
    health, findings = assess(chosen, summary, config, task)
    return VersionReport(
        state.line,
        ref.name,
        role,
        traffic,
        since,
        health,
        chosen,
        windows,
        summary,
        findings,
        tuple(rollups.series(now_minute() - 59, task)),
        task,
        source,
        labelled_wait(chosen, config, task),
    )


def _baseline_metrics(
    baseline: baselines.VersionBaseline | None, rollups: metrics.VersionRollups, task: str
) -> tuple[Mapping[str, float], BaselineSource]:
    """The metrics model drift is measured against, and where they came from: the baseline's
    (a reference file, training), else the version's first `FIRST_LABELLED` labelled
    predictions since its deployment, read from its earliest rollup rows (source
    "first_labelled"), else none yet."""
    drift_ref = None if baseline is None or baseline.reference is None else baseline.source
    if baseline is not None and baseline.metrics:
        return baseline.metrics, BaselineSource(baseline.source, baseline.detail, drift_ref)
    first = rollups.first_labelled(FIRST_LABELLED)
    if first is None:
        why = f"no reference or training metrics; fewer than {FIRST_LABELLED} labelled predictions"
        return {}, BaselineSource(None, why, drift_ref)
    found = {k: v for k, v in first.metrics(task).items() if v is not None}
    detail = f"its first {first.labelled} labelled predictions (no reference or training metrics)"
    return found, BaselineSource("first_labelled", detail, drift_ref)


def experiment_report(
    tx: Tx,
    config: Config,
    experiment: Experiment,
    shadows: tuple[shadow_report.ShadowReport, ...] | None = None,
) -> ExperimentReport:
    """Per-arm figures over the test's own predictions, the verdict, and its interval over
    time (`interval_series`). `shadows`: the running shadows' reports when already read."""
    rollups = []
    for name in (experiment.control, experiment.candidate):
        version = tx.registry.get_version(experiment.line, name)
        rollups.append(metrics.load(tx, version.id, experiment=experiment.name))
    control, candidate = (arm.window(None) for arm in rollups)
    task = config.line(experiment.line).task
    rules = abstats.Rules.of(config)
    if task == tasks.BINARY:
        verdict = abstats.auc_verdict(_auc_arm(control), _auc_arm(candidate), rules)
    else:
        verdict = abstats.verdict(_arm(control), _arm(candidate), rules)
    split = srm.check(tx, config, experiment, served=(control.predictions, candidate.predictions))
    # A candidate that is also the line's shadow is judged on the same requests (paired); the
    # interval over time is the served arms' and would not be that verdict's, so it is left out.
    paired = shadow_report.experiment_verdict(tx, config, experiment, shadows)
    if paired is not None:
        return ExperimentReport(experiment, control, candidate, paired, task, srm=split)
    interval = interval_series(rollups[0], rollups[1], task, rules)
    return ExperimentReport(experiment, control, candidate, verdict, task, interval, split)


# Points of a test's interval over time: its last two hours of minutes (what the console draws).
INTERVAL_POINTS = 120


def interval_series(
    control: metrics.VersionRollups,
    candidate: metrics.VersionRollups,
    task: str,
    rules: abstats.Rules,
) -> tuple[IntervalPoint, ...]:
    """The verdict's interval at the end of each minute of the test (the last
    `INTERVAL_POINTS`; a compacted hour is one point, at its last minute): each arm's sums up
    to that minute, judged by the live verdict's own sequence (abstats.accuracy_sequence,
    auc_sequence), so the last point is the live verdict's diff, lo and hi. Minutes before
    the interval exists (below `ab_min_samples` per arm) have no point. A label counts at its
    prediction's minute (where the rollups keep it), so a late label still moves its minute's
    point: the series is the evidence as it stands now, minute by minute."""
    ends = _distinct(np.concatenate((control.row_ends(), candidate.row_ends())))
    cutoffs = ends[-INTERVAL_POINTS:]
    (c_sums, c_aucs), (t_sums, t_aucs) = (r.until(cutoffs, task) for r in (control, candidate))
    out = []
    for i, minute in enumerate(cutoffs.tolist()):
        if task == tasks.BINARY:
            found = abstats.auc_sequence(
                _auc_arm_of(c_sums[i], c_aucs[i]), _auc_arm_of(t_sums[i], t_aucs[i]), rules
            )
        else:
            found = abstats.accuracy_sequence(_arm_of(c_sums[i]), _arm_of(t_sums[i]), rules)
        if not math.isnan(found.lo):
            out.append(IntervalPoint(int(minute), found.diff, found.lo, found.hi))
    return tuple(out)


def _distinct(values: np.ndarray) -> np.ndarray:
    """`np.unique(values)` (sorted, each value once) without importing numpy.ma: a plain
    np.unique asks it whether `values` is masked: 46M instructions (≈ 15 ms), a tenth of what
    a cold `beast monitor` spent above `beast status`."""
    ordered = np.sort(values)
    return (
        ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if values.size else ordered
    )


def _arm(window: metrics.WindowMetrics) -> abstats.Arm:
    return abstats.Arm(window.labelled, window.within, window.abs_err_sum, window.abs_err_sq_sum)


def _auc_arm(window: metrics.WindowMetrics) -> abstats.AucArm:
    return abstats.AucArm(window.auc, window.actual_pos, window.labelled - window.actual_pos)


def _arm_of(sums: np.ndarray) -> abstats.Arm:
    """An arm from a row of `SCALARS` sums (as WindowMetrics reads them)."""
    return abstats.Arm(int(sums[2]), int(sums[3]), float(sums[4]), float(sums[5]))


def _auc_arm_of(sums: np.ndarray, auc: float | None) -> abstats.AucArm:
    labelled, positives = int(sums[2]), int(sums[9])
    return abstats.AucArm(auc, positives, labelled - positives)


def read(tx: Tx, config: Config, *, window: str = "1h", model: str | None = None) -> MonitorReport:
    """Health, metrics, drift and alerts of every deployed version, and test verdicts, from
    one read transaction."""
    versions = []
    for line in tx.registry.line_names():
        if model is not None and line != model:
            continue
        state = tx.deployments.state(line)
        if state is None:
            continue
        versions.append(_version_report(tx, config, state, "production", window))
        if state.candidate is not None:
            versions.append(_version_report(tx, config, state, "candidate", window))
    shadows = shadow_report.shadow_reports(tx, config, model)
    experiments = tuple(
        experiment_report(tx, config, e, shadows)
        for e in tx.deployments.experiments()
        if e.status == "running" and (model is None or e.line == model)
    )
    alerts = tuple(_alerts(tx))
    # The store's, not engine.monitoring.feedback's (the label write path: a few ms to import on
    # every cold `beast monitor`; tests/test_monitoring.py pins its imports).
    pending, unmatched = tx.feedback.counts()
    return MonitorReport(
        window, utc_now(), tuple(versions), alerts, experiments, (), pending, unmatched, shadows
    )


def _alerts(tx: Tx, recent: int = 20) -> list[dict[str, Any]]:
    out = [alert.to_json() for alert in tx.alerts.recent(recent)]
    return sorted(out, key=lambda a: (a["status"] != "firing", -SEVERITY[a["severity"]], -a["id"]))


def sync_alerts(tx: Tx, versions: tuple[VersionReport, ...]) -> None:
    """Fire, refresh and resolve alerts to match the findings (inside a write transaction)."""
    now = utc_now()
    firing = {
        (a.line, a.version, a.metric): a.id
        for a in tx.alerts.firing()
        # The writer's alert and the artifact alert have lives of their own.
        if (a.line, a.version, a.metric) != LOG_ALERT_KEY
        and a.metric not in (artifact_alerts.METRIC, srm.METRIC)
    }
    seen: set[tuple[str, str, str]] = set()
    for report_ in versions:
        for f in report_.findings:
            key = (report_.line, report_.version, f.metric)
            seen.add(key)
            if key in firing:
                tx.alerts.refresh(
                    firing[key],
                    severity=f.severity,
                    value=f.value,
                    threshold=f.threshold,
                    message=f.message,
                    at=now,
                )
            else:
                tx.alerts.fire(
                    line=report_.line,
                    version=report_.version,
                    metric=f.metric,
                    severity=f.severity,
                    value=f.value,
                    threshold=f.threshold,
                    message=f.message,
                    at=now,
                )
    for key, alert_id in firing.items():
        if key not in seen:
            tx.alerts.resolve(alert_id, now)


LOG_ALERT_KEY = ("*", "*", "prediction_log")


class Abort(Protocol):
    """Ends a running A/B test (the deploy service's abort, recorded in history with the
    `evidence` it was decided on; `pulled`: the test ends as auto-pulled)."""

    def __call__(
        self,
        test: str,
        *,
        note: str | None,
        reason: str,
        actor: str,
        evidence: Mapping[str, Any] | None,
        pulled: bool,
    ) -> Change: ...


class Monitoring:
    """The monitoring service: reports, evaluations (alerts synced, critical candidates
    pulled) and the prediction log's loss alert, over a workspace's store."""

    def __init__(
        self,
        store: Store,
        config: Config,
        models_dir: Path,
        *,
        abort: Abort,
        rollback: auto_rollback.Rollback | None = None,
        rollback_target: auto_rollback.Target | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.models_dir = models_dir
        self.abort = abort
        self.rollback = rollback  # the automatic rollback's ([rollback] automatic); None: none
        self.rollback_target = rollback_target

    def report(self, *, window: str = "1h", model: str | None = None) -> MonitorReport:
        """Health, metrics, drift and alerts of every deployed version, and test verdicts."""
        with self.store.read() as tx:
            return read(tx, self.config, window=window, model=model)

    def experiment(self, experiment: Experiment) -> ExperimentReport:
        """A test's per-arm figures and verdict, now."""
        with self.store.read() as tx:
            return experiment_report(tx, self.config, experiment)

    def evaluate(
        self, *, window: str = "1h", pull: bool = True, rollouts_judge: bool = False
    ) -> MonitorReport:
        """Report, sync alerts, and pull critical candidates (the daemon runs this on a timer).
        `rollouts_judge`: a test whose rollout is running is left to its rollout's health gate
        (the caller judges rollouts next, on this report: engine.deploy.rollouts)."""
        current = self._synced(self.report(window=window))
        actions = []
        if pull:
            for version in current.versions:
                if version.role != "candidate" or version.health != "critical":
                    continue
                found = next(
                    (
                        e.experiment
                        for e in current.experiments
                        if e.experiment.candidate == version.version
                        and e.experiment.line == version.line
                    ),
                    None,
                )
                if found is None:
                    continue
                if rollouts_judge and found.rollout and found.rollout.state == "running":
                    continue
                test = found.name
                why = "; ".join(f.message for f in version.findings if f.severity == "critical")
                # Findings quote feature names (from the model's training data): escaped and
                # capped, so the note check never stands between a critical candidate and its pull.
                note = text.escape(f"auto-pulled: health critical ({why})")[: text.MAX_NOTE_CHARS]
                change = self.abort(
                    test,
                    note=note,
                    reason="auto-pulled: health critical",
                    actor=AUTO_PULL_ACTOR,
                    # The figures of the report it was decided on, not a later read.
                    evidence=evidence.evidence_of(current, version.line, test=test),
                    pulled=True,
                )
                actions.append(change.message)
            actions += self._auto_rollback(current)
        if actions:  # what was pulled no longer serves: its alerts resolve now, not next time
            current = self._synced(self.report(window=window))
        return dataclasses.replace(current, actions=tuple(actions))

    def _auto_rollback(self, current: MonitorReport) -> list[str]:
        """Roll back lines whose production turned critical soon after a change (opt-in:
        engine.monitoring.auto_rollback); what was done."""
        if self.rollback is None or self.rollback_target is None:
            return []
        if not self.config.rollback.automatic_rollback:
            return []  # opt-in: a cold `beast monitor` does not import what it would not run
        from engine.monitoring import auto_rollback  # a few ms: only where it is switched on

        def judge(window: metrics.WindowMetrics, task: str) -> tuple[str, tuple[Finding, ...]]:
            return assess(window, DriftSummary(None, None, None), self.config, task)

        return auto_rollback.run(
            self.store,
            self.config,
            current,
            rollback=self.rollback,
            target=self.rollback_target,
            judge=judge,
        )

    def _synced(self, current: MonitorReport) -> MonitorReport:
        # The served model files are hashed before the write lock is taken: a model at the
        # 512 MB cap takes half a second to hash from the page cache (a 105 MB one held the
        # lock 0.1 s), longer from disk. A deployment that changes in between is judged at the
        # next round.
        with self.store.read() as tx:
            found = artifact_alerts.problems(tx, self.models_dir)
        with self.store.write() as tx:
            sync_alerts(tx, current.versions)
            artifact_alerts.sync(tx, self.models_dir, found)
            srm.sync(tx, self.config, ((e.experiment, e.srm) for e in current.experiments))
            expire_log_alert(tx, self.config.log.loss_alert_minutes)
            alerts = tuple(_alerts(tx))
        return dataclasses.replace(current, alerts=alerts)

    def note_log_drops(self, dropped_since_last: int, total_dropped: int) -> None:
        """Fire the alert for acknowledged predictions this process's writer could not log.

        Serving goes on when the log cannot be written (disk full) or a row cannot be (it is
        quarantined: `LogStats.dropped` counts both); the loss must still be seen. The engine
        calls this on its refresh timer with what its writer lost meanwhile. A loss keeps the
        alert firing `[log] loss_alert_minutes` after the last one (`expire_log_alert`): a
        call with no new loss resolves it only once that window has passed, as does every
        evaluation (`evaluate`, `beast monitor`) — a burst that ends is still seen by the next
        look.
        """
        now = utc_now()
        with self.store.write() as tx:
            firing = tx.alerts.firing_one(*LOG_ALERT_KEY)
            if dropped_since_last > 0:
                message = (
                    f"prediction log lost {dropped_since_last} acknowledged predictions since"
                    f" the last check ({total_dropped} in all; dropped or quarantined): serving"
                    " goes on, the rows are not in the log"
                )
                if firing is None:
                    line, version, metric = LOG_ALERT_KEY
                    tx.alerts.fire(
                        line=line,
                        version=version,
                        metric=metric,
                        severity="critical",
                        value=float(total_dropped),
                        threshold=0,
                        message=message,
                        at=now,
                    )
                else:
                    tx.alerts.refresh(
                        firing.id, value=float(total_dropped), message=message, at=now
                    )
            elif firing is not None:
                expire_log_alert(tx, self.config.log.loss_alert_minutes)


def expire_log_alert(tx: Tx, window_minutes: float, now: datetime | None = None) -> bool:
    """Resolve the `prediction_log` alert once no loss was seen for `window_minutes` (inside
    the caller's write transaction); whether it was resolved."""
    firing = tx.alerts.firing_one(*LOG_ALERT_KEY)
    if firing is None:
        return False
    at = datetime.now(UTC) if now is None else now
    if at - datetime.fromisoformat(firing.last_seen.replace("Z", "+00:00")) < timedelta(
        minutes=window_minutes
    ):
        return False
    tx.alerts.resolve(firing.id, utc_now())
    return True
