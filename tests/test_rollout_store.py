"""A progressive rollout's state and transitions through the facade and the deploy service,
on both backends: each change one transaction with its history row and its evidence."""

from __future__ import annotations

import json
import subprocess

import pytest

from engine import BeastError, Engine
from engine.cli import render
from engine.core.errors import StateChanged
from engine.deploy import service as deploy_service
from tests.conftest import BOTH_BACKENDS
from tests.helpers import beast, beast_here

pytestmark = BOTH_BACKENDS


def _deploys(engine: Engine) -> deploy_service.Deployments:
    return deploy_service.Deployments(
        engine.store, engine.workspace.models_dir, "tester", engine._export_after_commit
    )


def _started(engine: Engine, steps: list[float] | None = None) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", ab_test="ro", rollout=steps or [10, 50, 100])


def _step(engine: Engine, figures: str = "gates") -> str:
    found = engine.experiment("ro")
    assert found.rollout is not None
    judged = deploy_service.Judged("candidate wins", "why", {"rollout": figures})
    return _deploys(engine).rollout_step(found, judged, found.rollout, note=None).message


def test_a_rollout_starts_at_its_first_step_and_status_carries_it(engine: Engine) -> None:
    _started(engine)
    status = engine.status()
    (test,) = status.experiments
    assert test.rollout is not None and test.traffic_bp == 1_000
    doc = status.to_json()["experiments"][0]["rollout"]
    assert (doc["steps"], doc["step"], doc["state"]) == ([10, 50, 100], 0, "running")
    candidate = [d for d in status.deployments if d.role == "candidate"]
    assert candidate[0].traffic_bp == 1_000
    assert engine.history()[-1].action == "ab_start"


def test_a_plain_test_has_no_rollout(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=20, ab_test="plain")
    assert engine.experiment("plain").rollout is None
    assert engine.status().to_json()["experiments"][0]["rollout"] is None
    with pytest.raises(BeastError, match="no rollout"):
        engine.pause_rollout("plain")


def test_steps_move_the_share_and_the_last_promotes(engine: Engine) -> None:
    _started(engine)
    assert "10% [10]→50→100" in render.status(engine.status())
    assert "10% → 50%" in _step(engine, "first")
    assert "50% 10→[50]→100" in render.status(engine.status())
    found = engine.experiment("ro")
    state = engine.status()
    assert found.traffic_bp == 5_000 and found.rollout is not None and found.rollout.step == 1
    assert [d.traffic_bp for d in state.deployments if d.role == "candidate"] == [5_000]
    step = engine.history()[-1]
    assert step.action == "rollout_step" and step.evidence == {"rollout": "first"}
    assert (step.from_state.candidate_bp, step.to_state.candidate_bp) == (1_000, 5_000)
    assert step.to_state.experiment == "ro" and step.to_state.candidate == "v2.0"
    assert "promoted" in _step(engine, "last")
    ended = engine.experiment("ro")
    assert (ended.status, ended.ending, ended.verdict) == (
        "promoted",
        "promoted on verdict",
        "candidate wins",
    )
    assert ended.rollout is not None and (ended.rollout.state, ended.rollout.step) == (
        "completed",
        2,
    )
    last = engine.history()[-1]
    assert last.action == "promote" and last.evidence == {"rollout": "last"}
    assert [d.version for d in engine.status().deployments] == ["v2.0"]


def test_pause_holds_resume_continues_each_with_its_evidence(engine: Engine) -> None:
    _started(engine)
    held = engine.pause_rollout("ro", note="looking")
    assert "paused at 10%" in held.message
    found = engine.experiment("ro")
    assert found.rollout is not None and found.rollout.state == "paused"
    assert "10% [10]→50→100 paused" in render.status(engine.status())
    with pytest.raises(BeastError, match="cannot pause"):
        engine.pause_rollout("ro")
    with pytest.raises(BeastError):  # a paused rollout does not advance
        _step(engine)
    resumed = engine.resume_rollout("ro")
    assert "resumed at 10%" in resumed.message
    again = engine.experiment("ro").rollout
    assert again is not None and again.state == "running"
    assert again.step_since > found.rollout.step_since
    pause, resume = engine.history()[-2:]
    assert (pause.action, resume.action) == ("rollout_pause", "rollout_resume")
    assert pause.from_state == pause.to_state and pause.note == "looking"
    for entry in (pause, resume):
        assert entry.evidence is not None and entry.evidence["test"]["name"] == "ro"


def test_a_rollout_judged_before_a_pause_is_not_moved_after_it(engine: Engine) -> None:
    _started(engine)
    seen = engine.experiment("ro")
    engine.pause_rollout("ro")
    engine.resume_rollout("ro")
    judged = deploy_service.Judged("candidate wins", "why", {})
    assert seen.rollout is not None
    with pytest.raises(StateChanged):
        _deploys(engine).rollout_step(seen, judged, seen.rollout, note=None)
    assert engine.experiment("ro").traffic_bp == 1_000


