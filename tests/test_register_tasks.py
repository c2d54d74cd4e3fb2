"""Registration knows a model's task: the XGBoost objective against its line's declared task,
and byte-identical copies are the artifact they copy (issue 14, items 1 and 6).

Every model here is a real XGBoost model trained in the test; the refusals are checked three
ways: the message, `beast models` (the file is listed rejected with the reason), and no valid
artifact or version added.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from engine import ArtifactRejected, Engine, Workspace
from engine.registry.warm_validator import WarmValidator
from tests.helpers import FEATURES, beast_here, model_path

BINARY_LINE = """
[lines.revert-risk]
task = "binary"
label = "reverted"
decision_threshold = 0.5
"""


def train_classifier(path: Path, *, seed: int = 0, classes: int = 2) -> Path:
    """A real XGBClassifier (binary:logistic; multi:softprob with more classes), saved."""
    rng = np.random.default_rng(seed)
    x = rng.random((300, len(FEATURES))).astype(np.float32)
    if classes == 2:
        y = (x[:, 0] + 0.3 * rng.standard_normal(300) > 0.5).astype(int)
    else:
        y = rng.integers(0, classes, 300)
    model = xgb.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=1, random_state=seed)
    model.fit(x, y)
    model.get_booster().feature_names = list(FEATURES)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_model(str(path))
    return path


def train_regressor(path: Path, *, seed: int = 0) -> Path:
    """A real XGBRegressor (reg:squarederror) with the seed's feature names, saved."""
    rng = np.random.default_rng(seed)
    x = rng.random((300, len(FEATURES))).astype(np.float32)
    model = xgb.XGBRegressor(n_estimators=5, max_depth=3, n_jobs=1, random_state=seed)
    model.fit(x, x @ rng.random(len(FEATURES)) * 100)
    model.get_booster().feature_names = list(FEATURES)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_model(str(path))
    return path


@pytest.fixture
def binary_ws(registered: Workspace) -> Iterator[Workspace]:
    """The registered workspace with a binary line declared in config.toml."""
    with registered.config_path.open("a", encoding="utf-8") as config:
        config.write(BINARY_LINE)
    yield registered


def models_json(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    out = beast_here(capsys, ws, "models", "--json")
    assert out.returncode == 0, out.stderr
    found: list[dict[str, object]] = json.loads(out.stdout)["models"]
    return found


def valid_names(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, list[str]]]:
    return sorted(
        (str(m["sha256"]), list(m["versions"]))  # type: ignore[call-overload]
        for m in models_json(ws, capsys)
        if m["status"] == "valid"
    )


def rejected_reason(ws: Workspace, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    (found,) = [m for m in models_json(ws, capsys) if str(m["path"]).endswith(name)]
    assert found["status"] == "rejected"
    return str(found["reason"])


# -- objective against the line's task ----------------------------------------------------


def test_a_classifier_offered_to_a_regression_line_is_rejected_with_the_reason(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    path = train_classifier(model_path(registered, "v8.0"))
    before = valid_names(registered, capsys)
    out = beast_here(capsys, registered, "register", str(path))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert "binary:logistic" in out.stderr and "task is regression" in out.stderr
    reason = rejected_reason(registered, path.name, capsys)
    assert "objective binary:logistic is a binary model" in reason
    assert valid_names(registered, capsys) == before
    # `beast deploy PATH` goes through the same registration: refused, nothing serves it.
    out = beast_here(capsys, registered, "deploy", str(path))
    assert out.returncode == 1 and "binary:logistic" in out.stderr


def test_a_regressor_offered_to_a_binary_line_is_rejected_with_the_reason(
    binary_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    path = train_regressor(binary_ws.models_dir / "revert-risk-v1.json")
    with closing(Engine(binary_ws)) as engine, pytest.raises(ArtifactRejected) as refused:
        engine.register(path)
    assert "objective reg:squarederror is a regression model" in str(refused.value)
    assert "task is binary" in str(refused.value)
    assert "reg:squarederror" in rejected_reason(binary_ws, path.name, capsys)
    assert "revert-risk" not in {m["line"] for m in models_json(binary_ws, capsys)}


def test_a_classifier_joins_a_binary_line_and_its_objective_is_kept(
    binary_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    path = train_classifier(binary_ws.models_dir / "revert-risk-v1.json", seed=3)
    out = beast_here(capsys, binary_ws, "register", str(path), "--json")
    assert out.returncode == 0, out.stderr
    (found,) = [m for m in models_json(binary_ws, capsys) if m["line"] == "revert-risk"]
    assert found["status"] == "valid" and found["objective"] == "binary:logistic"
    (seed,) = [m for m in models_json(binary_ws, capsys) if m["versions"] == ["v1.0"]]
    assert seed["objective"] == "reg:squarederror"


def test_a_multi_class_model_is_refused_with_a_clear_message(
    binary_ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    path = train_classifier(binary_ws.models_dir / "revert-risk-v2.json", classes=3)
    with closing(Engine(binary_ws)) as engine, pytest.raises(ArtifactRejected) as refused:
        engine.register(path)
    message = str(refused.value)
    assert "multi-class model (objective multi:softprob, 3 classes)" in message
    assert "regression and binary lines only" in message
    assert "multi-class" in rejected_reason(binary_ws, path.name, capsys)


def test_the_watchers_warm_validator_refuses_the_same_way(registered: Workspace) -> None:
    """The daemon's watcher registers through `Engine.register` with its warm fork server."""
    path = train_classifier(model_path(registered, "v8.0"), seed=8)
    validator = WarmValidator().start()
    try:
        with closing(Engine(registered)) as engine, pytest.raises(ArtifactRejected) as refused:
            engine.register(path, validator=validator)
    finally:
        validator.close()
    assert "binary:logistic" in str(refused.value) and "regression" in str(refused.value)


# -- byte-identical copies ----------------------------------------------------------------


def test_a_byte_identical_copy_under_a_versioned_name_is_the_same_artifact(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    original = model_path(registered, "v2.0")
    copy = model_path(registered, "v7.0")
    shutil.copyfile(original, copy)
    before = valid_names(registered, capsys)
    out = beast_here(capsys, registered, "register", str(copy), "--json")
    assert out.returncode == 0, out.stderr
    (answer,) = json.loads(out.stdout)
    assert answer["new"] is False and answer["version"] == "v2.0"
    assert valid_names(registered, capsys) == before  # no v7.0
    (shown,) = [m for m in models_json(registered, capsys) if "v2.0" in m["versions"]]  # type: ignore[operator]
    assert shown["path"] == str(original)
    assert shown["paths"] == [str(original), str(copy)]
    listing = beast_here(capsys, registered, "models")
    assert "quality-predictor-v2.0.json, quality-predictor-v7.0.json" in listing.stdout
    assert "v7.0" not in listing.stdout.replace("quality-predictor-v7.0.json", "")
