"""Feedback and monitoring of a binary line, with a real classifier served end to end:
0/1 or false/true labels, anything else refused in one line (HTTP 422, CLI exit 1), and
`beast monitor --json` / `/v1/monitor` reporting the binary metrics by their exact keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.core import tasks
from tests.helpers import FEATURES, assert_invariants, beast_here, built_once, copy_workspace
from tests.serving_helpers import logged
from tests.test_http_api import ApiClient, assert_error, client_for, flush

LINE = "revert-risk"
ROW = dict(zip(FEATURES, [0.5, 0.3, 0.1, 0.1, 0.2], strict=True))


def train_classifier(path: Path, *, seed: int = 0, rounds: int = 8) -> Path:
    """A small real binary:logistic XGBoost classifier, saved as JSON."""
    rng = np.random.default_rng(seed)
    x = rng.random((400, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=400) > 0.5).astype(int)
    dtrain = xgb.DMatrix(x, label=y, feature_names=list(FEATURES))
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": seed}
    booster = xgb.train(params, dtrain, num_boost_round=rounds)
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return path


@pytest.fixture(scope="module")
def _binary_template(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Built once per run and copied for each test: registering the classifier validates it
    in a child process that imports XGBoost (~16 s of each test's setup on loaded cores)."""
    return built_once(tmp_path_factory, "binary", _build_binary)


def _build_binary(ws: Workspace) -> None:
    engine, _ = Engine.init(ws)
    engine.close()
    with ws.config_path.open("a", encoding="utf-8") as handle:
        handle.write(f'\n[lines.{LINE}]\ntask = "binary"\nlabel = "reverted"\n')
    engine = Engine(ws, actor="tester")
    try:
        path = train_classifier(ws.models_dir / f"{LINE}-v1.0.json")
        engine.register(path)
        engine.deploy(version="v1.0", model=LINE)
    finally:
        engine.close()


