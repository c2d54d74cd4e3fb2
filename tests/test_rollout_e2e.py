"""Progressive rollouts end to end: real models served by the router, logged by the real
writer, labelled through feedback, judged by the daemon's Evaluator (its `tick`, in process),
every change read back from history with its evidence."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from engine import Engine, Workspace
from engine.server.daemon import Evaluator
from engine.serving.router import Prediction
from tests.helpers import assert_invariants, set_config
from tests.serving_helpers import serving

BATCH = 400  # predictions served between two evaluations


def _small_gates(ws: Workspace) -> None:
    """Steps decided on tens of labels, not hundreds (the test's seconds). The latency gate
    gets room: two models timed in one process on a shared machine differ by more than any
    ratio a model would be judged on (tests/test_rollout_rules.py holds that gate)."""
    set_config(ws, ab_min_samples="20")
    text = ws.config_path.read_text(encoding="utf-8")
    head, rollout = text.split("\n[rollout]\n", 1)
    rollout = re.sub(r"(?m)^min_samples = .*$", "min_samples = 20", rollout, count=1)
    rollout = re.sub(r"(?m)^latency_p99_ratio = .*$", "latency_p99_ratio = 100", rollout, count=1)
    # The small test models score above the default label range [0, 100].
    line = "\n[lines.quality-predictor]\nlabel_range = [0, 1000]\n"
    ws.config_path.write_text(f"{head}\n[rollout]\n{rollout}{line}", encoding="utf-8")


Labeller = Callable[[Prediction], float]


def _within(p: Prediction) -> float:
    assert p.score is not None
    return p.score


def _off(p: Prediction) -> float:
    """Nine points off the score, towards the middle: outside the ±5 tolerance."""
    assert p.score is not None
    return p.score + (-9 if p.score > 50 else 9)


def _run(
    ws: Workspace, rounds: int, *, candidate: Labeller, control: Labeller, before: int = 0
) -> list[list[str]]:
    """`rounds` times: serve a batch, log it, label it, one evaluation; the actions of each."""
    rng = np.random.default_rng(17)
    judge = Engine(ws, actor=Evaluator.actor)
    evaluator = Evaluator(ws, 0)
    actions: list[list[str]] = []
    try:
        with serving(ws) as (router, plog):
            assert plog is not None
            for _ in range(rounds):
                served = router.predict_batch((rng.random((BATCH, 5)) * 0.4).tolist())
                plog.flush()
                judge.feedback_many(
                    [
                        (p.prediction_id, (candidate if p.arm == "candidate" else control)(p))
                        for p in served
                        if p.score is not None
                    ]
                )
                before_tick = len(judge.history())
                evaluator.tick(judge)
                actions.append([e.action for e in judge.history()[before_tick:]])
                router.refresh(force=True)
    finally:
        judge.close()
    return actions


@pytest.fixture
def rolling(engine: Engine) -> Engine:
    _small_gates(engine.workspace)
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", ab_test="ro", rollout=[10, 50, 100])
    return Engine(engine.workspace, actor="tester")


def test_a_better_candidate_holds_while_paused_then_steps_up_and_is_promoted(
    rolling: Engine,
) -> None:
    ws = rolling.workspace
    rolling.pause_rollout("ro", note="wait")
    assert _run(ws, 2, candidate=_within, control=_off) == [[], []]  # paused: it holds
    paused = rolling.experiment("ro")
    assert paused.rollout is not None and paused.rollout.state == "paused"
    assert paused.traffic_bp == 1_000
    rolling.resume_rollout("ro")
    done = _run(ws, 6, candidate=_within, control=_off)
    assert [a for a in done if a] == [["rollout_step"], ["promote"]]
    ended = rolling.experiment("ro")
    assert (ended.status, ended.ending) == ("promoted", "promoted on verdict")
    assert ended.rollout is not None
    assert (ended.rollout.state, ended.rollout.step) == ("completed", 2)
    assert [d.version for d in rolling.status().deployments] == ["v2.0"]
    entries = rolling.history()
    step, promote = entries[-2:]
    assert (step.from_state.candidate_bp, step.to_state.candidate_bp) == (1_000, 5_000)
    assert step.actor == promote.actor == "beast-engine (rollout)"
    for entry, share in ((step, 10), (promote, 50)):
        assert entry.evidence is not None
        gates = entry.evidence["rollout"]
        assert gates["decision"] == "advance" and gates["steps"][gates["step"]] == share
        assert {g["gate"]: g["status"] for g in gates["gates"]}["verdict"] == "pass"
        assert entry.evidence["test"]["name"] == "ro"
    rolling.close()
    assert_invariants(ws)


def test_a_worse_candidate_is_rolled_back_at_its_first_step(rolling: Engine) -> None:
    ws = rolling.workspace
    done = _run(ws, 4, candidate=_off, control=_within)
    assert [a for a in done if a] == [["abort"]]
    ended = rolling.experiment("ro")
    assert (ended.status, ended.ending) == ("aborted", "auto-pulled")
    assert ended.rollout is not None
    assert (ended.rollout.state, ended.rollout.step) == ("rolled back", 0)
    pulled = rolling.history()[-1]
    assert pulled.evidence is not None and pulled.note is not None
    assert "rollout gate failed: verdict" in pulled.note
    gates = pulled.evidence["rollout"]
    assert gates["decision"] == "fail"
    assert {g["gate"]: g["status"] for g in gates["gates"]}["verdict"] == "fail"
    assert [d.version for d in rolling.status().deployments] == ["v1.0"]
    rolling.close()
    assert_invariants(ws)
