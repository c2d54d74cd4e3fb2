"""Prometheus metrics of the HTTP API (`GET /metrics`), through prometheus_client.

Label sets are bounded: a model line, a version, an arm or role, a fixed route name, an HTTP
status code, a feedback outcome, an alert's metric and severity. Feature values, keys and
prediction ids never become labels (they would make the series unbounded and leak inputs).

Two kinds of series:
- counters and histograms the serving path updates in process (requests, predictions, model
  errors, latency, feedback outcomes, prediction-log rows written and dropped);
- gauges read at scrape time from the monitoring report (accuracy, MAE, error rate, latency
  percentiles, drift, health, firing alerts), which any process can compute from the rollups.

With several uvicorn workers each process counts on its own; prometheus_client's multiprocess
mode (`PROMETHEUS_MULTIPROC_DIR`, set by `beast engine` before the workers start) sums them, so
a scrape that lands on any worker sees the whole server.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from engine.core import tasks

if TYPE_CHECKING:
    from engine.serving.prediction_log import LogStats
    from engine.serving.router import Prediction

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds. One routed row takes ~0.3 ms; the DESIGN's HTTP p99 target is 2 ms.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
HEALTH_STATES = ("healthy", "warning", "critical", "no data")
QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}


def multiprocess_dir() -> str | None:
    """The shared directory of multiprocess mode, when `beast engine` runs several workers."""
    return os.environ.get(MULTIPROC_ENV) or None


class ApiMetrics:
    """The in-process series of one server process."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # `*_created` series double the output and no dashboard here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.requests = Counter(
            "beast_http_requests",
            "HTTP requests answered, by route, method and status code.",
            ["route", "method", "code"],
            registry=reg,
        )
        self.request_seconds = Histogram(
            "beast_http_request_duration_seconds",
            "Time spent in the handler, by route (body reading, parsing, work, encoding).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "beast_predictions",
            "Predictions served (logged), by model line, version and arm.",
            ["line", "version", "arm"],
            registry=reg,
        )
        self.prediction_errors = Counter(
            "beast_prediction_errors",
            "Predictions the model failed to score (logged with their error).",
            ["line", "version", "arm"],
            registry=reg,
        )
        self.prediction_seconds = Histogram(
            "beast_prediction_latency_seconds",
            "Routed prediction latency (validation, routing, XGBoost), per row.",
            ["line", "version", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.feedback = Counter(
            "beast_feedback",
            "Feedback items by outcome (recorded, duplicate, pending, not found, conflict...).",
            ["status"],
            registry=reg,
        )
        self.log_written = Counter(
            "beast_prediction_log_written_rows",
            "Prediction rows the batched writer committed.",
            registry=reg,
        )
        self.log_dropped = Counter(
            "beast_prediction_log_dropped_rows",
            "Prediction rows the batched writer could not store (disk full, queue full).",
            registry=reg,
        )
        self.log_writer_restarts = Counter(
            "beast_log_writer_restarts",
            "Prediction log writer processes that died and were restarted "
            '([log] writer = "process"; none with the thread writer).',
            registry=reg,
        )
        self.log_queued = Gauge(
            "beast_prediction_log_queued_rows",
            "Prediction rows waiting in the writer's buffer.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        # Children by label values: `.labels()` costs a lock and a dict lookup per call.
        self._served: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._routes: dict[tuple[str, str, int], Any] = {}
        self._route_seconds: dict[str, Any] = {}
        self._log_seen = (0, 0)
        self._restarts_seen = 0
        self._sync_lock = threading.Lock()

    # -- the serving path ------------------------------------------------------------------

    def request(self, route: str, method: str, code: int, seconds: float) -> None:
        """Count one answered request and its handler time."""
        key = (route, method, code)
        counter = self._routes.get(key)
        if counter is None:
            counter = self._routes[key] = self.requests.labels(route, method, str(code))
        counter.inc()
        hist = self._route_seconds.get(route)
        if hist is None:
            hist = self._route_seconds[route] = self.request_seconds.labels(route)
        hist.observe(seconds)

    def served(self, predictions: Iterable[Prediction]) -> None:
        """Count predictions (one call per request: a batch is many rows)."""
        for p in predictions:
            key = (p.line, p.version, p.arm)
            children = self._served.get(key)
            if children is None:
                children = self._served[key] = (
                    self.predictions.labels(*key),
                    self.prediction_errors.labels(*key),
                    self.prediction_seconds.labels(*key),
                )
            children[0].inc()
            if p.error is not None:
                children[1].inc()
            children[2].observe(p.latency_ms / 1000.0)

    def feedback_outcome(self, status: str, n: int = 1) -> None:
        if n:
            self.feedback.labels(status).inc(n)

    def sync_log(self, stats: LogStats) -> None:
        """Carry the prediction log's own counters into Prometheus counters (as deltas)."""
        with self._sync_lock:  # called by the refresh thread and by scrapes
            written, dropped = self._log_seen
            if stats.written > written:
                self.log_written.inc(stats.written - written)
            if stats.dropped > dropped:
                self.log_dropped.inc(stats.dropped - dropped)
            self._log_seen = (max(written, stats.written), max(dropped, stats.dropped))
            if stats.restarts > self._restarts_seen:
                self.log_writer_restarts.inc(stats.restarts - self._restarts_seen)
                self._restarts_seen = stats.restarts
            self.log_queued.set(stats.queued)

    def process_exit(self) -> None:
        """In multiprocess mode, drop this process's live gauges from the sum."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    # -- exposition ------------------------------------------------------------------------

    def render(self, monitor: dict[str, Any] | None, monitor_error: str | None) -> bytes:
        """The Prometheus text exposition: process series plus the monitoring gauges."""
        if self.multiprocess:
            collected: CollectorRegistry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
            sources: list[Any] = [collected]
        else:
            sources = [self.registry]
        sources.append(_OneShot(list(monitor_families(monitor, monitor_error))))
        return generate_latest(_Union(sources))


class _OneShot:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class _Union:
    """What generate_latest needs of a registry: `collect()`."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# Every task's metric keys (a version's JSON holds its own task's).
_TASK_METRICS = tuple(dict.fromkeys(key for keys in tasks.METRICS.values() for key in keys))


def monitor_families(monitor: dict[str, Any] | None, monitor_error: str | None) -> Iterator[Metric]:
    """Gauges from a `beast monitor --json` document (DESIGN.md §3), per line and version."""
    up = GaugeMetricFamily(
        "beast_monitor_up", "1 when the monitoring report was computed for this scrape."
    )
    up.add_metric([], 0.0 if monitor is None else 1.0)
    yield up
    if monitor is None:
        del monitor_error  # the reason goes to the server log, not into a label
        return
    labels = ["line", "version", "role"]
    window = str(monitor.get("window", ""))
    gauges = {
        "traffic": GaugeMetricFamily(
            "beast_version_traffic_ratio", "Share of traffic routed to the version.", labels=labels
        ),
        "predictions": GaugeMetricFamily(
            "beast_version_window_predictions",
            f"Predictions logged in the monitoring window ({window}).",
            labels=labels,
        ),
        "labelled": GaugeMetricFamily(
            "beast_version_window_labelled",
            f"Predictions with feedback in the monitoring window ({window}).",
            labels=labels,
        ),
        "accuracy": GaugeMetricFamily(
            "beast_version_accuracy_ratio",
            "Fraction of labelled predictions within ±tolerance_points of the actual"
            " (binary lines: predicted the label at the decision threshold).",
            labels=labels,
        ),
        "mae": GaugeMetricFamily(
            "beast_version_mae", "Mean absolute error of labelled predictions.", labels=labels
        ),
        # The task's metrics: a regression line has accuracy, mae, rmse; a binary line
        # accuracy (at its decision threshold), auc, log_loss, precision, recall, brier.
        "rmse": GaugeMetricFamily(
            "beast_version_rmse",
            "Root mean squared error of labelled predictions (regression lines).",
            labels=labels,
        ),
        "auc": GaugeMetricFamily(
            "beast_version_auc",
            "ROC AUC of labelled predictions (binary lines).",
            labels=labels,
        ),
        "log_loss": GaugeMetricFamily(
            "beast_version_log_loss",
            "Mean log loss of labelled predictions (binary lines).",
            labels=labels,
        ),
        "precision": GaugeMetricFamily(
            "beast_version_precision_ratio",
            "Precision at the decision threshold (binary lines).",
            labels=labels,
        ),
        "recall": GaugeMetricFamily(
            "beast_version_recall_ratio",
            "Recall at the decision threshold (binary lines).",
            labels=labels,
        ),
        "brier": GaugeMetricFamily(
            "beast_version_brier",
            "Brier score of labelled predictions (binary lines).",
            labels=labels,
        ),
        "error_rate": GaugeMetricFamily(
            "beast_version_error_ratio", "Fraction of predictions the model failed.", labels=labels
        ),
        "model_drift": GaugeMetricFamily(
            "beast_version_model_drift_ratio",
            "Relative degradation of the line's primary metric (accuracy, or AUC; and MAE)"
            " against the version's baseline.",
            labels=labels,
        ),
        "data_drift": GaugeMetricFamily(
            "beast_version_data_drift_psi",
            "Worst feature PSI against the training reference.",
            labels=labels,
        ),
        "score_psi": GaugeMetricFamily(
            "beast_version_score_psi",
            "PSI of the score against the training reference.",
            labels=labels,
        ),
    }
    latency = GaugeMetricFamily(
        "beast_version_latency_seconds",
        f"Prediction latency percentiles over the monitoring window ({window}).",
        labels=[*labels, "quantile"],
    )
    health = StateSetMetricFamily(
        "beast_version_health", "Health from the thresholds of config.toml.", labels=labels
    )
    for v in monitor.get("versions", []):
        key = [str(v.get("line", "")), str(v.get("version", "")), str(v.get("role", ""))]
        drift = v.get("drift") or {}
        values = {
            "traffic": None if _num(v.get("traffic")) is None else float(v["traffic"]) / 100.0,
            "predictions": _num(v.get("predictions")),
            "labelled": _num(v.get("labelled")),
            **{key: _num(v.get(key)) for key in _TASK_METRICS},
            "error_rate": _num(v.get("error_rate")),
            "model_drift": _num(drift.get("model")),
            "data_drift": _num(drift.get("data")),
            "score_psi": _num(drift.get("score_psi")),
        }
        for name, value in values.items():
            if value is not None:  # "not enough data" is an absent sample, not a zero
                gauges[name].add_metric(key, value)
        for name, ms in (v.get("latency_ms") or {}).items():
            quantile = QUANTILES.get(name)
            if quantile is not None and _num(ms) is not None:
                latency.add_metric([*key, quantile], float(ms) / 1000.0)
        state = str(v.get("health", "no data"))
        health.add_metric(key, {s: s == state for s in HEALTH_STATES})
    yield from gauges.values()
    yield latency
    yield health
    alerts = GaugeMetricFamily(
        "beast_alerts_firing",
        "Alerts firing now (1 per alert), by line, version, metric and severity.",
        labels=["line", "version", "metric", "severity"],
    )
    for alert in monitor.get("alerts", []):
        if alert.get("status", "firing") == "firing" and alert.get("resolved_at") is None:
            alerts.add_metric(
                [
                    str(alert.get("line", "")),
                    str(alert.get("version", "")),
                    str(alert.get("metric", "")),
                    str(alert.get("severity", "")),
                ],
                1.0,
            )
    yield alerts
    overall = StateSetMetricFamily("beast_health", "Overall health of the deployed versions.")
    state = str(monitor.get("health", "no data"))
    overall.add_metric([], {s: s == state for s in HEALTH_STATES})
    yield overall
