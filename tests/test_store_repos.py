"""The core state's repositories (registry, deployments, history, routes, alerts), through the
`Tx` protocol only.

What every backend must do the same: these speak to `store.write()` / `store.read()` and the
records they return, never to SQL, and each runs on SQLite and on PostgreSQL (BOTH_BACKENDS).
"""

from __future__ import annotations

import json

import pytest

from engine import Engine, Workspace
from engine.core.errors import StoreError
from engine.core.records import Baseline, Expect, LineSchema, Snapshot
from engine.deploy import rules
from engine.deploy import service as deploy_service
from tests.conftest import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS
SHA = "ab" * 32
_EXPORT_KEYS = [
    "id",
    "line",
    "at",
    "actor",
    "action",
    "version",
    "experiment",
    "from_state",
    "to_state",
    "undoes",
    "note",
    "forced",
    "evidence",
]


def _put_valid(engine: Engine, sha: str = SHA) -> int:
    with engine.store.write() as tx:
        tx.registry.add_line(LineSchema("line-a", 2, ("x", "y")), at="2025-01-01T00:00:00Z")
        return tx.registry.put_valid(
            sha256=sha,
            path="line-a-v1.json",
            size=10,
            format="json",
            line="line-a",
            n_features=2,
            feature_names=("x", "y"),
            xgboost_version="2.1.0",
            at="2025-01-01T00:00:00Z",
            actor="tester",
        )


def _put_rejected(engine: Engine, reason: str, sha: str = SHA) -> None:
    with engine.store.write() as tx:
        tx.registry.put_rejected(
            sha256=sha,
            path="line-a-v1.json",
            size=10,
            format="json",
            reason=reason,
            at="2025-01-01T00:00:01Z",
            actor="tester",
        )


def test_rejected_bytes_become_valid_in_place_and_valid_bytes_are_never_downgraded(
    workspace: Workspace,
) -> None:
    engine = Engine(workspace, actor="tester")
    try:
        _put_rejected(engine, "not a model")
        with engine.store.read() as tx:
            (rejected,) = tx.registry.artifacts()
        assert (rejected.status, rejected.reason, rejected.line) == (
            "rejected",
            "not a model",
            None,
        )

        artifact_id = _put_valid(engine)
        _put_rejected(engine, "judged again")
        with engine.store.read() as tx:
            (valid,) = tx.registry.artifacts()
            assert tx.registry.artifact_by_sha(SHA) == valid
        assert artifact_id == rejected.id == valid.id
        assert (valid.status, valid.reason, valid.line) == ("valid", None, "line-a")
        assert valid.feature_names == ("x", "y") and valid.path == "line-a-v1.json"
    finally:
        engine.close()


def test_a_line_keeps_the_schema_it_was_created_with(workspace: Workspace) -> None:
    engine = Engine(workspace, actor="tester")
    try:
        _put_valid(engine)
        with engine.store.write() as tx:
            tx.registry.add_line(LineSchema("line-a", 5), at="2025-01-02T00:00:00Z")
        with engine.store.read() as tx:
            assert tx.registry.line_schema("line-a") == LineSchema("line-a", 2, ("x", "y"))
            assert tx.registry.line_schema("line-b") is None
    finally:
        engine.close()


def test_a_version_names_one_artifact_and_an_alias_names_it_again(workspace: Workspace) -> None:
    engine = Engine(workspace, actor="tester")
    try:
        artifact_id = _put_valid(engine)
        with engine.store.write() as tx:
            ref = tx.registry.add_version(
                "line-a", "v1", artifact_id, kind="version", at="t", actor="a"
            )
            alias = tx.registry.add_version(
                "line-a", "best", artifact_id, kind="alias", at="t", actor="a"
            )
        assert (ref.name, ref.kind, ref.sha256) == ("v1", "version", SHA)
        assert (alias.name, alias.kind, alias.artifact_id) == ("best", "alias", artifact_id)
        with engine.store.read() as tx:
            assert tx.registry.first_version_of(artifact_id) == ref
            assert tx.registry.artifacts()[0].versions == ("v1", "best")
        with pytest.raises(StoreError), engine.store.write() as tx:
            tx.registry.add_version("line-a", "v1", artifact_id, kind="version", at="t", actor="a")
    finally:
        engine.close()


