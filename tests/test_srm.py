"""Sample-ratio mismatch: a test whose arms served a split far from its configured share fires
the `srm` alert and cannot be promoted (not even with --force) until the alert is
acknowledged — by the facade, `beast alerts ack ID` or POST /v1/alerts/{id}/ack."""

from __future__ import annotations

import json

import pytest

from engine import Engine
from engine.core.errors import Conflict, NotFound
from engine.monitoring import report as monitoring
from engine.monitoring import srm
from tests.conftest import BOTH_BACKENDS
from tests.helpers import beast
from tests.test_http_api import AUTH, client_for
from tests.test_monitoring import feed

TEST = "t"


@pytest.fixture
def testing(engine: Engine) -> Engine:
    """v1.0 in production, v2.0 a 50% candidate of test `t`."""
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=50, ab_test=TEST)
    return engine


def skew(engine: Engine) -> None:
    """600 predictions served by control, 400 by the candidate, of a 50% test: a broken split
    (p ≈ 4e-8); the candidate is clearly better, so only the split stands in the way."""
    feed(engine, "v1.0", 600, within=0.80, experiment=TEST)
    feed(engine, "v2.0", 400, within=0.95, experiment=TEST, arm="candidate")


def srm_alerts(report: monitoring.MonitorReport) -> list[dict[str, object]]:
    return [a for a in report.alerts if a["metric"] == srm.METRIC]


def test_a_skewed_split_fires_srm_and_blocks_promotion_until_acknowledged(
    testing: Engine,
) -> None:
    skew(testing)
    seen = testing.monitoring.evaluate()

    [test] = seen.experiments
    assert test.verdict.outcome == "candidate wins"
    check = test.srm
    assert check is not None and check.mismatch and not check.acknowledged
    assert (check.control, check.candidate, check.share) == (600, 400, 0.5)
    assert check.p < testing.config.monitoring.srm_p
    [alert] = srm_alerts(seen)
    assert (alert["line"], alert["version"], alert["severity"]) == (
        "quality-predictor",
        "v2.0",
        "critical",
    )
    assert alert["status"] == "firing" and alert["acknowledged_at"] is None
    message = str(alert["message"])
    assert "control 600, candidate 400" in message and "expected candidate share 50%" in message
    assert f"p = {check.p:.2g}" in message
    shown = seen.to_json()["experiments"][0]["srm"]
    assert shown["units"] == {"control": 600, "candidate": 400}
    assert shown["unit"] == "prediction"  # no key among them: the request is the unit

    for force in (False, True):  # a broken split makes every figure wrong: --force too
        with pytest.raises(Conflict, match=f"alert {alert['id']} .*beast alerts ack {alert['id']}"):
            testing.promote(TEST, force=force)
    assert testing.experiment(TEST).status == "running"

    acked = testing.acknowledge_alert(int(str(alert["id"])), note="router fixed")
    assert acked.acknowledged_by == "tester" and acked.acknowledged_note == "router fixed"
    again = testing.monitoring.evaluate()
    assert again.experiments[0].srm is not None and again.experiments[0].srm.acknowledged
    [still] = srm_alerts(again)  # acknowledged is not resolved: the split is still off
    assert still["status"] == "firing" and still["id"] == alert["id"]

    change = testing.promote(TEST)
    assert change.entry is not None and change.entry.action == "promote"
    # The test ended: its srm alert resolves at the next evaluation.
    [ended] = srm_alerts(testing.monitoring.evaluate())
    assert ended["status"] == "resolved"


def test_a_resolved_srm_alert_still_blocks_until_acknowledged(testing: Engine) -> None:
    skew(testing)
    [alert] = srm_alerts(testing.monitoring.evaluate())
    feed(testing, "v2.0", 200, within=0.95, experiment=TEST, arm="candidate")  # 600 / 600
    later = testing.monitoring.evaluate()
    assert later.experiments[0].srm is not None and not later.experiments[0].srm.mismatch
    [resolved] = srm_alerts(later)
    assert resolved["status"] == "resolved"
    with pytest.raises(Conflict, match=f"alert {alert['id']}"):
        testing.promote(TEST)


def test_a_fair_split_fires_nothing(testing: Engine) -> None:
    feed(testing, "v1.0", 510, within=0.80, experiment=TEST)
    feed(testing, "v2.0", 490, within=0.95, experiment=TEST, arm="candidate")
    seen = testing.monitoring.evaluate()
    check = seen.experiments[0].srm
    assert check is not None and not check.mismatch and check.p == 1.0
    assert srm_alerts(seen) == []
    assert testing.promote(TEST).entry is not None


