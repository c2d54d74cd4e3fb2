"""Retraining on the line's own data: the declared label and time columns, `--check` listing
each data file, a binary line retrained end to end (gated on AUC), and no duplicate versions
when nothing is new. Real models, real jobs in real worker processes, the real `beast`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.core import tasks
from engine.demo import sample_data
from engine.retrain import data as retrain_data
from tests.helpers import assert_invariants, beast, beast_here, copy_workspace
from tests.retrain_helpers import LINE, model_files, version_names
from tests.serving_helpers import serving

BINARY_LINE = "revert-risk"


@pytest.fixture
def rws(retrain_template: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    """v1.0 (weak) and v2.0 (strong) registered, v1.0 in production; 300 rows in data/."""
    ws = copy_workspace(retrain_template, tmp_path / ".beast-mode")
    engine = Engine(ws, actor="tester")
    try:
        engine.deploy(version="v1.0", model=LINE)
    finally:
        engine.close()
    yield ws
    assert_invariants(ws)


def _declare(ws: Workspace, line: str, **keys: str) -> None:
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    with ws.config_path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n[lines.{line}]\n{table}")


def _rename_columns(path: Path, label: str, time: str) -> None:
    header, rest = path.read_text(encoding="utf-8").split("\n", 1)
    assert header.endswith(",score,observed_at")
    path.write_text(header.replace(",score,observed_at", f",{label},{time}") + "\n" + rest)


def _job(ws: Workspace, *args: str) -> dict[str, object]:
    result = beast(ws, "retrain", "--force", "--json", *args)
    assert result.returncode == 0, result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def _lineage(ws: Workspace, line: str, version: object) -> dict[str, object]:
    doc: dict[str, object] = json.loads(
        (ws.models_dir / f"{line}-{version}.json.lineage").read_text(encoding="utf-8")
    )
    return doc


def test_retrain_reads_the_declared_label_and_time_columns(rws: Workspace) -> None:
    _declare(rws, LINE, label="quality", time="at")
    _rename_columns(rws.data_dir / "samples.csv", "quality", "at")
    seed_names = sample_data.write_csv(
        rws.data_dir / "seed-names.csv", sample_data.generate(40, seed=9)
    )
    (rws.data_dir / "notes.csv").write_text("x,y\n1,2\n", encoding="utf-8")

    check = beast(rws, "retrain", "--check", "--json")
    assert check.returncode == 0, check.stderr
    data = json.loads(check.stdout)["data"]
    assert (data["label"], data["time"]) == ("quality", "at")
    files = {f["name"]: f for f in data["files"]}
    assert list(files) == ["data/notes.csv", "data/samples.csv", "data/seed-names.csv"]
    assert files["data/samples.csv"]["rows"] == 300 and files["data/samples.csv"]["skipped"] is None
    assert files["data/seed-names.csv"]["rows"] == 0
    assert files["data/seed-names.csv"]["skipped"].startswith("missing columns quality, at")
    assert files["data/seed-names.csv"]["columns"][-2:] == ["score", "observed_at"]
    assert files["data/notes.csv"]["skipped"] == (
        f"missing columns {', '.join(sample_data.FEATURES)}, quality, at (it has x, y)"
    )
    shown = beast(rws, "retrain", "--check").stdout
    assert "data/ (label column quality, time column at):" in shown
    assert "  data/samples.csv: 300 rows" in shown
    assert "  data/seed-names.csv: skipped: missing columns quality, at (it has " in shown

    job = _job(rws)
    assert job["status"] == "succeeded" and job["version"] == "v3.0", job
    lineage = _lineage(rws, LINE, "v3.0")
    data_doc = lineage["data"]
    assert isinstance(data_doc, dict)
    assert [(s["name"], s["rows"]) for s in data_doc["sources"]] == [("data/samples.csv", 300)]
    assert len(data_doc["skipped"]) == 2
    log = json.loads(beast(rws, "jobs", str(job["id"]), "--json").stdout)["log"]
    assert any(f"{seed_names.relative_to(rws.root)}: skipped: missing" in line for line in log)
    assert any("label quality, time at" in line for line in log)


def _label(ws: Workspace, count: int, seed: int) -> None:
    """`count` real predictions of what serves, each given its true score as feedback."""
    rows = sample_data.generate(count, seed=seed)
    with serving(ws) as (router, plog):
        assert plog is not None
        done = router.predict_batch([list(map(float, r)) for r in rows.features])
        plog.flush()
    engine = Engine(ws)
    try:
        outcomes = engine.feedback_many(
            [(p.prediction_id, float(s)) for p, s in zip(done, rows.scores, strict=True)]
        )
    finally:
        engine.close()
    assert {o.status for o in outcomes} == {"recorded"}


def test_retraining_twice_on_the_same_data_registers_one_version(rws: Workspace) -> None:
    first = _job(rws)
    assert first["status"] == "succeeded" and first["version"] == "v3.0", first
    files = model_files(rws)

    again = beast(rws, "retrain", "--force")
    assert again.returncode == 0, again.stderr
    assert "registered nothing: no new data since v3.0" in again.stdout
    jobs = json.loads(beast(rws, "jobs", "--json").stdout)
    assert jobs[0]["status"] == "succeeded" and jobs[0]["version"] is None
    assert jobs[0]["reason"] == jobs[0]["message"] == "no new data since v3.0"
    assert "no new data since v3.0" in beast(rws, "jobs").stdout
    shown = json.loads(beast(rws, "jobs", str(jobs[0]["id"]), "--json").stdout)
    assert shown["log"][-1].endswith("succeeded: no new data since v3.0")
    assert model_files(rws) == files
    engine = Engine(rws)
    try:
        assert version_names(engine) == {"v1.0", "v2.0", "v3.0"}
        with engine.store.read_sql() as conn:
            hashes = [r[0] for r in conn.execute("SELECT input_hash FROM jobs ORDER BY id")]
    finally:
        engine.close()
    assert len(hashes) == 2 and hashes[0] == hashes[1] and len(hashes[0]) == 64

    _label(rws, 60, seed=31)  # new labelled data: a new version
    third = _job(rws)
    assert third["status"] == "succeeded" and third["version"] == "v4.0", third
    lineage = _lineage(rws, LINE, "v4.0")
    assert lineage["data"]["rows"] == 360  # type: ignore[index]


# -- a binary line -------------------------------------------------------------------------


def _binary_samples(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features of the sample schema; a change is "reverted" when its quality is low (with
    the samples' noise, so the classes overlap)."""
    samples = sample_data.generate(rows, seed=seed)
    return samples.features, (samples.scores < 55).astype(np.float32), samples.observed_at