def test_a_test_start_keeps_production_since_and_its_end_keeps_it_too(engine: Engine) -> None:
    """The deploy service writes the new state through put_state: an arm that stays keeps
    when and by whom it started serving; the revision is the change's history row."""
    deploys = deploy_service.Deployments(
        engine.store, engine.workspace.models_dir, "tester", engine._export_after_commit
    )
    with engine.store.read() as tx:
        line = tx.registry.line_names()[0]
        v1, v2 = (tx.registry.get_version(line, v) for v in ("v1.0", "v2.0"))
    first = deploys.deploy(v1, bp=0, ab_test=None, note=None, expect=None)
    started = deploys.deploy(v2, bp=rules.traffic_bp(20), ab_test="t1", note=None, expect=None)
    with engine.store.read() as tx:
        state = tx.deployments.state(line)
        test = tx.deployments.experiment("t1")
    assert state is not None and test is not None and first.entry and started.entry
    assert state.production_since == first.entry.at and state.revision == started.entry.id
    assert state.candidate == v2 and state.candidate_bp == 2000 and state.experiment == "t1"
    assert (test.status, test.control, test.candidate, test.traffic_bp) == (
        "running",
        "v1.0",
        "v2.0",
        2000,
    )
    ended = deploys.abort(test, reason="aborted", note=None, expect=Expect(production="v1.0"))
    with engine.store.read() as tx:
        after = tx.deployments.state(line)
        closed = tx.deployments.experiment("t1")
        assert tx.deployments.any_deployed()
    assert after is not None and closed is not None and ended.entry
    assert after.production_since == first.entry.at and after.candidate is None
    assert after.experiment is None and after.revision == ended.entry.id
    assert (closed.status, closed.ended_by, closed.end_reason) == ("aborted", "tester", "aborted")


def test_a_baseline_is_added_once_replaced_on_demand_and_named_by_its_source(
    workspace: Workspace,
) -> None:
    engine = Engine(workspace, actor="tester")
    at = "2025-01-01T00:00:02Z"
    try:
        artifact_id = _put_valid(engine)
        with engine.store.write() as tx:
            ref = tx.registry.add_version("line-a", "v1", artifact_id, kind="version", at=at,
                                          actor="tester")  # fmt: skip
            assert tx.baselines.sources([ref.id]) == {}
            tx.baselines.add(artifact_id, Baseline(None, 0.5, 9.0, source="training"), at)
            tx.baselines.add(
                artifact_id, Baseline({"x": 1}, None, None, source="first_predictions"), at
            )
        with engine.store.read() as tx:
            assert tx.baselines.sources([ref.id, ref.id + 99]) == {ref.id: "training"}
            kept = tx.baselines.for_version(ref.id)
            assert kept is not None and kept.figures() == {"accuracy": 0.5, "mae": 9.0}
            assert tx.baselines.binned(artifact_id) is False
        with engine.store.write() as tx:
            tx.baselines.replace(
                artifact_id,
                Baseline({"y": 2}, 0.9, None, (("rmse", 3.0),), "reference", "ref.csv (10 rows)"),
                at,
            )
        with engine.store.read() as tx:
            assert tx.baselines.sources([ref.id]) == {ref.id: "reference"}
            found = tx.baselines.for_version(ref.id)
            assert found is not None and found.reference == {"y": 2}
            assert found.figures() == {"accuracy": 0.9, "rmse": 3.0}  # nothing of the old one
            assert found.detail == "ref.csv (10 rows)"
    finally:
        engine.close()


def test_a_history_row_keeps_its_evidence_and_a_test_its_ending(engine: Engine) -> None:
    """The figures a change was decided on travel with its row (JSON, read back equal, and in
    the history.json export); an ended test keeps the verdict it ended with and how. Read back
    inside the transaction, then rolled back: rows without their line state would break the
    workspace's invariants."""
    evidence = {"health": "critical", "verdict": {"outcome": "not enough data", "n": [40, 5]}}
    now = "2025-01-01T00:00:00Z"
    with pytest.raises(_RolledBack), engine.store.write() as tx:
        line = tx.registry.line_names()[0]
        v1, v2 = (tx.registry.get_version(line, v) for v in ("v1.0", "v2.0"))
        tx.deployments.start_experiment(
            "t1", control=v1, candidate=v2, traffic_bp=1000, at=now, actor="ops"
        )
        tx.deployments.end_experiment(
            "t1",
            status="aborted",
            at=now,
            actor="ops",
            reason="auto-pulled: health critical",
            forced=False,
            verdict="not enough data",
            ending="auto-pulled",
        )
        states = (Snapshot("v1.0", "v2.0", 1000), Snapshot("v1.0", None, 0))
        entry = tx.history.append(
            line=line,
            at=now,
            actor="ops",
            action="abort",
            version="v2.0",
            experiment="t1",
            from_state=states[0],
            to_state=states[1],
            evidence=evidence,
        )
        plain = tx.history.append(
            line=line,
            at=now,
            actor="ops",
            action="rollback",
            version="v1.0",
            experiment=None,
            from_state=states[1],
            to_state=states[1],
        )
        assert tx.history.entries(line)[-2].evidence == evidence == entry.evidence
        assert plain.evidence is None
        ended = tx.deployments.experiment("t1")
        assert ended is not None
        assert (ended.verdict, ended.ending) == ("not enough data", "auto-pulled")
        exported = json.loads(tx.history.export_text())
        assert exported[-2]["evidence"] == evidence and exported[-1]["evidence"] is None
        raise _RolledBack


class _RolledBack(Exception):
    """Ends a test's write transaction without committing it."""


