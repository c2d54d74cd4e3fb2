"""Automatic rollback ([rollback] automatic = true): a production that turns critical within
the watch window after a change goes back to the previous production — once, with its
evidence, and never into a previous production that was critical too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from engine import Engine
from engine.monitoring import auto_rollback
from engine.monitoring import report as monitoring
from engine.monitoring.rollups import WindowMetrics
from tests.helpers import FEATURES, production, set_config
from tests.serving_helpers import serving
from tests.test_monitoring import feed


def switched_on(engine: Engine) -> Engine:
    set_config(engine.workspace, automatic="true")
    return Engine(engine.workspace, actor="tester")


@pytest.fixture
def auto(engine: Engine) -> Iterator[Engine]:
    """Automatic rollback on; v1.0 served well for the minutes before v2.0 replaced it."""
    on = switched_on(engine)
    on.deploy(version="v1.0")
    feed(on, "v1.0", 300, within=0.95, minutes_ago=3)
    on.deploy(version="v2.0", note="the new model")
    yield on
    on.close()


def collapse(engine: Engine, n: int) -> None:
    """n predictions served by the router (the real model of production) and labelled at
    least 30 points off each score (within the label range): production's accuracy
    collapses to 0."""
    rng = np.random.default_rng(7)
    with serving(engine.workspace) as (router, log):
        assert log is not None
        served = [
            router.predict(dict(zip(FEATURES, rng.uniform(0, 1, 5).tolist(), strict=True)))
            for _ in range(n)
        ]
        log.flush()
    for p in served:
        assert p.version == "v2.0" and p.score is not None
        actual = min(max(p.score - 30 if p.score > 50 else p.score + 30, 0.0), 100.0)
        assert engine.feedback(p.prediction_id, actual) == "recorded"


def test_a_critical_production_is_rolled_back_once_with_its_evidence(auto: Engine) -> None:
    collapse(auto, 200)  # 200 labelled, none within tolerance: critical

    seen = auto.monitoring.evaluate()

    [action] = seen.actions
    assert action.startswith("auto-rollback: ") and "v1.0" in action
    assert production(auto) == "v1.0"
    last = auto.history()[-1]
    assert last.action == "rollback" and last.actor == auto_rollback.AUTO_ROLLBACK_ACTOR
    assert (last.from_state.production, last.to_state.production) == ("v2.0", "v1.0")
    assert last.note is not None and "v2.0 critical within 30 min" in last.note
    assert last.evidence is not None and last.evidence["health"] == "critical"
    [judged] = last.evidence["versions"]
    assert (judged["version"], judged["health"], judged["labelled"]) == ("v2.0", "critical", 200)
    assert [f["metric"] for f in judged["findings"]] == ["accuracy"]

    # Now v1.0 turns critical too, within the window of the auto-rollback: it stays.
    feed(auto, "v1.0", 200, within=0.5)
    again = auto.monitoring.evaluate()
    assert monitoring_health(again, "v1.0") == "critical"
    assert again.actions == () and production(auto) == "v1.0"
    assert auto.history()[-1].id == last.id


def monitoring_health(report: monitoring.MonitorReport, version: str) -> str:
    return next(v.health for v in report.versions if v.version == version)


def test_not_when_the_previous_production_was_critical_too(engine: Engine) -> None:
    on = switched_on(engine)
    try:
        on.deploy(version="v1.0")
        feed(on, "v1.0", 300, within=0.5, minutes_ago=3)  # v1.0 was failing before the change
        on.deploy(version="v2.0")
        feed(on, "v2.0", 200, within=0.5)
        seen = on.monitoring.evaluate()
        assert monitoring_health(seen, "v2.0") == "critical"
        assert seen.actions == () and production(on) == "v2.0"
    finally:
        on.close()


def test_not_when_automatic_rollback_is_off(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    feed(engine, "v1.0", 300, within=0.95, minutes_ago=3)
    engine.deploy(version="v2.0")
    feed(engine, "v2.0", 200, within=0.5)
    seen = engine.monitoring.evaluate()
    assert monitoring_health(seen, "v2.0") == "critical"
    assert seen.actions == () and production(engine) == "v2.0"


def test_only_within_the_watch_window(auto: Engine) -> None:
    feed(auto, "v2.0", 200, within=0.5)
    report = auto.report()
    config = auto.config

    def judge(window: WindowMetrics, task: str) -> tuple[str, tuple[monitoring.Finding, ...]]:
        return monitoring.assess(window, monitoring.DriftSummary(None, None, None), config, task)

    def run(after_minutes: float) -> list[str]:
        return auto_rollback.run(
            auto.store,
            config,
            report,
            rollback=auto.rollback,
            target=auto.rollback_target,
            judge=judge,
            now=datetime.now(UTC) + timedelta(minutes=after_minutes),
        )

    assert run(31) == [] and production(auto) == "v2.0"  # watch_minutes = 30
    [done] = run(29)
    assert "v1.0" in done and production(auto) == "v1.0"
