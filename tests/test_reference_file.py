"""Reference data for a model trained anywhere (issue 14, items 3 and 4): `beast register PATH
--reference FILE` and `beast deploy ... --reference FILE` score a labelled CSV or Parquet file
with the model and keep its metrics and drift reference as the version's baseline; bad files
are refused with one line and nothing is stored; `beast status` names every baseline's source.

Models are real XGBoost models trained in the test; the expected metrics come from
scikit-learn over XGBoost's own predictions, not from the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import mean_absolute_error, roc_auc_score

from engine import Engine, Workspace
from engine.monitoring import baselines
from engine.monitoring.baselines import VersionReference, write_sidecar
from tests.helpers import FEATURES, REPO, beast, beast_here, model_path, train_model
from tests.test_register_tasks import BINARY_LINE, train_classifier

ROWS = 400


def reference_frame(seed: int = 7, rows: int = ROWS) -> pd.DataFrame:
    """Generated features in a shuffled column order, a 0–100 `score` label and extra columns."""
    rng = np.random.default_rng(seed)
    x = rng.random((rows, len(FEATURES))).astype(np.float32)
    frame = pd.DataFrame(x, columns=list(FEATURES))[list(reversed(FEATURES))]
    frame["score"] = np.clip(x @ np.linspace(10, 30, len(FEATURES)), 0, 100)
    frame["observed_at"] = "2026-01-01T00:00:00Z"  # ignored: neither a feature nor the label
    return frame


def predictions(model: Path, frame: pd.DataFrame) -> np.ndarray:
    booster = xgb.Booster(model_file=str(model))
    x = frame[list(FEATURES)].to_numpy(dtype=np.float32)
    return np.asarray(booster.inplace_predict(x, validate_features=False), dtype=np.float64)


def baseline_of(ws: Workspace, line: str, version: str) -> baselines.VersionBaseline | None:
    with closing(Engine(ws)) as engine, engine.store.read() as tx:
        ref = tx.registry.get_version(line, version)
        return baselines.for_version(tx, ref.id)


def status_rows(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    out = beast_here(capsys, ws, "status", "--json")
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, object]] = json.loads(out.stdout)["deployments"]
    return rows


@pytest.fixture
def binary_ws(registered: Workspace) -> Iterator[Workspace]:
    with registered.config_path.open("a", encoding="utf-8") as config:
        config.write(BINARY_LINE)
    yield registered


# -- register with a reference --------------------------------------------------------------


def test_register_with_a_csv_reference_keeps_its_metrics_and_drift_reference(
    registered: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = train_model(model_path(registered, "v5.0"), seed=55)
    frame = reference_frame()
    csv = tmp_path / "holdout.csv"
    frame.to_csv(csv, index=False)
    out = beast_here(capsys, registered, "register", str(model), "--reference", str(csv))
    assert out.returncode == 0, out.stderr
    assert "baseline from reference holdout.csv (400 rows)" in out.stdout

    found = baseline_of(registered, "quality-predictor", "v5.0")
    assert found is not None and found.source == "reference"
    assert found.detail == "holdout.csv (400 rows)"
    scores = predictions(model, frame)
    labels = frame["score"].to_numpy()
    assert found.metrics["mae"] == pytest.approx(mean_absolute_error(labels, scores))
    assert found.metrics["accuracy"] == pytest.approx(np.mean(np.abs(scores - labels) <= 5))
    assert found.metrics["rmse"] == pytest.approx(np.sqrt(np.mean((scores - labels) ** 2)))
    assert found.reference is not None
    assert found.reference.features.names == FEATURES  # the model's order, not the file's
    assert found.reference.features.n == ROWS and found.reference.score.n == ROWS


def test_a_binary_line_takes_a_parquet_reference_with_true_false_labels(
    binary_ws: Workspace, tmp_path: Path
) -> None:
    model = train_classifier(binary_ws.models_dir / "revert-risk-v1.json", seed=4)
    frame = reference_frame(seed=9).drop(columns=["score"])
    scores = predictions(model, frame)
    rng = np.random.default_rng(1)
    reverted = rng.random(ROWS) < scores  # labels drawn from the model's own probabilities
    frame["reverted"] = reverted
    parquet = tmp_path / "reverts.parquet"
    frame.to_parquet(parquet)
    with closing(Engine(binary_ws)) as engine:
        reg = engine.register(model, reference=parquet)
    assert reg.reference == "reverts.parquet (400 rows)"
    found = baseline_of(binary_ws, "revert-risk", "v1")
    assert found is not None and found.source == "reference"
    assert found.metrics["auc"] == pytest.approx(roc_auc_score(reverted, scores))
    assert found.metrics["accuracy"] == pytest.approx(np.mean((scores >= 0.5) == reverted))
    assert set(found.metrics) >= {"auc", "log_loss", "brier", "accuracy"}


def test_an_explicit_reference_replaces_the_training_sidecar(
    registered: Workspace, tmp_path: Path
) -> None:
    frame = reference_frame()
    csv = tmp_path / "ref.csv"
    frame.to_csv(csv, index=False)
    rng = np.random.default_rng(0)
    sidecar_ref = VersionReference.build(
        rng.random((50, len(FEATURES))), rng.random(50) * 100, FEATURES
    )
    plain = train_model(model_path(registered, "v5.0"), seed=55)
    write_sidecar(plain, sidecar_ref, metrics={"accuracy": 0.5, "mae": 9.0})
    with closing(Engine(registered)) as engine:
        engine.register(plain)
    found = baseline_of(registered, "quality-predictor", "v5.0")
    assert found is not None and found.source == "training" and found.metrics["mae"] == 9.0

    given = train_model(model_path(registered, "v6.0"), seed=66)
    write_sidecar(given, sidecar_ref, metrics={"accuracy": 0.5, "mae": 9.0})
    with closing(Engine(registered)) as engine:
        engine.register(given, reference=csv)
    found = baseline_of(registered, "quality-predictor", "v6.0")
    assert found is not None and found.source == "reference"
    assert found.metrics["mae"] != 9.0 and found.reference is not None
    assert found.reference.features.n == ROWS


# -- bad files: one line, exit 1, nothing stored -------------------------------------------


def _bad(case: str, tmp_path: Path) -> Path:
    frame = reference_frame(rows=20)
    path = tmp_path / "bad.csv"
    if case == "missing-features":
        frame = frame.drop(columns=["churn", "coverage"])
    elif case == "no-label":
        frame = frame.drop(columns=["score"])
    elif case == "not-a-number":
        frame["complexity"] = frame["complexity"].astype(object)
        frame.loc[3, "complexity"] = "high"
    elif case == "empty-value":
        frame["churn"] = frame["churn"].astype(object)
        frame.loc[0, "churn"] = ""
    elif case == "label-out-of-range":
        frame.loc[5, "score"] = 140.0
    elif case == "header-only":
        frame = frame.iloc[:0]
    elif case == "empty-file":
        path.write_bytes(b"")
        return path
    elif case == "wrong-suffix":
        path = tmp_path / "bad.xlsx"
    elif case == "no-such-file":
        return tmp_path / "absent.csv"
    elif case == "control-in-name":
        path = tmp_path / "ref\x1b[2J.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing-features", ("missing feature column(s) coverage, churn",)),
        ("no-label", ("no label column 'score'",)),
        ("not-a-number", ("column complexity row 4", "'high' is not a number")),
        ("empty-value", ("column churn row 1", "an empty value is not a number")),
        ("label-out-of-range", ("label score row 6 is 140", "label_range [0, 100]")),
        ("header-only", ("no rows",)),
        ("empty-file", ("the file is empty",)),
        ("wrong-suffix", ("give a .csv or .parquet file",)),
        ("no-such-file", ("no such file",)),
        ("control-in-name", ("reference file name", "control character")),
    ],
)
def test_a_bad_reference_is_refused_in_one_line_and_nothing_is_stored(
    registered: Workspace,
    tmp_path: Path,
    case: str,
    needles: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = train_model(model_path(registered, "v5.0"), seed=55)
    bad = _bad(case, tmp_path)
    out = beast_here(capsys, registered, "register", str(model), "--reference", str(bad))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr
    listing = json.loads(beast_here(capsys, registered, "models", "--json").stdout)["models"]
    assert not any("v5.0" in m["versions"] for m in listing)  # the model was not registered


def test_a_binary_label_that_is_not_0_or_1_is_refused(
    binary_ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = train_classifier(binary_ws.models_dir / "revert-risk-v1.json", seed=4)
    frame = reference_frame(rows=10).drop(columns=["score"])
    frame["reverted"] = [0.0, 1.0, 1.0, 2.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]  # written "1.0"
    csv = tmp_path / "labels.csv"
    frame.to_csv(csv, index=False)
    out = beast_here(capsys, binary_ws, "register", str(model), "--reference", str(csv))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "label reverted row 4 is '2.0'" in out.stderr and "0 or 1" in out.stderr
    frame.loc[3, "reverted"] = 1.0
    frame.to_csv(csv, index=False)
    out = beast_here(capsys, binary_ws, "register", str(model), "--reference", str(csv))
    assert out.returncode == 0, out.stderr


# -- deploy --reference, and status naming the source ------------------------------------------


def test_deploy_a_registered_version_with_a_reference_and_status_names_every_source(
    registered: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert beast_here(capsys, registered, "deploy", "--version", "v1.0").returncode == 0
    (row,) = status_rows(registered, capsys)
    assert row["baseline"] is None
    human = beast_here(capsys, registered, "status").stdout
    assert "none yet" in human and "no baseline yet: quality-predictor/v1.0 (" in human

    bad = _bad("no-label", tmp_path)
    out = beast_here(
        capsys, registered, "deploy", "--version", "v2.0", "--traffic", "10", "--ab-test", "t",
        "--reference", str(bad),
    )  # fmt: skip
    assert out.returncode == 1 and "no label column" in out.stderr
    assert [r["version"] for r in status_rows(registered, capsys)] == ["v1.0"]  # nothing deployed
    assert baseline_of(registered, "quality-predictor", "v2.0") is None  # nothing stored

    csv = tmp_path / "ref.csv"
    reference_frame().to_csv(csv, index=False)
    out = beast_here(
        capsys, registered, "deploy", "--version", "v2.0", "--traffic", "10", "--ab-test", "t",
        "--reference", str(csv),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("; baseline: ref.csv (400 rows)")
    rows = {r["version"]: r["baseline"] for r in status_rows(registered, capsys)}
    assert rows == {"v1.0": None, "v2.0": "reference"}
    found = baseline_of(registered, "quality-predictor", "v2.0")
    assert found is not None and found.detail == "ref.csv (400 rows)"
    human = beast_here(capsys, registered, "status").stdout
    assert "reference" in human and "none yet" in human


def test_deploy_a_path_with_a_reference_registers_both_at_once(
    registered: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = train_model(model_path(registered, "v5.0"), seed=55)
    csv = tmp_path / "ref.csv"
    reference_frame().to_csv(csv, index=False)
    out = beast_here(capsys, registered, "deploy", str(model), "--reference", str(csv))
    assert out.returncode == 0, out.stderr
    assert "baseline: ref.csv (400 rows)" in out.stdout
    assert {r["version"]: r["baseline"] for r in status_rows(registered, capsys)} == {
        "v5.0": "reference"
    }


def test_beast_status_reads_baselines_without_loading_numpy(registered: Workspace) -> None:
    assert beast(registered, "deploy", "--version", "v1.0").returncode == 0
    code = (
        "import sys\n"
        "from engine.cli.main import main\n"
        f"assert main(['--workspace', {str(registered.root)!r}, 'status', '--json']) == 0\n"
        "print('numpy' in sys.modules, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_a_reference_is_not_replaced_once_live_rows_were_binned_by_it(
    registered: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.serving_helpers import count, serving

    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    reference_frame(seed=1).to_csv(first, index=False)
    reference_frame(seed=2).to_csv(second, index=False)
    with closing(Engine(registered)) as engine:
        engine.deploy(version="v1.0", reference=first)
    rows = np.random.default_rng(3).random((50, len(FEATURES))).tolist()
    with serving(registered) as (router, _log):
        router.predict_batch(rows)
    assert count(registered, "SELECT sum(drift_n) FROM rollups") == 50
    with closing(Engine(registered)) as engine:  # v2.0 has served nothing: replaced freely
        engine.register(model_path(registered, "v2.0"), reference=first)
        engine.register(model_path(registered, "v2.0"), reference=second)
    found = baseline_of(registered, "quality-predictor", "v2.0")
    assert found is not None and found.detail == "second.csv (400 rows)"
    out = beast_here(
        capsys,
        registered,
        "register",
        str(model_path(registered, "v1.0")),
        "--reference",
        str(second),
    )
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "quality-predictor/v1.0 has served rows counted against its drift" in out.stderr
    found = baseline_of(registered, "quality-predictor", "v1.0")
    assert found is not None and found.detail == "first.csv (400 rows)"
