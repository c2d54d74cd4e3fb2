"""The evidence behind every change: a rollback, promotion, abort or auto-pull keeps, with its
history row, the figures of the monitoring report it was decided on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import Engine
from engine.monitoring import baselines
from engine.monitoring import report as monitoring
from engine.store.sqlite.tx import SqliteTx
from tests.helpers import beast
from tests.test_monitoring import LINE, feed


@pytest.fixture
def deployed(engine: Engine) -> Engine:
    engine.deploy(version="v1.0")
    return engine


def firing(report: monitoring.MonitorReport) -> list[dict[str, object]]:
    return [a for a in report.alerts if a["status"] == "firing"]


def test_a_rollback_keeps_health_findings_and_the_alerts_firing(deployed: Engine) -> None:
    deployed.deploy(version="v2.0")
    feed(
        deployed, "v2.0", 200, within=0.6
    )  # surely under the alert line (95% upper bound 0.657): critical
    seen = deployed.monitoring.evaluate()
    [alert] = firing(seen)

    change = deployed.rollback(note="accuracy fell")

    assert change.entry is not None and change.entry.evidence is not None
    evidence = change.entry.evidence
    assert evidence["window"] == "1h" and evidence["health"] == "critical"
    [version] = evidence["versions"]
    assert version["version"] == "v2.0" and version["role"] == "production"
    assert (version["health"], version["predictions"], version["labelled"]) == (
        "critical",
        200,
        200,
    )
    assert version["metric"] == "accuracy" and version["value"] == pytest.approx(0.6)
    [finding] = version["findings"]
    assert finding["metric"] == "accuracy" and finding["severity"] == "critical"
    assert finding["threshold"] == deployed.config.thresholds.accuracy_alert
    assert evidence["alerts"] == [
        {k: alert[k] for k in ("id", "severity", "line", "version", "metric", "message")}
        | {"value": alert["value"], "threshold": alert["threshold"]}
    ]
    assert evidence["test"] is None
    # Kept as written, in the store, the export and `beast history --json`.
    assert deployed.history()[-1].evidence == evidence
    exported = json.loads(deployed.workspace.history_export_path.read_text(encoding="utf-8"))
    assert exported[-1]["evidence"] == evidence
    out = beast(deployed.workspace, "history", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[-1]["evidence"] == evidence
    shown = beast(deployed.workspace, "history")
    assert "EVIDENCE" in shown.stdout and "health critical; 1 alert" in shown.stdout


def test_a_promotion_keeps_its_verdict_with_n_and_p_per_arm(deployed: Engine) -> None:
    deployed.deploy(version="v2.0", traffic=50, ab_test="t")
    feed(deployed, "v1.0", 300, within=0.80, experiment="t")
    feed(deployed, "v2.0", 240, within=0.95, experiment="t", arm="candidate")
    read = deployed.report().experiments[0]

    change = deployed.promote("t")

    assert change.entry is not None and change.entry.evidence is not None
    test = change.entry.evidence["test"]
    assert test["name"] == "t" and test["verdict"] == "candidate wins"
    assert test["metric"] == "accuracy" and test["reason"] == read.verdict.reason
    assert test["p"] == pytest.approx(read.verdict.p, rel=1e-12)
    assert test["lo"] == pytest.approx(read.verdict.lo, rel=1e-12) and test["lo"] > 0
    assert test["diff"] == pytest.approx(0.15)
    assert test["arms"] == {
        "control": {"version": "v1.0", "predictions": 300, "labelled": 300, "accuracy": 0.8},
        "candidate": {"version": "v2.0", "predictions": 240, "labelled": 240, "accuracy": 0.95},
    }
    assert [v["role"] for v in change.entry.evidence["versions"]] == ["production", "candidate"]
    assert change.entry.evidence_summary() == (
        "health healthy; 0 alerts; verdict candidate wins n 300/240"
    )


def test_an_auto_pull_keeps_the_report_it_decided_on(deployed: Engine) -> None:
    deployed.deploy(version="v2.0", traffic=10, ab_test="t")
    feed(deployed, "v2.0", 200, within=0.5, experiment="t", arm="candidate")

    assert deployed.monitoring.evaluate().actions

    last = deployed.history()[-1]
    assert last.action == "abort" and last.actor == monitoring.AUTO_PULL_ACTOR
    evidence = last.evidence
    assert evidence is not None and evidence["health"] == "critical"
    candidate = next(v for v in evidence["versions"] if v["role"] == "candidate")
    assert candidate["health"] == "critical" and candidate["labelled"] == 200
    assert {f["metric"] for f in candidate["findings"]} == {"accuracy"}
    # The alerts it fired in the same evaluation, before the pull resolved them: the
    # candidate's accuracy, and its split (control served none of the test's predictions).
    alerts = {a["metric"]: a for a in evidence["alerts"]}
    assert set(alerts) == {"accuracy", "srm"}
    alert = alerts["accuracy"]
    assert (alert["version"], alert["metric"], alert["severity"]) == (
        "v2.0",
        "accuracy",
        "critical",
    )
    assert evidence["test"]["verdict"] == "not enough data"
    assert evidence["test"]["arms"]["candidate"]["labelled"] == 200
    assert evidence["test"]["p"] is None  # NaN is no JSON: None


def test_an_abort_by_hand_and_a_rollback_during_a_test_keep_the_verdict(
    deployed: Engine,
) -> None:
    deployed.deploy(version="v2.0", traffic=50, ab_test="t1")
    feed(deployed, "v1.0", 40, within=0.9, experiment="t1")
    change = deployed.abort("t1", note="by hand")
    assert change.entry is not None and change.entry.evidence is not None
    assert change.entry.evidence["test"]["verdict"] == "not enough data"
    assert change.entry.evidence["test"]["arms"]["control"]["labelled"] == 40

    deployed.deploy(version="v3.0", traffic=20, ab_test="t2")
    change = deployed.rollback()
    assert change.entry is not None and change.entry.evidence is not None
    assert change.entry.evidence["test"]["name"] == "t2"
    assert change.entry.experiment == "t2"
    json.dumps(change.entry.evidence, allow_nan=False)


def test_the_evidence_names_drift_by_feature(deployed: Engine) -> None:
    rng = np.random.default_rng(8)
    names = ("coverage", "complexity", "lint_density", "duplication", "churn")
    reference = baselines.VersionReference.build(
        rng.normal(size=(5000, 5)), rng.normal(50, 5, 5000), names
    )
    deployed.deploy(version="v2.0")
    with deployed.store.write_sql() as conn:
        artifact_id = SqliteTx(conn).registry.get_version(LINE, "v2.0").artifact_id
        baselines.store(SqliteTx(conn), artifact_id, "training", reference=reference, metrics={})
    drifted = rng.normal(size=(1000, 5)).astype(np.float32)
    drifted[:, 3] += 1.5
    feed(deployed, "v2.0", 1000, within=1.0, rows=drifted)
    seen = deployed.report()

    change = deployed.rollback()

    assert change.entry is not None and change.entry.evidence is not None
    drift = change.entry.evidence["versions"][0]["drift"]
    assert set(drift) == {"model", "data", "score_psi", "features"}
    top = drift["features"][0]
    assert top["name"] == "duplication" and top["level"] == "critical"
    assert top["psi"] == seen.versions[0].drift.features[0].psi  # full precision
    assert top["ks"] == seen.versions[0].drift.features[0].ks
    assert drift["data"] == top["psi"]