def _train_binary(path: Path, *, rows: int, depth: int, rounds: int, seed: int) -> Path:
    x, y, _ = _binary_samples(rows, seed)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": depth, "nthread": 1, "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=list(sample_data.FEATURES)),
        num_boost_round=rounds,
    )
    booster.save_model(str(path))
    return path


def _write_binary_csv(path: Path, rows: int, seed: int) -> None:
    x, y, at = _binary_samples(rows, seed)
    lines = [",".join([*sample_data.FEATURES, "reverted", "observed_at"])]
    for features, label, when in zip(x, y, at, strict=True):
        shown = "true" if label else "false"
        lines.append(",".join([*(f"{v:.6g}" for v in features), shown, when]))
    lines.append(",".join([*(["1"] * len(sample_data.FEATURES)), "maybe", at[-1]]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def bws(tmp_path: Path) -> Iterator[Workspace]:
    """A binary line: a weak classifier (depth 1, 2 rounds) in production; 800 rows in data/
    labelled true/false (and one row labelled "maybe")."""
    ws = Workspace(tmp_path / ".beast-mode")
    engine, _ = Engine.init(ws)
    engine.close()
    _declare(ws, BINARY_LINE, task="binary", label="reverted")
    text = ws.config_path.read_text(encoding="utf-8")
    ws.config_path.write_text(text.replace("\nenabled = true\n", "\nenabled = false\n", 1))
    weak = _train_binary(
        ws.models_dir / f"{BINARY_LINE}-v1.0.json", rows=400, depth=1, rounds=2, seed=1
    )
    engine = Engine(ws, actor="tester")
    try:
        engine.register(weak)
        engine.deploy(version="v1.0", model=BINARY_LINE)
    finally:
        engine.close()
    _write_binary_csv(ws.data_dir / "changes.csv", 800, seed=5)
    yield ws
    assert_invariants(ws)


def test_a_binary_line_retrains_binary_logistic_gated_on_auc(bws: Workspace) -> None:
    check = json.loads(beast(bws, "retrain", "--check", "--json").stdout)["data"]
    (found,) = check["files"]
    assert found["rows"] == 800
    assert found["dropped"] == {"reverted: label not 0/1 (or false/true)": 1}

    job = _job(bws, "--deploy")
    assert job["status"] == "succeeded" and job["version"] == "v2.0", job
    assert job["deployed"] is True, job
    reason = str(job["reason"])
    assert "beats production: holdout auc " in reason and "log loss" in reason
    model = bws.models_dir / f"{BINARY_LINE}-v2.0.json"
    learner = json.loads(model.read_text(encoding="utf-8"))["learner"]
    assert learner["objective"]["name"] == "binary:logistic"
    lineage = _lineage(bws, BINARY_LINE, "v2.0")
    metrics = lineage["metrics"]
    assert isinstance(metrics, dict)
    new, old = metrics["holdout"], metrics["production_holdout"]
    assert set(new) == {*tasks.METRICS[tasks.BINARY], "rows"}
    assert new["auc"] >= old["auc"] + 0.01  # the gate's default minimum, in AUC points
    assert f"holdout auc {new['auc']:.3f} vs production {old['auc']:.3f}" in reason
    assert lineage["validation"] == {k: v for k, v in new.items() if k != "rows"}
    assert "validation_logloss" in metrics


# -- predict --csv on a training CSV -------------------------------------------------------


def test_predict_csv_scores_a_training_csv_as_is(
    rws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `beast predict --csv` prints and returns, by its entry point in this process (three
    # cold processes cost ~6 s; the CLI's process path is test_retrain_data's others').
    _declare(rws, LINE, label="quality", time="at")
    samples = rws.data_dir / "samples.csv"
    _rename_columns(samples, "quality", "at")
    lines = samples.read_text(encoding="utf-8").splitlines()
    training = rws.root / "training.csv"
    training.write_text(
        "\n".join([lines[0] + ",note", *(f"{row},batch {i}" for i, row in enumerate(lines[1:]))])
        + "\n",
        encoding="utf-8",
    )
    result = beast_here(capsys, rws, "predict", "--csv", str(training), "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 300
    assert result.stderr == (
        f"beast: ignored 3 columns that are no feature of {LINE}: "
        "quality (label), at (time), note\n"
    )
    shown = beast_here(capsys, rws, "predict", "--csv", str(training))
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 300
    assert "quality (label), at (time), note" in shown.stderr

    header = lines[0].split(",")
    drop = [i for i, name in enumerate(header) if name in sample_data.FEATURES[:2]]
    partial = rws.root / "partial.csv"
    partial.write_text(
        "\n".join(
            ",".join(v for i, v in enumerate(row.split(",")) if i not in drop) for row in lines
        )
        + "\n",
        encoding="utf-8",
    )
    missing = beast_here(capsys, rws, "predict", "--csv", str(partial))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == (
        f"beast: {partial}: missing feature columns of {LINE}: "
        f"{sample_data.FEATURES[0]}, {sample_data.FEATURES[1]}\n"
    )


# -- labels by the line's task -------------------------------------------------------------


def _columns(task: str, label_range: tuple[float, float]) -> retrain_data.Columns:
    return retrain_data.Columns(("a", "b"), "y", "t", task, label_range)


def test_labels_are_read_by_the_line_task(tmp_path: Path) -> None:
    at = "2026-01-01T00:00:0{}Z"
    (tmp_path / "ints.csv").write_text(
        "a,b,y,t\n" + "".join(f"{i},1,{i % 2},{at.format(i)}\n" for i in range(4))
    )
    (tmp_path / "words.csv").write_text(
        "a,b,y,t\n1,2,true,2026-01-01T00:00:05Z\n1,2,False,2026-01-01T00:00:06Z\n"
        "1,2,0.5,2026-01-01T00:00:07Z\n1,2,1,not a time\n"
    )
    (tmp_path / "scores.csv").write_text("a,b,y,t\n1,2,55,2026-01-01T00:00:08Z\n")
    binary = retrain_data.load(tmp_path, _columns("binary", (0.0, 1.0)), _no_predictions(2))
    notes = {s.name: s.note() for s in binary.sources}
    assert notes == {
        "data/ints.csv": "data/ints.csv: 4 rows",
        "data/scores.csv": "data/scores.csv: skipped: no usable rows "
        "(y: label not 0/1 (or false/true) in 1)",
        "data/words.csv": "data/words.csv: 2 rows (1 dropped: y: label not 0/1 (or "
        "false/true); 1 dropped: t: not an ISO-8601 time)",
    }
    assert binary.y.tolist() == [0, 1, 0, 1, 1, 0]
    regression = retrain_data.load(
        tmp_path, _columns("regression", (0.0, 10.0)), _no_predictions(2)
    )
    notes = {s.name: s.note() for s in regression.sources}
    assert notes["data/scores.csv"] == (
        "data/scores.csv: skipped: no usable rows (y: label not a number in label_range "
        "[0, 10] in 1)"
    )
    assert notes["data/words.csv"].startswith("data/words.csv: 1 rows (2 dropped: y: label")


def _no_predictions(width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, width), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