@pytest.mark.parametrize(("pulled", "state"), [(False, "aborted"), (True, "rolled back")])
def test_abort_ends_the_rollout_and_the_auto_pull_rolls_it_back(
    engine: Engine, pulled: bool, state: str
) -> None:
    _started(engine)
    _step(engine)
    if pulled:
        engine.abort("ro", reason="auto-pulled: rollout gate failed", pulled=True, actor="auto")
    else:
        engine.abort_rollout("ro", note="enough")
    ended = engine.experiment("ro")
    assert ended.status == "aborted" and ended.rollout is not None
    assert (ended.rollout.state, ended.rollout.step) == (state, 1)
    assert ended.ending == ("auto-pulled" if pulled else "aborted")
    assert engine.history()[-1].evidence is not None
    with pytest.raises(BeastError, match="is over"):
        engine.resume_rollout("ro")


def test_a_rollback_during_a_rollout_aborts_it(engine: Engine) -> None:
    _started(engine)
    engine.rollback()
    rollout = engine.experiment("ro").rollout
    assert rollout is not None and rollout.state == "aborted"


def test_the_cli_starts_pauses_and_refuses_in_one_line(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # What the commands print and return, by `beast`'s entry point in this process; the one
    # that starts the rollout is a real process (each cold one is ~2 s, on both backends).
    ws = engine.workspace

    def beast_in(*args: str) -> subprocess.CompletedProcess[str]:
        return beast_here(capsys, ws, *args)

    engine.deploy(version="v1.0")
    bad = beast_in("deploy", "--version", "v2.0", "--ab-test", "ro", "--rollout", "50,10,100")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "rise" in bad.stderr
    bad = beast_in("deploy", "--version", "v2.0", "--ab-test", "ro", "--rollout", "5,50")
    assert bad.returncode == 1 and "ending at 100" in bad.stderr
    bad = beast_in(
        "deploy", "--version", "v2.0", "--ab-test", "ro", "--rollout", "5,100", "--traffic", "9"
    )
    assert bad.returncode == 1 and "first step" in bad.stderr
    ok = beast(ws, "deploy", "--version", "v2.0", "--ab-test", "ro", "--rollout", "5,25,100")
    assert ok.returncode == 0, ok.stderr
    paused = beast_in("rollout", "pause", "ro", "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["history"]["action"] == "rollout_pause"
    status = json.loads(beast_in("status", "--json").stdout)
    rollout = status["experiments"][0]["rollout"]
    assert (rollout["steps"], rollout["step"], rollout["state"]) == ([5, 25, 100], 0, "paused")
    again = beast_in("rollout", "pause", "ro")
    assert again.returncode == 1 and "cannot pause" in again.stderr
    assert beast_in("rollout", "abort", "ro").returncode == 0
    assert engine.experiment("ro").ending == "aborted"


def test_the_http_api_pauses_resumes_and_aborts_with_the_token(engine: Engine) -> None:
    from tests.test_http_api import AUTH, client_for

    _started(engine)
    with client_for(engine.workspace) as client:
        refused = client.post("/v1/rollout/pause", json={"name": "ro"})
        assert refused.status_code == 401
        paused = client.post("/v1/rollout/pause", json={"name": "ro", "note": "n"}, headers=AUTH)
        assert paused.status_code == 200, paused.text
        assert paused.json()["history"]["action"] == "rollout_pause"
        twice = client.post("/v1/rollout/pause", json={"name": "ro"}, headers=AUTH)
        assert twice.status_code == 409 and "cannot pause" in twice.json()["error"]
        resumed = client.post("/v1/rollout/resume", json={"name": "ro"}, headers=AUTH)
        assert resumed.json()["history"]["action"] == "rollout_resume"
        ended = client.post("/v1/rollout/abort", json={"name": "ro"}, headers=AUTH)
        assert ended.json()["history"]["action"] == "abort"
        unknown = client.post("/v1/rollout/abort", json={"name": "nope"}, headers=AUTH)
        assert unknown.status_code == 404
    rollout = engine.experiment("ro").rollout
    assert rollout is not None and rollout.state == "aborted"


def test_the_repository_keeps_one_rollout_per_test_read_with_the_test(engine: Engine) -> None:
    from engine.core.errors import StoreError
    from engine.core.records import Rollout

    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=10, ab_test="t")
    first = Rollout((1_000, 2_500, 10_000), 0, "running", "a", "a")
    moved = Rollout((1_000, 2_500, 10_000), 1, "paused", "b", "c")
    with engine.store.write() as tx:
        tx.rollouts.put("t", first)
        assert tx.deployments.experiment("t").rollout == first  # type: ignore[union-attr]
        tx.rollouts.put("t", moved)  # replaced, never a second row
        tx.rollouts.move_share("t", 2_500)
    with engine.store.read() as tx:
        (found,) = tx.deployments.experiments()
    assert found.rollout == moved and found.traffic_bp == 2_500
    bad = Rollout((1_000, 10_000), 0, "sideways", "a", "a")  # type: ignore[arg-type]
    with pytest.raises(StoreError), engine.store.write() as tx:
        tx.rollouts.put("t", bad)
    with engine.store.write() as tx:  # the share back where the line state has it
        tx.rollouts.move_share("t", 1_000)
    assert engine.experiment("t").rollout == moved
    # ... but not where the rollout's step has it: `beast doctor` says so.
    assert any("rollout of t is at step 2" in p for p in engine.doctor().problems)
    engine.abort("t")  # the rollout ends with its test
    ended = engine.experiment("t").rollout
    assert ended is not None and ended.state == "aborted"
    assert engine.doctor().ok
