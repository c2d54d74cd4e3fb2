"""Health, alerts, verdicts and the auto-pull, on rollups built from controlled predictions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import pytest

from engine import BeastError, Engine
from engine.core import ids, tasks
from engine.core.config import Config
from engine.monitoring import baselines
from engine.monitoring import feedback as labels
from engine.monitoring import report as monitoring
from engine.serving.prediction_log import PredictionLog, Record
from engine.store.sqlite.tx import SqliteTx
from tests.helpers import REPO, beast

LINE = "quality-predictor"


def feed(
    engine: Engine,
    version: str,
    n: int,
    *,
    within: float,
    errors: float = 0.0,
    latency_us: int = 500,
    experiment: str = "",
    arm: str = "production",
    minutes_ago: int = 0,
    rows: np.ndarray | None = None,
    keys: Sequence[str | None] | None = None,
) -> None:
    """n predictions of `version` scored 50; a `within` share labelled within ±5 points.

    Their features are zeros, or the float32 `rows` (n of them) when given; their routing
    keys none, or `keys` (n of them)."""
    with engine.store.read_sql() as conn:
        version_id = SqliteTx(conn).registry.get_version(LINE, version).id
    at_ms = int((time.time() - minutes_ago * 60) * 1000)
    log = PredictionLog(engine.workspace.db_path, tolerance=5.0)
    log.store.migrate()
    records, n_err = [], round(n * errors)
    for i in range(n):
        failed = i < n_err
        records.append(
            Record(
                ids.new_id(at_ms),
                at_ms,
                LINE,
                version_id,
                arm,
                experiment,
                None if keys is None else keys[i],
                np.zeros(5, np.float32).tobytes() if rows is None else rows[i].tobytes(),
                None if failed else 50.0,
                latency_us,
                "model error" if failed else None,
            )
        )
    for r in records:
        log.submit(r)
    log.close()
    scored = [r for r in records if r.score is not None]
    good = round(len(scored) * within)
    with engine.store.write_sql() as conn:
        for i, r in enumerate(scored):
            labels.label(SqliteTx(conn), r.pid, 52.0 if i < good else 60.0, labels.Contracts())


def version_report(report: monitoring.MonitorReport, version: str) -> monitoring.VersionReport:
    return next(v for v in report.versions if v.version == version)


@pytest.fixture
def deployed(engine: Engine) -> Engine:
    engine.deploy(version="v1.0")
    return engine


def test_too_few_samples_is_no_data_never_an_alarm(deployed: Engine) -> None:
    feed(deployed, "v1.0", 10, within=0.0)
    report = deployed.monitoring.evaluate()
    assert version_report(report, "v1.0").health == "no data"
    assert report.alerts == ()
    assert deployed.status().health == "healthy"  # predictions exist, nothing fires


def test_a_handful_of_labelled_rows_is_never_an_accuracy_alarm(deployed: Engine) -> None:
    # 199 labelled at accuracy 0.5: enough predictions to judge latency and errors, too few
    # labels to judge accuracy ([monitoring] min_labelled = 200) or model drift.
    with deployed.store.write_sql() as conn:
        artifact_id = SqliteTx(conn).registry.get_version(LINE, "v1.0").artifact_id
        baselines.store(
            SqliteTx(conn), artifact_id, "training", reference=None, metrics={"accuracy": 0.95}
        )
    feed(deployed, "v1.0", 199, within=0.5)
    report = deployed.monitoring.evaluate()
    v = version_report(report, "v1.0")
    assert (v.health, v.findings, v.drift.model) == ("healthy", (), None)
    assert report.alerts == ()
    config = deployed.config
    assert monitoring.labelled_wait(v.window, config, tasks.REGRESSION) == (
        "accuracy: not enough labelled data (199 of 200)"
    )
    feed(deployed, "v1.0", 1, within=0.0)  # the 200th: judged now
    v = version_report(deployed.monitoring.evaluate(), "v1.0")
    assert v.health == "critical"
    assert [f.metric for f in v.findings] == ["accuracy", "model_drift"]
    assert v.findings[0].message == (
        "accuracy 0.500 < 0.75 (alert; 95% upper bound 0.558) over 200 labelled"
    )
    assert v.findings[1].message == "model drift 47.4% > 10% of baseline over 200 labelled"
    assert monitoring.labelled_wait(v.window, config, tasks.REGRESSION) is None


def test_accuracy_is_critical_only_when_surely_below_the_alert_line(deployed: Engine) -> None:
    # 0.74 over 300 labelled: below 0.75, but its one-sided 95% upper bound (0.782) is not.
    # A warning (it is below the 0.80 min), never the critical that pulls a candidate.
    feed(deployed, "v1.0", 300, within=0.74)
    v = version_report(deployed.monitoring.evaluate(), "v1.0")
    assert v.health == "warning"
    assert [f.message for f in v.findings] == ["accuracy 0.740 < 0.8 (min) over 300 labelled"]
    feed(deployed, "v1.0", 9700, within=0.74)  # the same accuracy, surely below: critical
    v = version_report(deployed.monitoring.evaluate(), "v1.0")
    assert v.health == "critical"
    assert [f.message for f in v.findings] == [
        "accuracy 0.740 < 0.75 (alert; 95% upper bound 0.747) over 10,000 labelled"
    ]


def test_auc_waits_for_labels_and_is_critical_only_when_surely_under_its_alert() -> None:
    from tests.test_binary_report import window  # a window holding exactly a given AUC

    config, none = Config(), monitoring.DriftSummary(None, None, None)
    assert monitoring.assess(window(0.5, labelled=150), none, config, tasks.BINARY) == (
        "healthy",
        (),
    )
    # AUC 0.57 over 200 labels: under the 0.60 alert, but Hanley & McNeil's bound (0.636) is not.
    health, (finding,) = monitoring.assess(window(0.57, labelled=200), none, config, tasks.BINARY)
    assert (health, finding.message) == ("warning", "auc 0.570 < 0.7 (min) over 200 labelled")
    health, (finding,) = monitoring.assess(window(0.57, labelled=2000), none, config, tasks.BINARY)
    assert (health, finding.message) == (
        "critical",
        "auc 0.570 < 0.6 (alert; 95% upper bound 0.591) over 2,000 labelled",
    )


@pytest.mark.parametrize(
    ("within", "health"), [(0.9, "healthy"), (0.78, "warning"), (0.7, "critical")]
)
def test_accuracy_thresholds(deployed: Engine, within: float, health: str) -> None:
    feed(deployed, "v1.0", 400, within=within)  # 0.7 over 400: surely below the 0.75 alert
    v = version_report(deployed.monitoring.evaluate(), "v1.0")
    assert v.health == health
    assert v.window.accuracy == pytest.approx(within, abs=0.005)
    assert v.window.mae == pytest.approx(within * 2 + (1 - within) * 10, rel=1e-6)
    assert deployed.status().health == health


@pytest.mark.parametrize(("errors", "health"), [(0.03, "warning"), (0.1, "critical")])
def test_error_rate_thresholds(deployed: Engine, errors: float, health: str) -> None:
    feed(deployed, "v1.0", 300, within=1.0, errors=errors)
    v = version_report(deployed.report(), "v1.0")
    assert v.health == health and v.window.error_rate == pytest.approx(errors, abs=0.004)
    assert {f.metric for f in v.findings} == {"error_rate"}


def test_latency_above_max_warns(deployed: Engine) -> None:
    feed(deployed, "v1.0", 100, within=1.0, latency_us=150_000)
    v = version_report(deployed.report(), "v1.0")
    assert v.health == "warning" and v.findings[0].metric == "latency_p95"
    p95 = v.window.latency_ms()["p95"]
    assert p95 is not None and 150 <= p95 <= 150 * 1.1


def test_model_drift_against_the_baseline(deployed: Engine) -> None:
    with deployed.store.write_sql() as conn:
        artifact_id = SqliteTx(conn).registry.get_version(LINE, "v1.0").artifact_id
        baselines.store(
            SqliteTx(conn), artifact_id, "training", reference=None, metrics={"accuracy": 0.95}
        )
    feed(deployed, "v1.0", 200, within=0.82)
    v = version_report(deployed.report(), "v1.0")
    assert v.drift.model == pytest.approx((0.95 - 0.82) / 0.95, abs=0.01)
    assert [f.metric for f in v.findings] == ["model_drift"] and v.health == "warning"


def test_data_drift_waits_for_enough_values_then_names_the_drifted_feature(
    deployed: Engine,
) -> None:
    rng = np.random.default_rng(8)
    names = ("coverage", "complexity", "lint_density", "duplication", "churn")
    training = rng.normal(size=(5000, 5))
    reference = baselines.VersionReference.build(training, rng.normal(50, 5, 5000), names)
    with deployed.store.write_sql() as conn:
        artifact_id = SqliteTx(conn).registry.get_version(LINE, "v1.0").artifact_id
        baselines.store(SqliteTx(conn), artifact_id, "training", reference=reference, metrics={})
    drifted = rng.normal(size=(1000, 5)).astype(np.float32)
    drifted[:, 3] += 1.5  # duplication moved: PSI far past the critical band

    # 100 values: far above monitoring.min_samples (30), still too few for PSI to mean much.
    feed(deployed, "v1.0", 100, within=1.0, rows=drifted[:100])
    v = version_report(deployed.monitoring.evaluate(), "v1.0")
    assert v.drift.data is None and v.drift.features == ()
    assert v.health == "healthy" and "data_drift" not in {f.metric for f in v.findings}

    feed(deployed, "v1.0", 900, within=1.0, rows=drifted[100:])
    v = version_report(deployed.monitoring.evaluate(), "v1.0")
    assert v.drift.data is not None and v.drift.data >= 0.25
    assert v.drift.features[0].name == "duplication"
    assert v.health == "critical" and [f.metric for f in v.findings] == ["data_drift"]


def test_alerts_deduplicate_while_firing_and_resolve_when_clear(deployed: Engine) -> None:
    feed(deployed, "v1.0", 200, within=0.7)
    first = deployed.monitoring.evaluate().alerts
    again = deployed.monitoring.evaluate().alerts
    assert [a["id"] for a in first] == [a["id"] for a in again]
    assert again[0]["status"] == "firing" and again[0]["last_seen"] >= first[0]["last_seen"]
    feed(deployed, "v1.0", 2000, within=1.0)  # the window recovers
    cleared = deployed.monitoring.evaluate().alerts
    assert [(a["id"], a["status"]) for a in cleared] == [(first[0]["id"], "resolved")]
    assert deployed.status().health == "healthy"


def test_windows_start_at_the_current_deployment(deployed: Engine) -> None:
    # Minutes before this deployment of the version (an earlier stint) count in no window:
    # health describes what serves now.
    feed(deployed, "v1.0", 100, within=1.0, minutes_ago=120)
    feed(deployed, "v1.0", 50, within=1.0)
    v = version_report(deployed.report(), "v1.0")
    assert {name: w.predictions for name, w in v.windows.items()} == {
        "1h": 50,
        "24h": 50,
        "deploy": 50,
    }
    assert [p.predictions for p in v.series] == [50]


def test_critical_candidate_is_pulled_once_and_recorded(deployed: Engine) -> None:
    deployed.deploy(version="v2.0", traffic=10, ab_test="t")
    feed(deployed, "v2.0", 200, within=0.5, experiment="t", arm="candidate")
    report = deployed.monitoring.evaluate()
    assert report.actions and "aborted" in report.actions[0]
    assert deployed.experiment("t").status == "aborted"
    last = deployed.history()[-1]
    assert last.action == "abort" and last.actor == monitoring.AUTO_PULL_ACTOR
    assert last.note is not None and "auto-pulled" in last.note
    assert deployed.monitoring.evaluate().actions == ()
    assert len(deployed.history()) == 3  # deploy, start, one abort
    assert all(
        a["status"] == "resolved"
        for a in deployed.monitoring.evaluate().alerts
        if a["version"] == "v2.0"
    )


def test_promote_follows_the_verdict(deployed: Engine) -> None:
    deployed.deploy(version="v2.0", traffic=50, ab_test="t")
    feed(deployed, "v1.0", 300, within=0.80, experiment="t")
    feed(deployed, "v2.0", 300, within=0.95, experiment="t", arm="candidate")
    report = deployed.report()
    assert report.experiments[0].verdict.outcome == "candidate wins"
    change = deployed.promote("t")
    assert change.entry is not None and not change.entry.forced
    assert (deployed.experiment("t").end_reason or "").startswith("verdict: candidate wins")


def test_promote_refuses_an_undecided_test_unless_forced(deployed: Engine) -> None:
    deployed.deploy(version="v2.0", traffic=50, ab_test="t")
    feed(deployed, "v1.0", 50, within=0.9, experiment="t")
    feed(deployed, "v2.0", 50, within=0.9, experiment="t", arm="candidate")
    with pytest.raises(BeastError, match="not enough data"):
        deployed.promote("t")
    change = deployed.promote("t", force=True)
    assert change.entry is not None and change.entry.forced


def test_monitor_json_contract(deployed: Engine) -> None:
    deployed.deploy(version="v2.0", traffic=10, ab_test="t")
    feed(deployed, "v1.0", 100, within=0.9, experiment="t")
    out = beast(deployed.workspace, "monitor", "--json", "--readonly")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    v = next(x for x in doc["versions"] if x["version"] == "v1.0")
    for key in (
        "version",
        "role",
        "traffic",
        "predictions",
        "labelled",
        "accuracy",
        "mae",
        "latency_ms",
        "error_rate",
        "drift",
        "health",
    ):
        assert key in v, key
    assert set(v["latency_ms"]) == {"p50", "p95", "p99"}
    assert v["predictions"] == 100 and v["traffic"] == 90
    assert doc["experiments"][0]["verdict"] == "not enough data"
    assert "alerts" in doc


# `beast monitor` cold is measured against `beast status` (tests/bench/test_bench_status.py,
# target: within 50 ms): numpy does its arithmetic, and nothing it does not need loads.
# numpy.ma (≈ 15 ms: a plain np.unique asks it whether its input is masked), the label write
# path (feedback) and what only an opt-in automatic rollback or a running shadow uses are
# kept out of its imports.
MONITOR_MODULES = {
    "engine.monitoring",
    "engine.monitoring.abstats",
    "engine.monitoring.artifact_alerts",
    "engine.monitoring.baselines",
    "engine.monitoring.drift",
    "engine.monitoring.evidence",
    "engine.monitoring.report",
    "engine.monitoring.rollups",
    "engine.monitoring.shadow_report",
    "engine.monitoring.srm",
}
NOT_NEEDED = ("scipy", "pandas", "sklearn", "xgboost", "sqlite_utils", "psycopg", "textual")


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "print(' '.join(sorted(sys.modules)))\n"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return set(out.stdout.split())


def test_beast_monitor_cold_imports_only_what_it_uses(deployed: Engine) -> None:
    deployed.deploy(version="v2.0", traffic=10, ab_test="t")
    feed(deployed, "v1.0", 100, within=0.9, experiment="t")
    feed(deployed, "v2.0", 20, within=0.8, experiment="t", arm="candidate")
    ws = str(deployed.workspace.root)
    loaded = _loaded(
        "import sys\n"
        "from engine.cli.main import main\n"
        f"assert main(['--workspace', {ws!r}, 'monitor', '--json']) == 0\n"
    )
    monitoring = {m for m in loaded if m.startswith("engine.monitoring")}
    assert monitoring == MONITOR_MODULES, "a new import on every cold `beast monitor`: lazy?"
    numpy_itself = {m for m in _loaded("import sys, numpy\n") if m.split(".")[0] == "numpy"}
    assert {m for m in loaded if m.split(".")[0] == "numpy"} - numpy_itself == set()
    assert {m.split(".")[0] for m in loaded} & set(NOT_NEEDED) == set()


def test_dropped_log_rows_fire_an_alert_that_outlives_recovery(deployed: Engine) -> None:
    deployed.monitoring.note_log_drops(120, 120)
    firing = [a for a in deployed.report().alerts if a["metric"] == "prediction_log"]
    assert len(firing) == 1 and firing[0]["severity"] == "critical"
    assert "lost 120 acknowledged predictions" in firing[0]["message"]
    deployed.monitoring.evaluate()  # version alerts syncing must not resolve it
    deployed.monitoring.note_log_drops(5, 125)
    again = [a for a in deployed.report().alerts if a["metric"] == "prediction_log"]
    assert [a["id"] for a in again] == [firing[0]["id"]] and again[0]["status"] == "firing"
    deployed.monitoring.note_log_drops(0, 125)  # resolved only after [log] loss_alert_minutes
    done = [a for a in deployed.report().alerts if a["metric"] == "prediction_log"]
    assert done[0]["status"] == "firing"  # tests/test_log_loss.py: when it resolves