@pytest.fixture
def binary_ws(_binary_template: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose revert-risk line is binary, a classifier deployed on it; its
    invariants are checked after the test."""
    ws = copy_workspace(_binary_template, tmp_path / ".beast-mode")
    yield ws
    assert_invariants(ws)


@pytest.fixture
def client(binary_ws: Workspace) -> Iterator[ApiClient]:
    with client_for(binary_ws) as c:
        yield c


def predict(client: ApiClient) -> dict[str, Any]:
    response = client.post("/v1/predict", json={"features": ROW, "model": LINE})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def test_a_binary_line_takes_0_1_and_false_true_over_http(
    client: ApiClient, binary_ws: Workspace
) -> None:
    pids = [predict(client)["prediction_id"] for _ in range(4)]
    flush(client)
    for pid, actual in zip(pids, [True, 0, 1.0, False], strict=True):
        answer = client.post("/v1/feedback", json={"prediction_id": pid, "actual": actual})
        assert answer.status_code == 200 and answer.json()["status"] == "recorded", answer.text
    again = client.post("/v1/feedback", json={"prediction_id": pids[0], "actual": 1})
    assert again.json()["status"] == "duplicate"  # true is 1
    other = predict(client)["prediction_id"]
    flush(client)
    for bad in (0.5, 2, -1):
        refused = client.post("/v1/feedback", json={"prediction_id": other, "actual": bad})
        assert_error(refused, 422, "binary label", "0 or 1", LINE)
    items = [{"prediction_id": other, "actual": 0.5}, {"prediction_id": other, "actual": True}]
    batch = client.post("/v1/feedback", json={"items": items})
    assert [a["status"] for a in batch.json()["results"]] == ["invalid", "recorded"]
    actual = {r["pid"]: r["actual"] for r in logged(binary_ws)}
    assert [actual[p] for p in [*pids, other]] == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_beast_feedback_refuses_a_non_binary_label_in_one_line(
    binary_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    out = beast_here(capsys, binary_ws, "predict", json.dumps(ROW), "--model", LINE, "--json")
    assert out.returncode == 0, out.stderr
    pid = json.loads(out.stdout)["prediction_id"]
    refused = beast_here(capsys, binary_ws, "feedback", pid, "0.5")
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert "0 or 1" in line and LINE in line and "Traceback" not in refused.stderr
    assert beast_here(capsys, binary_ws, "feedback", pid, "true").returncode == 0
    assert [r["actual"] for r in logged(binary_ws) if r["pid"] == pid] == [1.0]
    assert (
        beast_here(capsys, binary_ws, "feedback", pid, "1").returncode == 0
    )  # the same label: duplicate
    second = json.loads(
        beast_here(capsys, binary_ws, "predict", json.dumps(ROW), "--model", LINE, "--json").stdout
    )
    labels = binary_ws.root / "labels.csv"
    labels.write_text(f"prediction_id,actual\n{second['prediction_id']},False\n")
    assert beast_here(capsys, binary_ws, "feedback", "--file", str(labels)).returncode == 0
    assert [r["actual"] for r in logged(binary_ws) if r["pid"] == second["prediction_id"]] == [0.0]
    assert (
        beast_here(capsys, binary_ws, "feedback", pid, "maybe").returncode == 2
    )  # usage: not a label


def test_monitor_reports_a_binary_lines_metrics_by_their_keys(
    client: ApiClient, binary_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    rows = rng.random((300, len(FEATURES)))
    answers = client.post("/v1/predict", json={"rows": rows.tolist(), "model": LINE}).json()[
        "predictions"
    ]
    flush(client)
    y = (rows[:, 0] + 0.3 * rng.normal(size=300) > 0.5).astype(int)
    items = [
        {"prediction_id": a["prediction_id"], "actual": bool(v)}
        for a, v in zip(answers, y, strict=True)
    ]
    assert client.post("/v1/feedback", json={"items": items}).status_code == 200
    doc = client.get("/v1/monitor").json()
    [version] = [v for v in doc["versions"] if v["line"] == LINE]
    assert version["task"] == tasks.BINARY
    for key in tasks.METRICS[tasks.BINARY]:
        assert isinstance(version[key], float), key
    assert "mae" not in version and "rmse" not in version
    assert version["auc"] > 0.7  # the classifier learned the first feature
    assert version["baseline"]["source"] == "first_labelled"  # no reference, no lineage
    cli = beast_here(capsys, binary_ws, "monitor", "--json", "--readonly")
    assert cli.returncode == 0, cli.stderr
    [same] = [v for v in json.loads(cli.stdout)["versions"] if v["line"] == LINE]
    assert {k: same[k] for k in tasks.METRICS[tasks.BINARY]} == {
        k: version[k] for k in tasks.METRICS[tasks.BINARY]
    }
    text = beast_here(capsys, binary_ws, "monitor", "--readonly").stdout
    header = next(line for line in text.splitlines() if line.startswith("LINE"))
    assert header.split()[6:12] == ["AUC", "ACC", "LOGLOSS", "PREC", "RECALL", "BRIER"]
    assert "BASELINE" in header and "first_labelled" in text
    scraped = client.get("/metrics").text
    for name in ("auc", "log_loss", "precision_ratio", "recall_ratio", "brier"):
        assert f'beast_version_{name}{{line="{LINE}",role="production",version="v1.0"}}' in scraped
    assert f'beast_version_rmse{{line="{LINE}"' not in scraped


def test_without_a_binary_line_false_true_are_refused(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    """A regression line refuses a boolean, alone (422) or in a batch (the whole body, as
    /openapi.json offers no boolean while no binary line is deployed)."""
    assert beast_here(capsys, registered, "deploy", "--version", "v1.0").returncode == 0
    with client_for(registered) as client:
        response = client.post("/v1/predict", json={"features": ROW})
        pid = response.json()["prediction_id"]
        flush(client)
        assert_error(client.post("/v1/feedback", json={"prediction_id": pid, "actual": True}), 422)
        items = {
            "items": [{"prediction_id": pid, "actual": 50}, {"prediction_id": pid, "actual": False}]
        }
        assert_error(client.post("/v1/feedback", json=items), 422, "items[1]", "bool")
    assert [r["actual"] for r in logged(registered) if r["pid"] == pid] == [None]
