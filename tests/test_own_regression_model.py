"""Your own regression model, end to end through the real `beast` command: a line declared with
the user's column names (`quality`, `at`), two regressors trained here on generated data,
registered with reference data, deployed, A/B-tested, scored one row at a time and as a batch,
labelled, monitored by the regression task's metrics, promoted and rolled back, and retrained on
the user's CSV. (tests/test_your_own_model.py walks the binary task through the README.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.demo import sample_data
from tests.helpers import assert_invariants, beast, beast_here

LINE = "code-quality"


def _write(path: Path, samples: sample_data.Samples) -> None:
    """The user's CSV: the generator's rows under the user's column names."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*sample_data.FEATURES, "quality", "at"])
        for row, score, when in zip(
            samples.features, samples.scores, samples.observed_at, strict=True
        ):
            writer.writerow([f"{v:.6g}" for v in row] + [f"{score:.3f}", when])


def _train(path: Path, samples: sample_data.Samples, depth: int) -> None:
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": depth, "nthread": 1, "seed": 0},
        xgb.DMatrix(
            samples.features, label=samples.scores, feature_names=list(sample_data.FEATURES)
        ),
        num_boost_round=60,
    )
    booster.save_model(str(path))


SINGLES = 8


def _ok(ws: Workspace, *args: str) -> str:
    done = beast(ws, *args, timeout=300)
    assert done.returncode == 0, f"beast {' '.join(args)}: {done.stderr[-800:]}"
    return done.stdout


def _json(ws: Workspace, *args: str) -> Any:
    return json.loads(_ok(ws, *args, "--json"))


def test_a_regression_line_with_its_own_columns_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = Workspace(tmp_path / "ws")
    Engine.init(ws)[0].close()
    with (ws.root / "config.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[lines.{LINE}]\nlabel = "quality"\ntime = "at"\ntolerance_points = 6\n')
    train = sample_data.generate(3000, seed=5)
    _train(ws.models_dir / f"{LINE}-v1.0.json", train, depth=2)
    _train(ws.models_dir / f"{LINE}-v2.0.json", train, depth=5)
    reference = tmp_path / "ref.csv"
    _write(reference, sample_data.generate(800, seed=6))

    registered = _ok(
        ws, "register", str(ws.models_dir / f"{LINE}-v1.0.json"), "--reference", str(reference)
    )
    assert "baseline from reference ref.csv (800 rows)" in registered
    _ok(ws, "deploy", "--version", "v1.0", "--model", LINE)
    _ok(
        ws,
        "deploy",
        str(ws.models_dir / f"{LINE}-v2.0.json"),
        "--reference",
        str(reference),
        "--traffic",
        "50",
        "--ab-test",
        "depth-5",
    )
    status = _json(ws, "status")
    assert {d["baseline"] for d in status["deployments"]} == {"reference"}

    # Single rows with sticky keys, then a batch: the user's own CSV, label and time ignored.
    fresh = sample_data.generate(400, seed=7)
    served: list[tuple[str, float]] = []
    # A handful of single rows, the rest in one batch. The first single row is a real process;
    # the others run `beast`'s entry point in this one (a cold `beast predict` is ~2 s on 2
    # loaded cores: 40 of them made this the suite's slowest test, and it still was with 8).
    for i in range(SINGLES):
        row = dict(zip(sample_data.FEATURES, fresh.features[i].tolist(), strict=True))
        args = ("predict", json.dumps(row), "--model", LINE, "--key", f"k{i}", "--json")
        done = beast(ws, *args) if i == 0 else beast_here(capsys, ws, *args)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        served.append((answer["prediction_id"], float(fresh.scores[i])))
    rest = sample_data.Samples(
        fresh.features[SINGLES:], fresh.scores[SINGLES:], fresh.observed_at[SINGLES:]
    )
    _write(tmp_path / "new.csv", rest)
    batch = beast(ws, "predict", "--csv", str(tmp_path / "new.csv"), "--model", LINE, "--json")
    assert batch.returncode == 0, batch.stderr
    assert "quality (label), at (time)" in batch.stderr
    answers = json.loads(batch.stdout)
    assert len(answers) == 400 - SINGLES
    assert {a["arm"] for a in answers} == {"production", "candidate"}
    served += [(a["prediction_id"], float(s)) for a, s in zip(answers, rest.scores, strict=True)]

    labels = tmp_path / "labels.csv"
    labels.write_text(
        "prediction_id,actual\n" + "".join(f"{pid},{actual:.3f}\n" for pid, actual in served)
    )
    _ok(ws, "feedback", "--file", str(labels))
    report = _json(ws, "monitor", "--model", LINE, "--window", "24h")
    versions = {v["version"]: v for v in report["versions"]}
    assert sum(v["labelled"] for v in versions.values()) == 400
    for figures in versions.values():
        assert figures["task"] == "regression"
        assert {"accuracy", "mae", "rmse"} <= figures.keys() and "auc" not in figures
        assert figures["rmse"] >= figures["mae"] > 0
        assert figures["baseline"]["source"] == "reference"
    (test,) = [e for e in report["experiments"] if e["name"] == "depth-5"]
    assert test["verdict"]

    _ok(ws, "promote", "depth-5", "--force")
    assert _production(ws) == "v2.0"
    _ok(ws, "rollback", "--model", LINE)
    assert _production(ws) == "v1.0"

    _write(ws.data_dir / "mine.csv", sample_data.generate(2000, seed=8))
    check = _json(ws, "retrain", "--check", "--model", LINE)
    files = {f["name"]: f for f in check["data"]["files"]}
    assert files["data/mine.csv"]["rows"] == 2000
    assert (check["data"]["label"], check["data"]["time"]) == ("quality", "at")
    _ok(ws, "retrain", "--force", "--model", LINE)
    engine = Engine(ws)
    try:
        (latest, *_) = engine.jobs(model=LINE)
    finally:
        engine.close()
    assert latest.status == "succeeded", latest
    assert_invariants(ws)


def _production(ws: Workspace) -> str:
    """The one production version (read in this process: a cold `beast status` is ~2 s)."""
    engine = Engine(ws)
    try:
        (found,) = [d.version for d in engine.status().deployments if d.role == "production"]
    finally:
        engine.close()
    return found
