"""config.toml: the seed's thresholds and retraining settings, validated at load.

Every value is checked against a rule; a bad one is refused naming the key and the
value, so an operator never runs on a typo. Unknown keys are refused for the same reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import ConfigError
from engine.core.naming import NAME_PATTERN

DEFAULT_CONFIG_TOML = """\
# beast-mode workspace configuration. Defaults are the seed guide's
# (lib/mlops/modelMonitoring.js and scripts/auto-retrain.js).

[thresholds]
# accuracy: fraction of predictions within ±tolerance_points of the actual value
accuracy = { min = 0.80, alert = 0.75 }
latency_ms = { max = 100, alert = 200 }
error_rate = { max = 0.01, alert = 0.05 }
drift = { threshold = 0.10 }
tolerance_points = 5
# binary lines ([lines.NAME] task = "binary") judge health on ROC AUC instead of accuracy
auc = { min = 0.70, alert = 0.60 }

[retrain]
min_new_samples = 100
interval_days = 7
# the least gain of the line's primary metric a retrained model needs: accuracy on a
# regression line, AUC on a binary one (0.01 = one AUC point)
min_accuracy_improvement = 0.01
auto_deploy = false
# a retrained model is deployed as an A/B candidate at this share (percent, 1–99)
candidate_traffic = 10
# a training job is killed (its whole process group) after this many seconds
timeout_s = 900
# a worker renews its lease every few seconds; a job whose lease expired is failed
lease_s = 15
# the scheduler starts no new job on a line within this many minutes of the last one
cooldown_minutes = 60
# train on a Dask cluster (xgboost.dask; the dask extra), e.g. "tcp://scheduler:8786";
# "" trains in a local worker process
dask_scheduler = ""

[store]
# where the state lives: "" is the workspace's own SQLite file (beast.db); a PostgreSQL URL
# ("postgresql://user@host/db", the postgresql extra) shares it between engine replicas.
# BEAST_STORE_URL overrides it.
url = ""

[serving]
# features for which NaN ("missing", as XGBoost reads it) is accepted; all others refuse NaN
nullable_features = []

[monitoring]
# below this many predictions a version's health is "no data", never an alarm
min_samples = 30
# accuracy (AUC on a binary line) and model drift are judged over at least this many labelled
# predictions: below it "not enough labelled data", never an alarm. At 200 one standard error
# of an accuracy near 0.75-0.80 is 0.03. Critical also needs its 95% upper bound under `alert`
min_labelled = 200
# an A/B verdict needs this many labelled predictions per arm, at this significance level;
# the verdict is always valid (read it as often as you like: its error stays at ab_alpha)
ab_min_samples = 100
ab_alpha = 0.05
# the planned labelled predictions in the smaller arm: the verdict's interval is narrowest there
ab_max_samples = 2000
# non-inferiority margin, in the primary metric's points (accuracy, or AUC on a binary line):
# an interval inside ±ab_margin is "no difference"; a rollout step needs its lower bound above
# -ab_margin
ab_margin = 0.02
# a test whose realized split has an always-valid p below this is a sample-ratio mismatch (an
# `srm` alert; promotion waits until it is acknowledged)
srm_p = 0.001

[deploy]
# refuse `beast deploy` while an item of its preflight checklist is unchecked (--strict)
strict = false

[rollout]
# each step of a progressive rollout (--rollout 5,25,50,100) needs this many labelled
# predictions per arm before it can advance
min_samples = 200
# a step still undecided after this many minutes fails its gate (the candidate is pulled)
max_step_minutes = 60
# the candidate's health gates: its error rate at most production's plus this, its p99
# latency at most production's times this, or plus latency_p99_slack_ms when that is more (a
# model a few trees deeper is a millisecond slower, which at 2 ms is beyond any ratio)
error_rate_margin = 0.01
latency_p99_ratio = 1.25
latency_p99_slack_ms = 5

