"""Deployment rules through the facade: one transaction and one history row per change.

The tests that state what the store must keep (a change's state and its one history row, the
one running test, the "state changed since you looked" rule, rollback through history, the
export) run on SQLite and on PostgreSQL (BOTH_BACKENDS); the refusals of bad input are the
rules' own, decided before the store is asked, and run on SQLite only.
"""

from __future__ import annotations

import json

import pytest

from engine import BeastError, Conflict, Engine, Expect, NotFound, StateChanged
from engine.core.records import Snapshot
from tests.conftest import BOTH_BACKENDS
from tests.helpers import production


def roles(engine: Engine) -> dict[str, tuple[str, float]]:
    return {d.version: (d.role, d.traffic_bp / 100) for d in engine.status().deployments}


@BOTH_BACKENDS
def test_first_deploy_goes_to_production_at_100(engine: Engine) -> None:
    change = engine.deploy(version="v1.0", note="first")
    assert roles(engine) == {"v1.0": ("production", 100.0)}
    assert change.entry is not None and change.entry.action == "deploy"
    assert change.entry.from_state == Snapshot() and change.entry.note == "first"
    assert change.entry.actor == "tester"


@BOTH_BACKENDS
def test_replacing_production_records_from_and_to(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    change = engine.deploy(version="v2.0")
    assert production(engine) == "v2.0"
    assert change.entry is not None
    assert (change.entry.from_state.production, change.entry.to_state.production) == (
        "v1.0",
        "v2.0",
    )
    assert "v1.0 → v2.0" in change.message


@BOTH_BACKENDS
def test_ab_test_splits_traffic_and_is_listed(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v3.0", traffic=10, ab_test="retrain-v3")
    assert roles(engine) == {"v1.0": ("production", 90.0), "v3.0": ("candidate", 10.0)}
    (test,) = engine.status().experiments
    assert (test.name, test.status, test.control, test.candidate) == (
        "retrain-v3",
        "running",
        "v1.0",
        "v3.0",
    )


@pytest.mark.parametrize("traffic", [0, 100, -5, 99.5, 150, 0.5, 12.345])
def test_ab_traffic_outside_1_to_99_is_refused(engine: Engine, traffic: float) -> None:
    engine.deploy(version="v1.0")
    with pytest.raises(BeastError, match="traffic"):
        engine.deploy(version="v2.0", traffic=traffic, ab_test="t")
    assert roles(engine) == {"v1.0": ("production", 100.0)}


def test_fractional_share_is_kept_in_basis_points(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=12.5, ab_test="t")
    assert roles(engine) == {"v1.0": ("production", 87.5), "v2.0": ("candidate", 12.5)}


def test_ab_test_without_production_is_refused(engine: Engine) -> None:
    with pytest.raises(BeastError, match="no production"):
        engine.deploy(version="v2.0", traffic=10, ab_test="t")
    assert engine.history() == []


@BOTH_BACKENDS
def test_second_running_test_and_duplicate_name_are_refused(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=10, ab_test="a")
    with pytest.raises(Conflict, match="already running"):
        engine.deploy(version="v3.0", traffic=10, ab_test="b")
    engine.abort("a")
    with pytest.raises(Conflict, match="already exists"):
        engine.deploy(version="v3.0", traffic=10, ab_test="a")


def test_candidate_must_differ_from_production(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    with pytest.raises(Conflict, match="production already"):
        engine.deploy(version="v1.0", traffic=10, ab_test="same")


def test_replacing_production_during_a_test_is_refused(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=10, ab_test="t")
    with pytest.raises(Conflict, match="promote or abort"):
        engine.deploy(version="v3.0")


def test_traffic_without_test_name_and_vice_versa_are_refused(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    with pytest.raises(BeastError, match="--ab-test"):
        engine.deploy(version="v2.0", traffic=10)
    with pytest.raises(BeastError, match="--traffic"):
        engine.deploy(version="v2.0", ab_test="t")


def test_promote_needs_force_until_statistics_exist(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v3.0", traffic=10, ab_test="retrain-v3")
    with pytest.raises(BeastError, match="--force"):
        engine.promote("retrain-v3")
    assert production(engine) == "v1.0"
    change = engine.promote("retrain-v3", force=True)
    assert roles(engine) == {"v3.0": ("production", 100.0)}
    assert change.entry is not None and change.entry.forced
    test = engine.experiment("retrain-v3")
    assert test.status == "promoted" and test.forced
    names = {v for a in engine.models().artifacts for v in a.versions}
    assert "ab-winner-retrain-v3" in names
    alias_sha = next(
        a.sha256 for a in engine.models().artifacts if "ab-winner-retrain-v3" in a.versions
    )
    v3_sha = next(a.sha256 for a in engine.models().artifacts if "v3.0" in a.versions)
    assert alias_sha == v3_sha


@BOTH_BACKENDS
def test_promote_unknown_or_ended_test_is_refused(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.promote("nope", force=True)
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=10, ab_test="t")
    engine.promote("t", force=True)
    with pytest.raises(Conflict, match="already ended"):
        engine.promote("t", force=True)
    with pytest.raises(Conflict, match="already ended"):
        engine.abort("t")


@BOTH_BACKENDS
def test_abort_returns_all_traffic_to_production(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=30, ab_test="t")
    change = engine.abort("t", note="looks wrong")
    assert roles(engine) == {"v1.0": ("production", 100.0)}
    assert engine.experiment("t").status == "aborted"
    assert change.entry is not None and change.entry.note == "looks wrong"


@BOTH_BACKENDS
def test_rollback_goes_back_through_history_not_flipping(engine: Engine) -> None:
    for version in ("v1.0", "v2.0", "v3.0"):
        engine.deploy(version=version)
    engine.rollback()
    assert production(engine) == "v2.0"
    engine.rollback()
    assert production(engine) == "v1.0"
    with pytest.raises(BeastError, match="first production"):
        engine.rollback()
    assert production(engine) == "v1.0"


def test_rollback_after_a_new_deploy_continues_the_stack(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0")
    engine.rollback()  # back to v1.0
    engine.deploy(version="v3.0")
    engine.rollback()
    assert production(engine) == "v1.0"


@BOTH_BACKENDS
def test_rollback_during_a_test_aborts_it_and_keeps_production(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0")
    engine.deploy(version="v3.0", traffic=10, ab_test="t")
    change = engine.rollback()
    assert roles(engine) == {"v2.0": ("production", 100.0)}
    assert engine.experiment("t").status == "aborted"
    assert "aborted" in change.message
    engine.rollback()
    assert production(engine) == "v1.0"


@BOTH_BACKENDS
def test_rollback_of_a_promotion_returns_to_the_control(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=10, ab_test="t")
    engine.promote("t", force=True)
    engine.rollback()
    assert production(engine) == "v1.0"
    with pytest.raises(BeastError, match="first production"):
        engine.rollback()


def test_aborted_test_is_skipped_by_rollback(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0")
    engine.deploy(version="v3.0", traffic=10, ab_test="t")
    engine.abort("t")
    engine.rollback()
    assert production(engine) == "v1.0"


def test_rollback_to_a_named_version_unwinds_the_stack(engine: Engine) -> None:
    for version in ("v1.0", "v2.0", "v3.0", "v4.0"):
        engine.deploy(version=version)
    change = engine.rollback("v2.0")
    assert production(engine) == "v2.0"
    assert change.entry is not None and len(change.entry.undoes) == 2
    engine.rollback()
    assert production(engine) == "v1.0"


def test_rollback_to_a_version_that_never_served_is_a_jump(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.rollback("v4.0")
    assert production(engine) == "v4.0"
    engine.rollback()
    assert production(engine) == "v1.0"


def test_rollback_refusals(engine: Engine) -> None:
    with pytest.raises(BeastError):
        engine.rollback()
    engine.deploy(version="v1.0")
    with pytest.raises(Conflict, match="already production"):
        engine.rollback("v1.0")
    with pytest.raises(NotFound, match="no version v9"):
        engine.rollback("v9")


@BOTH_BACKENDS
def test_expected_state_refuses_a_stale_view(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    seen = engine.status().revisions["quality-predictor"]
    engine.deploy(version="v2.0")
    with pytest.raises(StateChanged, match="state changed since you looked, retry"):
        engine.deploy(version="v3.0", expect=Expect(production="v1.0"))
    with pytest.raises(StateChanged, match="retry"):
        engine.rollback(expect=Expect(revision=seen))
    assert production(engine) == "v2.0"
    engine.deploy(version="v3.0", expect=Expect(production="v2.0"))
    assert production(engine) == "v3.0"


@BOTH_BACKENDS
def test_rerunning_a_rollback_with_the_seen_state_is_a_noop(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0")
    first = engine.rollback(expect=Expect(production="v2.0"))
    assert first.changed
    rows = len(engine.history())
    again = engine.rollback(expect=Expect(production="v2.0"))
    assert not again.changed and "already rolled back" in again.message
    assert len(engine.history()) == rows
    assert production(engine) == "v1.0"


@BOTH_BACKENDS
def test_history_export_matches_the_table(engine: Engine) -> None:
    engine.deploy(version="v1.0", note="go")
    engine.deploy(version="v2.0", traffic=10, ab_test="t")
    engine.abort("t")
    exported = json.loads(engine.workspace.history_export_path.read_text())
    assert [row["id"] for row in exported] == [e.id for e in engine.history()]
    assert [row["action"] for row in exported] == ["deploy", "ab_start", "abort"]
    assert exported[0]["note"] == "go"
    leftovers = list(engine.workspace.deployments_dir.glob(".history.json.*"))
    assert leftovers == []


@BOTH_BACKENDS
def test_every_change_writes_exactly_one_history_row(engine: Engine) -> None:
    steps = [
        lambda: engine.deploy(version="v1.0"),
        lambda: engine.deploy(version="v2.0"),
        lambda: engine.deploy(version="v3.0", traffic=20, ab_test="x"),
        lambda: engine.promote("x", force=True),
        engine.rollback,
        lambda: engine.rollback("v1.0"),
    ]
    for count, step in enumerate(steps, start=1):
        step()
        assert len(engine.history()) == count
    refused = [lambda: engine.rollback("v1.0"), lambda: engine.abort("x")]
    for step in refused:
        with pytest.raises(BeastError):
            step()
    assert len(engine.history()) == len(steps)


def test_ssh_client_is_recorded_as_who(registered, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SSH_CLIENT", "203.0.113.5 51234 22")
    engine = Engine(registered)
    try:
        change = engine.deploy(version="v1.0")
    finally:
        engine.close()
    assert change.entry is not None and change.entry.actor.endswith("via 203.0.113.5")


def test_several_lines_need_model(engine: Engine) -> None:
    from tests.helpers import train_model

    path = train_model(engine.workspace.models_dir / "churn-model-v1.json", seed=9)
    engine.register(path)
    with pytest.raises(BeastError, match="--model"):
        engine.deploy(version="v1.0")
    engine.deploy(version="v1.0", model="quality-predictor")
    engine.deploy(version="v1", model="churn-model")
    assert {(d.line, d.version) for d in engine.status().deployments} == {
        ("quality-predictor", "v1.0"),
        ("churn-model", "v1"),
    }


def test_jump_rollback_during_a_test_drops_the_test_from_the_stack(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0")
    engine.deploy(version="v3.0", traffic=10, ab_test="t")
    engine.rollback("v4.0")  # never served: a jump; it aborts the running test
    assert engine.experiment("t").status == "aborted"
    engine.rollback()
    assert production(engine) == "v2.0"
    engine.rollback()  # the aborted test's start must not be undone a second time
    assert production(engine) == "v1.0"


def test_export_failure_after_commit_warns_and_keeps_the_change(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    from pathlib import Path

    engine.deploy(version="v1.0")

    def no_space(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("engine.core.history_export.atomic_write", no_space)
    change = engine.deploy(version="v2.0")
    assert "doctor --repair" in change.message
    assert production(engine) == "v2.0"
    monkeypatch.undo()
    assert engine.doctor(repair=True).warnings == ()
