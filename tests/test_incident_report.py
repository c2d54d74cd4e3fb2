"""`beast report`: the incident snapshot, one Markdown file and the JSON it is rendered from,
on a real workspace with traffic, a running A/B test, a firing alert and history with its
evidence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Engine
from engine.core.figures import sig, signed
from engine.monitoring import baselines, incident
from engine.store.sqlite.tx import SqliteTx
from tests.helpers import beast
from tests.test_monitoring import LINE, feed


@pytest.fixture
def incident_ws(engine: Engine) -> Engine:
    """v2.0 rolled back on a critical accuracy (evidence kept), v1.0 in production with a
    warning firing and drifted features, v3.0 its candidate in test t with labelled traffic."""
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0")
    feed(engine, "v2.0", 200, within=0.6)
    engine.monitoring.evaluate()
    engine.rollback(note="accuracy | fell")
    rng = np.random.default_rng(3)
    names = ("coverage", "complexity", "lint_density", "duplication", "churn")
    reference = baselines.VersionReference.build(
        rng.normal(size=(5000, 5)), rng.normal(50, 5, 5000), names
    )
    with engine.store.write_sql() as conn:
        artifact_id = SqliteTx(conn).registry.get_version(LINE, "v1.0").artifact_id
        baselines.store(SqliteTx(conn), artifact_id, "training", reference=reference, metrics={})
    engine.deploy(version="v3.0", traffic=30, ab_test="t")
    rows = rng.normal(size=(700, 5)).astype(np.float32)
    rows[:, 0] += 0.4
    feed(engine, "v1.0", 700, within=0.78, experiment="t", rows=rows)
    feed(engine, "v3.0", 300, within=0.9, experiment="t", arm="candidate")  # its 30%
    engine.monitoring.evaluate(pull=False)
    return engine


def written(engine: Engine, out: Path, *args: str) -> tuple[dict[str, Any], str]:
    done = beast(engine.workspace, "report", "--out", str(out), *args)
    assert done.returncode == 0, done.stderr
    md_path, json_path = (Path(p) for p in done.stdout.split())
    assert md_path.suffix == ".md" and json_path == md_path.with_suffix(".json")
    assert md_path.name.startswith("beast-report-") and md_path.parent == out
    assert sorted(p.name for p in out.iterdir()) == sorted([md_path.name, json_path.name])
    return json.loads(json_path.read_text(encoding="utf-8")), md_path.read_text(encoding="utf-8")


def test_the_markdown_names_the_figures_of_its_json(incident_ws: Engine, tmp_path: Path) -> None:
    doc, md = written(incident_ws, tmp_path / "out")
    monitor = doc["monitor"]
    assert doc["window"] == "1h" and doc["status"]["health"] in md

    firing = [a for a in monitor["alerts"] if a["status"] == "firing"]
    assert {a["version"] for a in firing} == {"v1.0"}  # v2.0's resolved when it stopped serving
    for a in firing:
        assert f"| {a['id']} | {a['severity']} | {LINE}/v1.0 | {a['metric']} |" in md
        assert a["message"] in md
    for v in monitor["versions"]:
        assert set(v["windows"]) == {"1h", "24h", "deploy"}
        for name, w in v["windows"].items():
            row = f"| {name} | {w['predictions']:,} | {w['labelled']:,} | {w['errors']:,} |"
            assert row in md
            assert sig(w["accuracy"]) in md and sig(w["mae"]) in md
    [test] = monitor["experiments"]
    assert test["name"] == "t" and f"### t: {test['verdict']}" in md
    for arm in ("control", "candidate"):
        figures = test["arms"][arm]
        assert figures["labelled"] > 0
        assert (
            f"| {arm} | {test[arm]} | {figures['predictions']:,} | {figures['labelled']:,} |" in md
        )
    detail = test["verdict_detail"]
    assert (
        f"diff {signed(detail['diff'])} [{signed(detail['lo'])}, {signed(detail['hi'])}], "
        f"always-valid p {sig(detail['p'])}"
    ) in md
    drift = next(v for v in monitor["versions"] if v["version"] == "v1.0")["drift"]
    assert drift["features"] and drift["features"][0]["name"] == "coverage"
    for f in drift["features"]:
        assert f"| {f['name']} | {sig(f['psi'])} | {sig(f['ks'])} | {f['level']} |" in md

    history = doc["history"]
    assert [e["action"] for e in history] == ["deploy", "deploy", "rollback", "ab_start"]
    rollback = history[2]
    assert rollback["evidence"]["health"] == "critical"
    assert "accuracy \\| fell" in md  # a stored `|` cannot open a column
    assert f"### Evidence of #{rollback['id']}" in md
    assert "health critical; 1 alert" in md
    [alert] = rollback["evidence"]["alerts"]
    assert f"alert #{alert['id']} critical v2.0: {alert['message']}" in md


def test_window_and_json_paths(incident_ws: Engine, tmp_path: Path) -> None:
    done = beast(
        incident_ws.workspace, "report", "--out", str(tmp_path), "--window", "24h", "--json"
    )
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)
    doc = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    assert doc["window"] == doc["monitor"]["window"] == "24h"
    assert Path(paths["markdown"]).read_text(encoding="utf-8").startswith("# beast-mode")


def test_by_default_into_the_current_directory(incident_ws: Engine, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).parent / "beast"), "-w", str(incident_ws.workspace.root)]
    done = subprocess.run(
        [*command, "report"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert [Path(p).parent for p in done.stdout.split()] == [tmp_path, tmp_path]
    assert len(list(tmp_path.glob("beast-report-*"))) == 2


def test_two_reports_in_one_second_replace_neither(incident_ws: Engine, tmp_path: Path) -> None:
    md, as_json = incident_ws.incident_report(tmp_path / "later")
    assert md.exists() and as_json.exists()
    again = incident.write(tmp_path / "later", json.loads(as_json.read_text(encoding="utf-8")))
    assert again[0] != md and again[1] != as_json
    assert again[0].read_text(encoding="utf-8") == md.read_text(encoding="utf-8")


def test_an_unwritable_directory_is_one_line(incident_ws: Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    done = beast(incident_ws.workspace, "report", "--out", str(blocker / "reports"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "cannot write the report into" in done.stderr


def test_stored_text_cannot_break_a_table() -> None:
    assert incident.cell("a|b\nc") == "a\\|b\\nc"
    assert incident.cell(None) == "-"


def _test_evidence(**figures: Any) -> dict[str, Any]:
    arm = {"version": "v1.0", "predictions": 400, "labelled": 300, "accuracy": 0.8}
    test = {"name": "t", "verdict": "candidate wins", "metric": "accuracy", "diff": 0.1}
    return {
        "health": "healthy",
        "test": {**test, **figures, "arms": {"control": arm, "candidate": arm}},
    }


def test_a_tests_evidence_shows_its_interval_and_says_which_p() -> None:
    [line] = [
        x
        for x in incident._evidence(1, _test_evidence(lo=0.05, hi=0.15, p=0.001, margin=0.02))
        if x.startswith("- test")
    ]
    assert "(accuracy diff +0.100 [+0.0500, +0.150], always-valid p 0.00100)" in line
    # Evidence kept before verdicts were always valid: no interval, a fixed-horizon p.
    old = _test_evidence(verdict="inconclusive", p=0.03)
    [line] = [x for x in incident._evidence(2, old) if x.startswith("- test")]
    assert "inconclusive (accuracy diff +0.100 fixed-horizon p 0.0300)" in line


def test_the_tests_section_shows_the_margin_and_how_the_interval_narrowed() -> None:
    detail = {"metric": "accuracy", "diff": 0.1, "lo": 0.05, "hi": 0.15, "p": 0.001}
    arm = {"predictions": 400, "labelled": 300, "accuracy": 0.8, "mae": 3.0}
    experiment = {
        "name": "t",
        "task": "regression",
        "control": "v1.0",
        "candidate": "v2.0",
        "verdict": "candidate wins",
        "verdict_detail": {**detail, "margin": 0.02, "reason": "why"},
        "arms": {"control": arm, "candidate": arm},
        "interval": [
            {"minute": 29_000_000, "diff": 0.1, "lo": -0.1, "hi": 0.3},
            {"minute": 29_000_040, "diff": 0.1, "lo": 0.05, "hi": 0.15},
        ],
    }
    md = "\n".join(incident._tests([experiment]))
    assert "always-valid p 0.00100, margin ±0.0200" in md
    assert "interval ±0.200 at 21:20 → ±0.0500 at 22:00 UTC (2 minutes with labels)" in md