[rollback]
# roll back to the previous production when production turns critical within watch_minutes
# of a change (the leader does it once, with its evidence, never back and forth)
automatic = false
watch_minutes = 30

[shadow]
# a shadow version (beast deploy --shadow) is scored after the response is sent; a request
# whose shadow score would start later than this after it is skipped, never queued without end
budget_ms = 50

[registry]
# files larger than this are refused before they are parsed
max_artifact_mb = 512
# a model file is validated in a child process; it is killed after this long
validation_timeout_s = 60
# compile each valid version's trees for single rows (treelite + tl2cgen, verified against
# XGBoost within 1e-4, in the background); false: XGBoost scores every row, nothing is built.
# BEAST_COMPILED_TREES=false in the environment overrides it (every process that inherits it)
compiled_trees = true

[mlflow]
# with the mlflow extra installed (pip install 'beast-mode[mlflow]'), log each training run
enabled = true
# "" is the workspace's own store (sqlite:///<workspace>/mlflow.db); a relative sqlite path is
# taken from the workspace; or a tracking server, e.g. "http://mlflow.internal:5000"
tracking_uri = ""
experiment = "beast-mode"

[api]
# host names (with or without :port) the engine answers besides localhost, 127.0.0.1, [::1] and
# the address it listens on, e.g. ["beast.internal"]; "*" answers any Host (behind a proxy that
# checks it); `beast engine --allowed-host NAME` adds more
allowed_hosts = []
# which requests need Authorization: Bearer <token>: "mutations" (deploy, rollback, promote,
# abort), "always" (every request), or "auto": always beyond loopback, else mutations
require_token = "auto"

# One table per model line: its contract. A line that declares nothing is the seed's regression.
# [lines.quality-predictor]
# task = "regression"        # "regression" (default) or "binary"
# label = "score"            # the label column in data files (and what feedback is)
# time = "observed_at"       # the time column in data files
# label_range = [0, 100]     # feedback outside it is refused (binary: [0, 1])
# tolerance_points = 5       # regression: "accurate" = within ±tolerance ([thresholds])
# [lines.revert-risk]
# task = "binary"
# label = "reverted"         # 0/1 (or false/true)
# decision_threshold = 0.5   # binary: a score ≥ it predicts class 1
# prediction_changes_outcome = false  # true: the served score changes the label (a shadow's
#                                     # paired verdict is then not valid; served arms decide)

[console]
# production changes (rollback, promote, deploy as production) ask for the new production
# version's name to be typed before they run, not just `y` (beast console --type-to-confirm)
type_to_confirm = false
# shown as a badge in the console's header and dialog titles, e.g. "production" (red) or
# "staging" (yellow); "" shows none
environment = ""

