"""The guide's "Deployment Checklist" as `beast deploy`'s preflight: each item checked and
unchecked on a real workspace (real models, reference files scored by them, the `replicas`
table an engine's heartbeat writes), `--strict` and `[deploy] strict = true` refusing with
nothing changed, and passing once every item is checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from engine import Engine, Workspace
from engine.deploy import preflight
from engine.store.replicas import Replica
from tests.helpers import FEATURES, beast, model_path, production_of, set_config, train_model
from tests.serving_helpers import LINE

ALL = (
    preflight.MODEL_VALIDATED,
    preflight.VALIDATION_SET,
    preflight.METRICS_ACCEPTABLE,
    preflight.AB_TEST,
    preflight.MONITORING,
    preflight.ROLLBACK_PLAN,
)


def _wide_labels(ws: Workspace) -> None:
    """The test models score up to ~250 (the seed's label range is 0–100)."""
    with ws.config_path.open("a", encoding="utf-8") as f:
        f.write(f"\n[lines.{LINE}]\nlabel_range = [-1000, 1000]\n")


def with_reference(ws: Workspace, tmp_path: Path, version: str, *, off_by: float) -> None:
    """Train and register `version` with a reference file labelled with its own scores moved
    by `off_by` points (0: accuracy 1; 50: accuracy 0, beyond the ±5 tolerance)."""
    model = train_model(model_path(ws, version), seed=50 + len(version))
    x = np.random.default_rng(3).random((200, len(FEATURES))).astype(np.float32)
    frame = pd.DataFrame(x, columns=list(FEATURES))
    frame["score"] = xgb.Booster(model_file=str(model)).inplace_predict(x) + off_by
    csv = tmp_path / f"{version}.csv"
    frame.to_csv(csv, index=False)
    engine = Engine(ws)
    try:
        engine.register(model, reference=csv)
    finally:
        engine.close()


def engine_leads(ws: Workspace, *, seen_ago_s: float = 0.0) -> None:
    """What a leading `beast engine`'s heartbeat writes into the `replicas` table."""
    at = (datetime.now(UTC) - timedelta(seconds=seen_ago_s)).isoformat().replace("+00:00", "Z")
    engine = Engine(ws)
    try:
        with engine.store.write() as tx:
            tx.replicas.announce(Replica("host/1", "host", 1, None, at, at, None))
            tx.replicas.heartbeat("host/1", at, leading=True)
    finally:
        engine.close()


def items(p: preflight.Preflight) -> dict[str, preflight.Item]:
    assert tuple(i.name for i in p.items) == ALL
    return {i.name: i for i in p.items}


def checked(p: preflight.Preflight) -> dict[str, bool]:
    return {name: i.checked for name, i in items(p).items()}


def test_a_first_deploy_of_an_unvalidated_model_without_an_engine(engine: Engine) -> None:
    _, found = engine.preflight(version="v1.0")
    assert checked(found) == {
        preflight.MODEL_VALIDATED: False,  # registered without reference or training metrics
        preflight.VALIDATION_SET: False,
        preflight.METRICS_ACCEPTABLE: False,
        preflight.AB_TEST: True,  # nothing to compare a first production with
        preflight.MONITORING: False,
        preflight.ROLLBACK_PLAN: False,
    }
    figures = {name: i.figure for name, i in items(found).items()}
    assert "baseline: none" in figures[preflight.MODEL_VALIDATED]
    assert "no accuracy figure" in figures[preflight.METRICS_ACCEPTABLE]
    assert "first production of quality-predictor" in figures[preflight.AB_TEST]
    assert "no previous production" in figures[preflight.ROLLBACK_PLAN]
    assert not found.ok and found.unchecked == tuple(n for n, c in checked(found).items() if not c)
    assert engine.status().deployments == ()  # a preflight changes nothing


def test_every_item_checked(registered: Workspace, tmp_path: Path) -> None:
    _wide_labels(registered)
    with_reference(registered, tmp_path, "v5.0", off_by=0.0)
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(version="v1.0")
        engine_leads(registered)
        _, found = engine.preflight(version="v5.0", traffic=10, ab_test="t5")
    finally:
        engine.close()
    assert found.ok, found.to_json()
    figures = {name: i.figure for name, i in items(found).items()}
    assert figures[preflight.MODEL_VALIDATED].startswith("v5.0 registered; reference metrics:")
    assert "reference file (v5.0.csv (200 rows))" in figures[preflight.VALIDATION_SET]
    assert figures[preflight.METRICS_ACCEPTABLE] == "baseline accuracy 1.00 ≥ min 0.800"
    assert figures[preflight.AB_TEST] == "A/B test t5: candidate at 10.0%"
    assert figures[preflight.MONITORING] == "engine host/1 leads this workspace"
    assert figures[preflight.ROLLBACK_PLAN] == "`beast rollback` goes back to v1.0"
    doc = found.to_json()
    assert doc["ok"] is True and doc["items"][0] == {
        "name": preflight.MODEL_VALIDATED,
        "checked": True,
        "figure": figures[preflight.MODEL_VALIDATED],
    }


def test_items_unchecked_by_their_figures(registered: Workspace, tmp_path: Path) -> None:
    _wide_labels(registered)
    with_reference(registered, tmp_path, "v6.0", off_by=50.0)
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(version="v1.0")
        engine_leads(registered, seen_ago_s=60)  # its engine stopped a minute ago
        _, worse = engine.preflight(version="v6.0")
        _, same = engine.preflight(version="v1.0")
    finally:
        engine.close()
    assert checked(worse) == {
        preflight.MODEL_VALIDATED: True,
        preflight.VALIDATION_SET: True,
        preflight.METRICS_ACCEPTABLE: False,  # accuracy 0 on its own reference file
        preflight.AB_TEST: False,  # replaces production at 100% without a test
        preflight.MONITORING: False,  # the leader is not seen any more
        preflight.ROLLBACK_PLAN: True,
    }
    figures = {name: i.figure for name, i in items(worse).items()}
    assert figures[preflight.METRICS_ACCEPTABLE] == "baseline accuracy 0 < min 0.800"
    assert "replaces production v1.0 at 100% without a test" in figures[preflight.AB_TEST]
    assert not checked(same)[preflight.ROLLBACK_PLAN]  # production already: nowhere to go back


def test_strict_refuses_while_an_item_is_unchecked_and_changes_nothing(
    registered: Workspace,
) -> None:
    done = beast(registered, "deploy", "--version", "v1.0", "--strict")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "beast: refused (strict deploy): unchecked model validated, tested on a validation set,"
        " metrics acceptable, monitoring enabled, rollback plan ready; nothing changed on"
        " quality-predictor"
    ]
    assert "[ ] monitoring enabled" in done.stdout  # printed before the refusal
    assert production_of(registered) is None


