"""A running rollout's candidate whose health turns critical is pulled by its rollout's health
gate in the leader's evaluation (`Engine.evaluate`: one decision-maker per test, the history
row naming the gate), and by the auto-pull wherever rollouts are not judged (`beast monitor`)
or the rollout is paused."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.deploy.rollouts import ROLLOUT_ACTOR
from engine.monitoring.report import AUTO_PULL_ACTOR
from tests.test_monitoring import feed

TEST = "ro"


@pytest.fixture
def rolling(engine: Engine) -> Engine:
    """v1.0 in production, v2.0 rolling out 10 → 50 → 100, its errors critical (40%)."""
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", ab_test=TEST, rollout=[10, 50, 100])
    feed(engine, "v1.0", 900, within=0.8, experiment=TEST)
    feed(engine, "v2.0", 100, within=0.8, errors=0.4, experiment=TEST, arm="candidate")
    return engine


def test_the_leader_pulls_a_critical_rollout_by_its_health_gate(rolling: Engine) -> None:
    rolling.evaluate()
    [pull] = [e for e in rolling.history() if e.action == "abort"]
    assert pull.actor == ROLLOUT_ACTOR
    assert pull.note is not None and pull.note.startswith("rollout gate failed: health:")
    assert "error rate" in pull.note
    assert pull.evidence is not None
    gates = {g["gate"]: g["status"] for g in pull.evidence["rollout"]["gates"]}
    assert gates["health"] == "fail"
    ended = rolling.experiment(TEST)
    assert ended.rollout is not None and ended.rollout.state == "rolled back"
    assert ended.ending == "auto-pulled"


def test_beast_monitor_still_pulls_it_with_the_auto_pull(rolling: Engine) -> None:
    rolling.monitoring.evaluate()  # what `beast monitor` runs: no rollout judged
    [pull] = [e for e in rolling.history() if e.action == "abort"]
    assert pull.actor == AUTO_PULL_ACTOR
    assert rolling.experiment(TEST).rollout.state == "rolled back"  # type: ignore[union-attr]


def test_a_paused_rollout_is_pulled_by_the_auto_pull(rolling: Engine) -> None:
    rolling.pause_rollout(TEST)
    rolling.evaluate()
    [pull] = [e for e in rolling.history() if e.action == "abort"]
    assert pull.actor == AUTO_PULL_ACTOR