[log]
# raw predictions older than this many days are pruned, a chunk at a time (rollups, drift
# references and labelled rows are kept); 0 keeps everything
retention_days = 30
# labelled predictions (what retraining learns from) are kept this long instead; 0: forever
labelled_retention_days = 90
# the critical prediction_log alert (acknowledged predictions that did not reach the log)
# stays firing this many minutes after the last loss
loss_alert_minutes = 10
# where `beast engine` writes the log: "thread" (a thread of each server process) or
# "process" (a writer process of its own per server process, off the serving GIL)
writer = "thread"
"""

# The seed's column names in data files: the label to learn and the time of each row.
DEFAULT_LABEL = "score"
DEFAULT_TIME = "observed_at"


@dataclass(frozen=True)
class Thresholds:
    accuracy_min: float = 0.80
    accuracy_alert: float = 0.75
    latency_max_ms: float = 100.0
    latency_alert_ms: float = 200.0
    error_rate_max: float = 0.01
    error_rate_alert: float = 0.05
    drift_threshold: float = 0.10
    tolerance_points: float = 5.0
    auc_min: float = 0.70
    auc_alert: float = 0.60


@dataclass(frozen=True)
class RetrainSettings:
    min_new_samples: int = 100
    interval_days: float = 7.0
    min_accuracy_improvement: float = 0.01
    auto_deploy: bool = False
    candidate_traffic: float = 10.0
    timeout_s: float = 900.0
    lease_s: float = 15.0
    cooldown_minutes: float = 60.0
    dask_scheduler: str = ""


@dataclass(frozen=True)
class RegistrySettings:
    max_artifact_mb: float = 512.0
    validation_timeout_s: float = 60.0
    compiled_trees: bool = True

    @property
    def max_artifact_bytes(self) -> int:
        return int(self.max_artifact_mb * 1024 * 1024)


@dataclass(frozen=True)
class StoreSettings:
    """[store]: where the state lives ("" the workspace's SQLite file, else a PostgreSQL URL)."""

    store_url: str = ""


@dataclass(frozen=True)
class ServingSettings:
    nullable_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class MonitoringSettings:
    min_samples: int = 30
    min_labelled: int = 200
    ab_min_samples: int = 100
    ab_alpha: float = 0.05
    ab_max_samples: int = 2_000
    ab_margin: float = 0.02
    srm_p: float = 0.001


@dataclass(frozen=True)
class DeploySettings:
    """[deploy] (field names distinct from other sections': fields are merged by name)."""

    deploy_strict: bool = False


@dataclass(frozen=True)
class RolloutSettings:
    """[rollout]: a progressive rollout's gates."""

    rollout_min_samples: int = 200
    max_step_minutes: float = 60.0
    error_rate_margin: float = 0.01
    latency_p99_ratio: float = 1.25
    latency_p99_slack_ms: float = 5.0


@dataclass(frozen=True)
class RollbackSettings:
    """[rollback]: the guide's automatic rollback, opt-in."""

    automatic_rollback: bool = False
    rollback_watch_minutes: float = 30.0


@dataclass(frozen=True)
class ShadowSettings:
    """[shadow]: scoring a version beside production without serving it."""

    shadow_budget_ms: float = 50.0


@dataclass(frozen=True)
class MlflowSettings:
    """[mlflow]: field names are distinct from other sections' (fields are merged by name)."""

    tracking_enabled: bool = True
    tracking_uri: str = ""
    experiment_name: str = "beast-mode"


@dataclass(frozen=True)
class ConsoleSettings:
    type_to_confirm: bool = False
    environment: str = ""


TOKEN_POLICIES = ("auto", "always", "mutations")
STORE_URL_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_LABEL_RANGE = (0.0, 100.0)  # the seed's score
# A host name or address as a client writes it in `Host`, optionally with a port; or "*".
HOST_PATTERN = re.compile(
    r"(?:\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\.?)(?::[0-9]{1,5})?"
)


@dataclass(frozen=True)
class ApiConfig:
    """[api]: who may talk to the engine's HTTP API (field names distinct from other sections)."""

    allowed_hosts: tuple[str, ...] = ()
    require_token: str = "auto"


BINARY_LABEL_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class LineSettings:
    """[lines.NAME]: one model line's contract (engine.core.tasks names the tasks).

    `tolerance_points` is resolved: a line that does not set it has [thresholds]'.
    """

    task: str = "regression"
    label: str = DEFAULT_LABEL
    time: str = DEFAULT_TIME
    label_range: tuple[float, float] = DEFAULT_LABEL_RANGE
    tolerance_points: float = 5.0
    decision_threshold: float = 0.5
    # The served prediction changes the outcome it is labelled with (a score that decides
    # whether a change is reviewed changes whether it is reverted): a shadow's paired test is
    # not valid, so its verdict falls back to the test between served arms.
    prediction_changes_outcome: bool = False

    @property
    def binary(self) -> bool:
        return self.task == "binary"


@dataclass(frozen=True)
class LogSettings:
    """[log]: the prediction log's retention and its loss alert."""

    retention_days: float = 30.0
    labelled_retention_days: float = 90.0
    loss_alert_minutes: float = 10.0
    writer: str = "thread"  # where rows are written: "thread" (of the server) or "process"


@dataclass(frozen=True)
class Config:
    thresholds: Thresholds = Thresholds()
    retrain: RetrainSettings = RetrainSettings()
    registry: RegistrySettings = RegistrySettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    mlflow: MlflowSettings = MlflowSettings()
    console: ConsoleSettings = ConsoleSettings()
    log: LogSettings = LogSettings()
    api: ApiConfig = ApiConfig()
    store: StoreSettings = StoreSettings()
    deploy: DeploySettings = DeploySettings()
    rollout: RolloutSettings = RolloutSettings()
    rollback: RollbackSettings = RollbackSettings()
    shadow: ShadowSettings = ShadowSettings()
    # (line name, its settings), sorted by name; a line not listed has the defaults
    lines: tuple[tuple[str, LineSettings], ...] = ()

    def line(self, name: str) -> LineSettings:
        """The contract of model line `name` ([lines.NAME], else the seed's regression)."""
        for line, settings in self.lines:
            if line == name:
                return settings
        return LineSettings(tolerance_points=self.thresholds.tolerance_points)


Check = Callable[[Any], bool]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value: Any) -> bool:
    return _number(value) and 0.0 <= value <= 1.0


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _share(value: Any) -> bool:
    return _number(value) and 1.0 <= value <= 99.0