def test_strict_passes_once_every_item_is_checked(registered: Workspace, tmp_path: Path) -> None:
    _wide_labels(registered)
    with_reference(registered, tmp_path, "v5.0", off_by=0.0)
    assert beast(registered, "deploy", "--version", "v1.0").returncode == 0
    engine_leads(registered)
    done = beast(
        registered,
        *("deploy", "--version", "v5.0", "--traffic", "10", "--ab-test", "t5"),
        *("--strict", "--json"),
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["preflight"]["ok"] is True
    assert [i["checked"] for i in doc["preflight"]["items"]] == [True] * 6


def test_deploy_strict_in_config_refuses_and_the_plain_deploy_prints_the_checklist(
    registered: Workspace,
) -> None:
    plain = beast(registered, "deploy", "--version", "v1.0")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0] == "preflight quality-predictor v1.0:"
    assert [line.strip()[:3] for line in lines[1:7]] == ["[ ]", "[ ]", "[ ]", "[x]", "[ ]", "[ ]"]
    assert production_of(registered) == "v1.0"
    set_config(registered, strict="true")
    done = beast(registered, "deploy", "--version", "v2.0", "--traffic", "10", "--ab-test", "t2")
    assert done.returncode == 1 and "refused (strict deploy)" in done.stderr
    assert production_of(registered) == "v1.0"
    engine = Engine(registered)
    try:
        assert engine.status().experiments == ()
    finally:
        engine.close()


def test_a_binary_line_is_judged_on_auc_min() -> None:
    facts = preflight.Facts(
        line="revert-risk",
        version="v2",
        metric="auc",
        metric_min=0.7,
        baseline_source="training",
        baseline_detail=None,
        baseline=(("auc", 0.65), ("accuracy", 0.9)),
        production="v1",
        share_bp=1000,
        ab_test="t",
        leader="h/1",
    )
    found = items(preflight.check(facts))
    assert found[preflight.METRICS_ACCEPTABLE].figure == "baseline auc 0.650 < min 0.700"
    assert not found[preflight.METRICS_ACCEPTABLE].checked
    assert not found[preflight.VALIDATION_SET].checked  # training figures are not a validation set
