"""`beast status` tells how a test ended: the verdict it ended with and how (promoted on
verdict, forced, aborted, auto-pulled); a running test points to `beast monitor`."""

from __future__ import annotations

import json

import pytest

from engine import Engine
from tests.helpers import beast
from tests.test_monitoring import feed


@pytest.fixture
def deployed(engine: Engine) -> Engine:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=50, ab_test="t")
    return engine


def status_of(engine: Engine) -> tuple[dict[str, object], str]:
    """The test's row in `beast status --json`, and `beast status`'s text."""
    as_json = beast(engine.workspace, "status", "--json")
    as_text = beast(engine.workspace, "status")
    assert as_json.returncode == 0 and as_text.returncode == 0, as_json.stderr + as_text.stderr
    [test] = json.loads(as_json.stdout)["experiments"]
    return test, as_text.stdout


def test_a_promotion_on_a_winning_verdict(deployed: Engine) -> None:
    feed(deployed, "v1.0", 300, within=0.80, experiment="t")
    feed(deployed, "v2.0", 300, within=0.95, experiment="t", arm="candidate")
    deployed.promote("t")
    test, shown = status_of(deployed)
    assert (test["verdict"], test["ending"]) == ("candidate wins", "promoted on verdict")
    assert "candidate wins" in shown and "promoted on verdict" in shown and "n/a" not in shown
    assert deployed.experiment("t").verdict == "candidate wins"


def test_a_forced_promotion_keeps_the_verdict_it_overrode(deployed: Engine) -> None:
    feed(deployed, "v1.0", 50, within=0.9, experiment="t")
    # The candidate's half too: a 50/0 split of a 50% test is a sample-ratio mismatch, which
    # --force does not override (tests/test_srm.py).
    feed(deployed, "v2.0", 50, within=0.9, experiment="t", arm="candidate")
    deployed.promote("t", force=True)
    test, shown = status_of(deployed)
    assert (test["verdict"], test["ending"], test["forced"]) == ("not enough data", "forced", True)
    assert "not enough data" in shown and "forced" in shown


def test_an_abort_by_hand(deployed: Engine) -> None:
    deployed.abort("t")
    test, shown = status_of(deployed)
    assert (test["verdict"], test["ending"]) == ("not enough data", "aborted")
    assert "aborted" in shown


def test_an_auto_pull(deployed: Engine) -> None:
    feed(deployed, "v2.0", 200, within=0.5, experiment="t", arm="candidate")
    assert deployed.monitoring.evaluate().actions
    test, shown = status_of(deployed)
    assert (test["status"], test["verdict"], test["ending"]) == (
        "aborted",
        "not enough data",
        "auto-pulled",
    )
    assert "auto-pulled" in shown


def test_a_rollback_that_ends_the_test(deployed: Engine) -> None:
    deployed.rollback()
    test, _ = status_of(deployed)
    assert (test["status"], test["verdict"], test["ending"]) == (
        "aborted",
        "not enough data",
        "aborted",
    )


def test_a_running_test_points_to_the_monitor(deployed: Engine) -> None:
    test, shown = status_of(deployed)
    assert (test["status"], test["verdict"], test["ending"]) == ("running", None, None)
    assert "running (see beast monitor)" in shown