def test_one_alert_fires_per_metric_is_refreshed_in_place_and_resolved_for_good(
    engine: Engine,
) -> None:
    serving = [("quality-predictor", "v1.0"), ("quality-predictor", "v2.0")]
    with engine.store.write() as tx:
        assert tx.alerts.worst_firing(serving) is None and tx.alerts.worst_firing([]) is None
        for metric, version in (("mae", "v1.0"), ("drift", "v1.0"), ("mae", "v3.0")):
            tx.alerts.fire(line="quality-predictor", version=version, metric=metric,
                           severity="warning", value=2.5, threshold=2.0, message=f"{metric} high",
                           at="t1")  # fmt: skip
    with engine.store.write() as tx:
        mae = tx.alerts.firing_one("quality-predictor", "v1.0", "mae")
        assert mae is not None and (mae.value, mae.threshold, mae.first_seen) == (2.5, 2.0, "t1")
        assert tx.alerts.firing_one("quality-predictor", "v2.0", "mae") is None
        assert tx.alerts.worst_firing(serving) == "warning"
        tx.alerts.refresh(mae.id, message="mae higher", at="t2", severity="critical", value=3.5)
        drift = tx.alerts.firing_one("quality-predictor", "v1.0", "drift")
        assert drift is not None
        tx.alerts.refresh(drift.id, message="still", at="t2")  # figures not given: kept
    with pytest.raises(StoreError), engine.store.write() as tx:
        tx.alerts.fire(line="quality-predictor", version="v1.0", metric="mae", severity="warning",
                       value=1.0, threshold=2.0, message="twice", at="t3")  # fmt: skip
    with engine.store.write() as tx:
        assert tx.alerts.worst_firing(serving) == "critical"
        refreshed = tx.alerts.firing_one("quality-predictor", "v1.0", "drift")
        assert refreshed is not None and (refreshed.severity, refreshed.value) == ("warning", 2.5)
        assert (refreshed.message, refreshed.first_seen, refreshed.last_seen) == ("still", "t1",
                                                                                  "t2")  # fmt: skip
        tx.alerts.resolve(mae.id, "t3")
        tx.alerts.resolve(drift.id, "t3")
    with engine.store.read() as tx:
        firing = tx.alerts.firing()
        assert [(a.version, a.metric) for a in firing] == [("v3.0", "mae")]
        assert tx.alerts.worst_firing(serving) is None
        recent = tx.alerts.recent(1)
        assert len(recent) == 2 and {a.resolved_at for a in recent} == {None, "t3"}
        resolved = [a for a in tx.alerts.recent(5) if a.resolved_at is not None]
        assert sorted(a.id for a in resolved) == sorted((mae.id, drift.id))
        assert max(resolved, key=lambda a: a.id).severity in ("critical", "warning")


def test_routes_follow_each_deployment_change_and_its_counter_moves_with_it(
    engine: Engine,
) -> None:
    """What the router reads: the served lines, and a counter that moves when another
    connection commits a change of deployment (the router reloads only when it moved)."""
    other = Engine(engine.workspace, actor="other")  # the change comes from elsewhere
    try:
        with engine.store.read() as tx:
            assert tx.routes.served_lines() == []
            before = tx.routes.change_counter()
        other.deploy(version="v1.0")
        with engine.store.read() as tx:
            (served,) = tx.routes.served_lines()
            deployed = tx.routes.change_counter()
            v1, v2 = (tx.registry.get_version(served.line, v) for v in ("v1.0", "v2.0"))
        assert deployed != before
        assert (served.production_id, served.candidate_id, served.candidate_bp) == (v1.id, None, 0)
        assert served.feature_names is not None and served.n_features == len(served.feature_names)
        other.deploy(version="v2.0", traffic=10, ab_test="t1")
    finally:
        other.close()
    with engine.store.read() as tx:
        (started,) = tx.routes.served_lines()
        assert tx.routes.change_counter() != deployed
    assert (started.candidate_id, started.candidate_bp, started.experiment) == (v2.id, 1000, "t1")
    assert started.revision > served.revision


def test_the_history_export_is_one_row_a_line_equal_to_the_rows(engine: Engine) -> None:
    """Whichever backend writes it: the seed's deployments/history.json, one row a line (what
    engine.core.history_export reads its last id from), the rows as the table holds them."""
    with engine.store.read() as tx:
        assert tx.history.export_text() == "[]\n"
    engine.deploy(version="v1.0", note="first — ünïcode")
    engine.deploy(version="v2.0", traffic=20, ab_test="t1")
    with engine.store.read() as tx:
        text = tx.history.export_text()
        entries = tx.history.entries()
    lines = text.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 2 + len(entries)
    rows = json.loads(text)
    assert [row["id"] for row in rows] == [entry.id for entry in entries]
    first = json.loads(lines[1].rstrip(","))
    assert list(first) == [*_EXPORT_KEYS]
    assert first["note"] == "first — ünïcode" and first["forced"] is False
    assert first["to_state"] == entries[0].to_state.to_json() and first["undoes"] == []
    assert json.loads(lines[2].rstrip(","))["to_state"] == entries[1].to_state.to_json()
