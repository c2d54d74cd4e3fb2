"""Acknowledged predictions that never reach the log are seen (issue 12 §1, RELIABILITY.md
"Predictions and feedback"): the critical `prediction_log` alert fires for dropped and
quarantined rows, and stays firing for `[log] loss_alert_minutes` after the last loss — not
until the engine's next round (250 ms), which is all it lasted before.

The engine here is the real HTTP application with its background loop (refresh, log stats,
the alert), a real writer and a real workspace; the poison row goes straight to the writer, as
a row the edge checks missed would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from engine import Engine, Workspace
from engine.core import ids
from engine.monitoring.report import Monitoring
from engine.serving.prediction_log import Record
from tests.helpers import beast, set_config
from tests.serving_helpers import db, version_id
from tests.test_http_api import AUTH, ROW, api_of, client_for, deploy_with_test, flush

LOG_ALERT = "prediction_log"


def _log_alerts(ws: Workspace) -> list[dict[str, object]]:
    engine = Engine(ws)
    try:
        return [a for a in engine.report().alerts if a["metric"] == LOG_ALERT]
    finally:
        engine.close()


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_quarantined_row_fires_the_alert_and_it_outlives_the_engines_next_round(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy_with_test(registered)
    calls: list[tuple[int, int]] = []
    real = Monitoring.note_log_drops

    def spy(service: Monitoring, since_last: int, total: int) -> None:  # calls through
        calls.append((since_last, total))
        real(service, since_last, total)

    monkeypatch.setattr(Monitoring, "note_log_drops", spy)
    with client_for(registered, refresh_s=0.1) as client:
        answers = [
            client.post("/v1/predict", json={"features": ROW}, headers=AUTH) for _ in range(20)
        ]
        assert all(a.status_code == 200 for a in answers), answers[0].text
        log = api_of(client).log
        assert log is not None
        now = time.time_ns() // 1_000_000
        poison = Record(
            ids.new_id(now),
            now,
            "quality-predictor",
            version_id(registered, "v1.0"),
            "production",
            "",
            "\ud800",
            b"\0" * 20,
            50.0,
            100,
            None,
        )
        log.submit(poison)
        flush(client)
        # The loop reported the loss, then ran again with nothing new: the moment the alert
        # used to resolve itself.
        _wait(
            lambda: any(since > 0 for since, _ in calls) and calls[-1][0] == 0,
            "a round with no new loss",
        )
        firing = _log_alerts(registered)
        assert [a["status"] for a in firing] == ["firing"]
        assert firing[0]["severity"] == "critical" and "lost 1 acknowledged" in str(
            firing[0]["message"]
        )
        for answer in answers:  # the poison row's neighbours are logged: feedback records
            pid = answer.json()["prediction_id"]
            got = client.post(
                "/v1/feedback", json={"prediction_id": pid, "actual": 50}, headers=AUTH
            )
            assert got.status_code == 200 and got.json()["status"] == "recorded", got.text
        refused = client.post(
            "/v1/feedback", json={"prediction_id": poison.pid, "actual": 50}, headers=AUTH
        )
        assert refused.status_code == 404 and "quarantined" in refused.json()["error"]
        assert log.stats().quarantined == 1
    # `beast monitor` evaluates (alerts sync) and still shows it, as text and as JSON.
    text = beast(registered, "monitor")
    assert text.returncode == 0, text.stderr
    assert "alerts: 1 firing" in text.stdout and "prediction log lost 1" in text.stdout
    doc = json.loads(beast(registered, "monitor", "--json").stdout)
    assert [a["status"] for a in doc["alerts"] if a["metric"] == LOG_ALERT] == ["firing"]


def _age_the_alert(ws: Workspace, minutes: float) -> None:
    """The last loss was `minutes` ago (as if the time had passed since it was seen)."""
    then = datetime.now(UTC) - timedelta(minutes=minutes)
    stamp = then.strftime("%Y-%m-%dT%H:%M:%S.") + f"{then.microsecond // 1000:03d}Z"
    conn = db(ws)
    try:
        with conn:
            conn.execute(
                "UPDATE alerts SET last_seen = ? WHERE metric = ? AND resolved_at IS NULL",
                (stamp, LOG_ALERT),
            )
    finally:
        conn.close()


def test_the_alert_resolves_once_its_window_has_passed_with_no_new_loss(
    registered: Workspace,
) -> None:
    set_config(registered, loss_alert_minutes="30")
    engine = Engine(registered)
    try:
        engine.monitoring.note_log_drops(3, 3)
        _age_the_alert(registered, 29)
        engine.monitoring.note_log_drops(0, 3)  # the engine's next rounds
        engine.monitoring.evaluate()  # and the next evaluations
        assert [a["status"] for a in _log_alerts(registered)] == ["firing"]
        engine.monitoring.note_log_drops(2, 5)  # a new loss: the window starts again
        _age_the_alert(registered, 29)
        engine.monitoring.evaluate()
        assert [a["status"] for a in _log_alerts(registered)] == ["firing"]
        _age_the_alert(registered, 31)
        engine.monitoring.evaluate()  # the daemon's timer, or `beast monitor`
        assert [a["status"] for a in _log_alerts(registered)] == ["resolved"]
        engine.monitoring.note_log_drops(1, 6)  # a later loss fires a new one
        statuses = sorted(str(a["status"]) for a in _log_alerts(registered))
        assert statuses == ["firing", "resolved"]
    finally:
        engine.close()