def test_a_step_is_checked_from_its_own_minute_at_its_own_share(testing: Engine) -> None:
    # Earlier minutes served 50/50; from the step's minute on, 90/10 of a step at 10%.
    feed(testing, "v1.0", 500, within=0.8, experiment=TEST, minutes_ago=3)
    feed(testing, "v2.0", 500, within=0.8, experiment=TEST, arm="candidate", minutes_ago=3)
    feed(testing, "v1.0", 900, within=0.8, experiment=TEST)
    feed(testing, "v2.0", 100, within=0.8, experiment=TEST, arm="candidate")
    test = testing.experiment(TEST)
    start = monitoring.now_minute() - 1
    with testing.store.read() as tx:
        whole = srm.check(tx, testing.config, test)
        step = srm.check(tx, testing.config, test, since_minute=start, share_bp=1000)
        at_half = srm.check(tx, testing.config, test, since_minute=start)
        full = srm.check(tx, testing.config, test, share_bp=10_000)
    assert whole is not None and (whole.control, whole.candidate) == (1400, 600)
    assert whole.mismatch  # 30% served of a 50% test
    assert step is not None and (step.control, step.candidate) == (900, 100)
    assert not step.mismatch and step.share == 0.1
    assert at_half is not None and at_half.mismatch
    assert full is None  # at 100% there is no split to check


def test_beast_alerts_lists_and_acks(testing: Engine) -> None:
    skew(testing)
    testing.monitoring.evaluate()
    ws = testing.workspace
    listed = beast(ws, "alerts", "--json")
    assert listed.returncode == 0, listed.stderr
    [alert] = [a for a in json.loads(listed.stdout) if a["metric"] == "srm"]
    assert alert["acknowledged_at"] is None and alert["status"] == "firing"
    shown = beast(ws, "alerts")
    assert f"{alert['id']}" in shown.stdout and "sample-ratio mismatch" in shown.stdout

    refused = beast(ws, "promote", TEST, "--force")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"beast: cannot promote {TEST}: sample-ratio mismatch alert {alert['id']} is not "
        f"acknowledged (check the split, then `beast alerts ack {alert['id']}`)"
    ]

    missing = beast(ws, "alerts", "ack", "9999")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no alert 9999" in missing.stderr

    done = beast(ws, "alerts", "ack", str(alert["id"]), "--note", "checked", "--json")
    assert done.returncode == 0, done.stderr
    acked = json.loads(done.stdout)
    assert acked["acknowledged_note"] == "checked" and acked["acknowledged_at"] is not None
    assert beast(ws, "promote", TEST).returncode == 0


def test_ack_over_http_needs_the_token(testing: Engine) -> None:
    skew(testing)
    [alert] = srm_alerts(testing.monitoring.evaluate())
    path = f"/v1/alerts/{alert['id']}/ack"
    with client_for(testing.workspace) as client:
        assert client.post(path, json={}).status_code == 401
        assert client.post("/v1/alerts/9999/ack", json={}, headers=AUTH).status_code == 404
        assert client.post("/v1/alerts/x/ack", json={}, headers=AUTH).status_code == 404
        bad = client.post(path, json={"nope": 1}, headers=AUTH)
        assert bad.status_code == 422 and "unknown field" in bad.json()["error"]
        done = client.post(path, json={"note": "seen", "actor": "ops"}, headers=AUTH)
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["id"] == alert["id"] and body["acknowledged_note"] == "seen"
        assert str(body["acknowledged_by"]).startswith("ops (api from")
    assert testing.promote(TEST).entry is not None


@BOTH_BACKENDS
def test_the_repository_acknowledges_once(engine: Engine) -> None:
    with engine.store.write() as tx:
        for version in ("v1.0", "v2.0"):
            tx.alerts.fire(
                line="l",
                version=version,
                metric="srm",
                severity="critical",
                value=1e-6,
                threshold=0.001,
                message="m",
                at="2026-01-01T00:00:00.000Z",
            )
    with engine.store.read() as tx:
        [first] = tx.alerts.since("l", "v1.0", "srm", "2026-01-01T00:00:00.000Z")
        assert tx.alerts.since("l", "v1.0", "srm", "2026-01-01T00:00:00.001Z") == []
    with engine.store.write() as tx:
        tx.alerts.acknowledge(first.id, at="2026-01-01T00:01:00.000Z", by="a", note="n")
        tx.alerts.acknowledge(first.id, at="2026-01-01T00:02:00.000Z", by="b")  # the first stays
    with engine.store.read() as tx:
        got = tx.alerts.get(first.id)
        assert got is not None
        assert (got.acknowledged_at, got.acknowledged_by, got.acknowledged_note) == (
            "2026-01-01T00:01:00.000Z",
            "a",
            "n",
        )
        assert got.to_json()["acknowledged_by"] == "a"
        other = tx.alerts.get(first.id + 1)
        assert other is not None and other.acknowledged_at is None
        assert tx.alerts.get(first.id + 2) is None
    with pytest.raises(NotFound, match="no alert"):
        engine.acknowledge_alert(first.id + 2)


def test_a_skewed_split_no_evaluation_has_seen_yet_still_blocks_promotion(
    testing: Engine,
) -> None:
    """The block reads the split itself, not only the alerts an evaluation fired: a promote
    right after the traffic (no `beast monitor`, no engine evaluating) is refused too, and
    the next evaluation raises the alert to acknowledge."""
    skew(testing)
    with pytest.raises(Conflict, match=r"sample-ratio mismatch .*600/400.*beast monitor"):
        testing.promote(TEST, force=True)
    assert testing.experiment(TEST).status == "running"
    [alert] = srm_alerts(testing.monitoring.evaluate())
    testing.acknowledge_alert(int(str(alert["id"])))
    assert testing.promote(TEST).entry is not None