def _lease(value: Any) -> bool:
    # Renewed at least every lease/3 s; under 2 s a busy machine would expire live workers.
    return _number(value) and 2.0 <= value <= 3600.0


def _non_negative(value: Any) -> bool:
    return _number(value) and value >= 0


def _tracking_uri(value: Any) -> bool:
    # A bare path would select MLflow's file store, which 3.x refuses by default.
    return isinstance(value, str) and (
        value in ("", "databricks") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value) is not None
    )


def _store_url(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or value.startswith(STORE_URL_SCHEMES))


def _scheduler(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or re.match(r"[a-z]+://\S+$", value) is not None)


def _label(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and value == value.strip()


def _environment(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 24 and value.isprintable()


def _at_least_one(value: Any) -> bool:
    return _number(value) and value >= 1.0


def _significance(value: Any) -> bool:
    return _number(value) and 0.0 < value < 0.5


def _hosts(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str) and HOST_PATTERN.fullmatch(v) is not None for v in value
    )


def _log_writer(value: Any) -> bool:
    return value in ("thread", "process")


def _token_policy(value: Any) -> bool:
    return value in TOKEN_POLICIES


def _task(value: Any) -> bool:
    return value in ("regression", "binary")


def _column(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable()


def _open_fraction(value: Any) -> bool:
    return _number(value) and 0.0 < value < 1.0


def _range(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2  # [lo, hi]
        and all(_number(v) for v in value)
        and value[0] < value[1]
    )


# dotted key -> (dataclass field, rule, what the rule means)
_RULES: dict[str, tuple[str, Check, str]] = {
    "thresholds.accuracy.min": ("accuracy_min", _fraction, "a fraction between 0 and 1"),
    "thresholds.accuracy.alert": ("accuracy_alert", _fraction, "a fraction between 0 and 1"),
    "thresholds.latency_ms.max": ("latency_max_ms", _positive, "a positive number of ms"),
    "thresholds.latency_ms.alert": ("latency_alert_ms", _positive, "a positive number of ms"),
    "thresholds.error_rate.max": ("error_rate_max", _fraction, "a fraction between 0 and 1"),
    "thresholds.error_rate.alert": ("error_rate_alert", _fraction, "a fraction between 0 and 1"),
    "thresholds.drift.threshold": ("drift_threshold", _positive, "a positive fraction"),
    "thresholds.tolerance_points": ("tolerance_points", _positive, "a positive number"),
    "thresholds.auc.min": ("auc_min", _fraction, "a fraction between 0 and 1"),
    "thresholds.auc.alert": ("auc_alert", _fraction, "a fraction between 0 and 1"),
    "retrain.min_new_samples": ("min_new_samples", _count, "a whole number ≥ 1"),
    "retrain.interval_days": ("interval_days", _positive, "a positive number of days"),
    "retrain.min_accuracy_improvement": (
        "min_accuracy_improvement",
        _fraction,
        "a fraction between 0 and 1",
    ),
    "retrain.auto_deploy": ("auto_deploy", _boolean, "true or false"),
    "retrain.candidate_traffic": ("candidate_traffic", _share, "a percentage between 1 and 99"),
    "retrain.timeout_s": ("timeout_s", _positive, "a positive number of seconds"),
    "retrain.lease_s": ("lease_s", _lease, "a number of seconds between 2 and 3600"),
    "retrain.cooldown_minutes": ("cooldown_minutes", _non_negative, "a number of minutes ≥ 0"),
    "retrain.dask_scheduler": (
        "dask_scheduler",
        _scheduler,
        'a Dask scheduler address such as "tcp://host:8786", or "" to train locally',
    ),
    "store.url": (
        "store_url",
        _store_url,
        'a PostgreSQL URL ("postgresql://user@host:5432/db"), or "" for beast.db',
    ),
    "serving.nullable_features": ("nullable_features", _names, "a list of feature names"),
    "monitoring.min_samples": ("min_samples", _count, "a whole number ≥ 1"),
    "monitoring.min_labelled": ("min_labelled", _count, "a whole number ≥ 1"),
    "monitoring.ab_min_samples": ("ab_min_samples", _count, "a whole number ≥ 1"),
    "monitoring.ab_alpha": ("ab_alpha", _significance, "a significance level between 0 and 0.5"),
    "monitoring.ab_max_samples": ("ab_max_samples", _count, "a whole number ≥ 1"),
    "monitoring.ab_margin": ("ab_margin", _open_fraction, "a fraction strictly between 0 and 1"),
    "monitoring.srm_p": ("srm_p", _significance, "a significance level between 0 and 0.5"),
    "deploy.strict": ("deploy_strict", _boolean, "true or false"),
    "rollout.min_samples": ("rollout_min_samples", _count, "a whole number ≥ 1"),
    "rollout.max_step_minutes": ("max_step_minutes", _positive, "a positive number of minutes"),
    "rollout.error_rate_margin": ("error_rate_margin", _fraction, "a fraction between 0 and 1"),
    "rollout.latency_p99_ratio": ("latency_p99_ratio", _at_least_one, "a number ≥ 1"),
    "rollout.latency_p99_slack_ms": (
        "latency_p99_slack_ms",
        _non_negative,
        "a number of ms ≥ 0",
    ),
    "rollback.automatic": ("automatic_rollback", _boolean, "true or false"),
    "rollback.watch_minutes": ("rollback_watch_minutes", _positive, "a positive number of minutes"),
    "shadow.budget_ms": ("shadow_budget_ms", _positive, "a positive number of ms"),
    "registry.max_artifact_mb": ("max_artifact_mb", _positive, "a positive number of MiB"),
    "registry.validation_timeout_s": ("validation_timeout_s", _positive, "a positive number"),
    "registry.compiled_trees": ("compiled_trees", _boolean, "true or false"),
    "mlflow.enabled": ("tracking_enabled", _boolean, "true or false"),
    "mlflow.tracking_uri": (
        "tracking_uri",
        _tracking_uri,
        'a URI such as "sqlite:///mlflow.db" or "http://host:5000", or "" for the workspace store',
    ),
    "mlflow.experiment": ("experiment_name", _label, "a non-empty name"),
    "console.type_to_confirm": ("type_to_confirm", _boolean, "true or false"),
    "console.environment": ("environment", _environment, "a short name, at most 24 characters"),
    "log.retention_days": ("retention_days", _non_negative, "a number of days ≥ 0 (0: keep all)"),
    "log.labelled_retention_days": (
        "labelled_retention_days",
        _non_negative,
        "a number of days ≥ 0 (0: keep all)",
    ),
    "log.loss_alert_minutes": ("loss_alert_minutes", _positive, "a positive number of minutes"),
    "log.writer": ("writer", _log_writer, '"thread" or "process"'),
    "api.allowed_hosts": (
        "allowed_hosts",
        _hosts,
        'a list of host names or addresses, each with an optional :port (or "*")',
    ),
    "api.require_token": ("require_token", _token_policy, "one of " + ", ".join(TOKEN_POLICIES)),
}
# The keys of one [lines.NAME] table -> (rule, what the rule means)
_LINE_RULES: dict[str, tuple[Check, str]] = {
    "task": (_task, '"regression" or "binary"'),
    "label": (_column, "a column name (1–100 printable characters)"),
    "time": (_column, "a column name (1–100 printable characters)"),
    "label_range": (_range, "[lo, hi]: two finite numbers with lo < hi"),
    "tolerance_points": (_positive, "a positive number"),
    "decision_threshold": (_open_fraction, "a number strictly between 0 and 1"),
    "prediction_changes_outcome": (_boolean, "true or false"),
}
# Keys that belong to one task only: set on a line of the other task, they are refused
# rather than silently ignored.
_TASK_ONLY = {"tolerance_points": "regression", "decision_threshold": "binary"}

# Pairs whose order matters: the alert level must be at least as bad as the target level.
_ORDER: list[tuple[str, str, str]] = [
    ("thresholds.accuracy.alert", "thresholds.accuracy.min", "≤"),
    ("thresholds.latency_ms.max", "thresholds.latency_ms.alert", "≤"),
    ("thresholds.error_rate.max", "thresholds.error_rate.alert", "≤"),
    ("thresholds.auc.alert", "thresholds.auc.min", "≤"),
]


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def parse_config(text: str, source: str = "config.toml") -> Config:
    """Parse and validate config text; raise ConfigError naming the bad key and value."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    raw_lines = raw.pop("lines", {})
    flat = _flatten(raw)
    values: dict[str, Any] = {}
    for key, value in flat.items():
        rule = _RULES.get(key)
        if rule is None:
            raise ConfigError(f"{source}: unknown key {key} (known: {', '.join(_RULES)})")
        _field, check, meaning = rule
        if not check(value):
            raise ConfigError(f"{source}: {key} = {value!r} is invalid: must be {meaning}")
        values[key] = value
    defaults = _defaults()
    merged = {**defaults, **values}
    for low, high, sign in _ORDER:
        if not merged[low] <= merged[high]:
            raise ConfigError(
                f"{source}: {low} = {merged[low]!r} must be {sign} {high} = {merged[high]!r}"
            )
    by_field = {_RULES[key][0]: value for key, value in merged.items()}
    for listed in ("nullable_features", "allowed_hosts"):
        if isinstance(by_field.get(listed), list):
            by_field[listed] = tuple(by_field[listed])

    def section(cls: type[Any]) -> Any:
        return cls(**{k: v for k, v in by_field.items() if k in _fields(cls)})

    thresholds = section(Thresholds)
    lines = _lines(raw_lines, source, thresholds.tolerance_points)
    return Config(
        thresholds=thresholds,
        retrain=section(RetrainSettings),
        registry=section(RegistrySettings),
        serving=section(ServingSettings),
        monitoring=section(MonitoringSettings),
        mlflow=section(MlflowSettings),
        console=section(ConsoleSettings),
        log=section(LogSettings),
        api=section(ApiConfig),
        store=section(StoreSettings),
        deploy=section(DeploySettings),
        rollout=section(RolloutSettings),
        rollback=section(RollbackSettings),
        shadow=section(ShadowSettings),
        lines=lines,
    )


def _lines(table: Any, source: str, tolerance: float) -> tuple[tuple[str, LineSettings], ...]:
    """The [lines.NAME] tables, each key checked like any other (unknown keys refused)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: lines must be tables, [lines.NAME], got {table!r}")
    out: list[tuple[str, LineSettings]] = []
    for name, keys in sorted(table.items()):
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise ConfigError(
                f"{source}: [lines.{name}] does not name a model line (1–100 letters, digits, "
                "'.', '_', '+' or '-', starting with a letter or digit)"
            )
        if not isinstance(keys, dict):
            raise ConfigError(f"{source}: lines.{name} must be a table, [lines.{name}]")
        values: dict[str, Any] = {}
        for key, value in keys.items():
            rule = _LINE_RULES.get(key)
            if rule is None:
                raise ConfigError(
                    f"{source}: unknown key lines.{name}.{key} (known: {', '.join(_LINE_RULES)})"
                )
            check, meaning = rule
            if not check(value):
                raise ConfigError(
                    f"{source}: lines.{name}.{key} = {value!r} is invalid: must be {meaning}"
                )
            values[key] = value
        out.append((name, _line(name, values, source, tolerance)))
    return tuple(out)


def _line(name: str, values: dict[str, Any], source: str, tolerance: float) -> LineSettings:
    """One checked [lines.NAME] table as its contract, task-specific keys held to their task."""
    task = values.get("task", "regression")
    for key, owner in _TASK_ONLY.items():
        if key in values and task != owner:
            raise ConfigError(
                f"{source}: lines.{name}.{key} = {values[key]!r} is invalid: it applies to "
                f'{owner} lines, and lines.{name}.task is "{task}"'
            )
    default_range = BINARY_LABEL_RANGE if task == "binary" else DEFAULT_LABEL_RANGE
    lo, hi = (float(v) for v in values.get("label_range", default_range))
    if task == "binary" and (lo, hi) != BINARY_LABEL_RANGE:
        raise ConfigError(
            f"{source}: lines.{name}.label_range = {values['label_range']!r} is invalid: "
            "a binary line's labels are 0 and 1, so its range is [0, 1]"
        )
    label = values.get("label", DEFAULT_LABEL)
    time = values.get("time", DEFAULT_TIME)
    if label == time:
        raise ConfigError(
            f"{source}: lines.{name}.label and lines.{name}.time are both {label!r}: "
            "a data file's label and time must be different columns"
        )
    return LineSettings(
        task=task,
        label=label,
        time=time,
        label_range=(lo, hi),
        tolerance_points=float(values.get("tolerance_points", tolerance)),
        decision_threshold=float(values.get("decision_threshold", 0.5)),
        prediction_changes_outcome=bool(values.get("prediction_changes_outcome", False)),
    )


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _defaults() -> dict[str, Any]:
    instances = (
        Thresholds(),
        RetrainSettings(),
        RegistrySettings(),
        ServingSettings(),
        MonitoringSettings(),
        MlflowSettings(),
        ConsoleSettings(),
        LogSettings(),
        ApiConfig(),
        StoreSettings(),
        DeploySettings(),
        RolloutSettings(),
        RollbackSettings(),
        ShadowSettings(),
    )
    out: dict[str, Any] = {}
    for key, (field, _check, _meaning) in _RULES.items():
        for instance in instances:
            if hasattr(instance, field):
                out[key] = getattr(instance, field)
    return out


COMPILED_TREES_ENV = "BEAST_COMPILED_TREES"
_SWITCH = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}


def load_config(path: Path) -> Config:
    """Load config.toml; a missing file means the seed's defaults. `BEAST_COMPILED_TREES`
    (true/false), when set, overrides `[registry] compiled_trees`: the switch for a host, or
    a fleet's environment, without editing each workspace's file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        config = Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    else:
        config = parse_config(text, source=str(path))
    return _compiled_trees_from_env(config)


def _compiled_trees_from_env(config: Config) -> Config:
    raw = os.environ.get(COMPILED_TREES_ENV, "").strip().lower()
    if not raw:
        return config
    if raw not in _SWITCH:
        raise ConfigError(f"{COMPILED_TREES_ENV}={raw!r}: must be true or false")
    registry = dataclasses.replace(config.registry, compiled_trees=_SWITCH[raw])
    return dataclasses.replace(config, registry=registry)
