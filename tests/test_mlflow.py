"""MLflow, the optional extra: training runs logged to a real local store and read back with
MlflowClient, None without MLflow or when disabled, one-line failures, and `beast mlflow`
really serving the UI over the workspace's store. `make venv` installs the extra, so a missing
mlflow fails these tests rather than skipping them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, Workspace
from engine.cli.main import main
from engine.core.config import Config, load_config, parse_config
from engine.core.errors import BeastError, ConfigError
from engine.retrain import mlflow_tracking
from tests.helpers import REPO, built_once, model_path, set_config, train_model

# mlflow 3.17's own use of SQLAlchemy 2.1, not ours (matched by text: sqlalchemy is optional).
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
PARAMS = {"max_depth": 3, "eta": 0.3, "objective": "reg:squarederror"}
METRICS = {"holdout_accuracy": 0.875, "holdout_mae": 3.25}


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow 3 reports usage over the network unless told not to; tests stay offline.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new, migrated MLflow store to copy: MLflow's seconds of migrations paid once."""
    # `make venv` installs the mlflow extra: without it the tracking is untested, a failure.
    assert mlflow_tracking.available(), "mlflow is not installed (make venv installs .[mlflow])"
    ws = built_once(
        tmp_path_factory, "mlflow-store", lambda ws: mlflow_tracking.prepare_store(ws, Config())
    )
    return ws.root / mlflow_tracking.STORE_FILENAME


def _set_mlflow(ws: Workspace, **values: str) -> Config:
    """Set keys of config.toml's [mlflow] table (values as TOML literals); the new config."""
    set_config(ws, **values)
    return load_config(ws.config_path)


def _trained(ws: Workspace) -> tuple[Path, Path]:
    model = train_model(model_path(ws, "v9.0"), seed=9, rounds=3)
    lineage = model.with_name(model.name + ".lineage")
    lineage.write_text(json.dumps({"parent_version": "v1.0", "rows": 200}), encoding="utf-8")
    return model, lineage


def _log(ws: Workspace, config: Config, **overrides: Any) -> str | None:
    model, lineage = _trained(ws)
    kwargs: dict[str, Any] = {
        "run_name": "quality-predictor-v9.0",
        "params": PARAMS,
        "metrics": METRICS,
        "model_path": model,
        "lineage_path": lineage,
        "tags": {"line": "quality-predictor", "version": "v9.0", "job": "7"},
    }
    return mlflow_tracking.log_training(ws, config, **(kwargs | overrides))


def _client(ws: Workspace) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{ws.root / 'mlflow.db'}")


def test_tracking_uri_defaults_to_the_workspace_store() -> None:
    ws = Workspace(Path("/srv/ws"))
    settings = Config().mlflow
    assert mlflow_tracking.tracking_uri(ws, settings) == "sqlite:////srv/ws/mlflow.db"
    relative = parse_config('[mlflow]\ntracking_uri = "sqlite:///runs/t.db"').mlflow
    assert mlflow_tracking.tracking_uri(ws, relative) == "sqlite:////srv/ws/runs/t.db"
    server = parse_config('[mlflow]\ntracking_uri = "http://mlflow:5000"').mlflow
    assert mlflow_tracking.tracking_uri(ws, server) == "http://mlflow:5000"
    assert (
        mlflow_tracking.artifact_root("sqlite:////srv/ws/mlflow.db") == "file:///srv/ws/mlartifacts"
    )
    assert mlflow_tracking.artifact_root("http://mlflow:5000") is None


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('tracking_uri = "mlruns"', "mlflow.tracking_uri"),  # a bare path: the refused file store
        ("tracking_uri = 5000", "mlflow.tracking_uri"),
        ('experiment = ""', "mlflow.experiment"),
        ('experiment = " x"', "mlflow.experiment"),
        ('enabled = "yes"', "mlflow.enabled"),
        ("server = true", "mlflow.server"),
    ],
)
def test_mlflow_config_values_are_validated(line: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config.toml: (unknown key )?{key}"):
        parse_config(f"[mlflow]\n{line}\n")


def test_a_training_run_is_logged_to_the_workspace_store(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the current directory
    run_id = _log(workspace, load_config(workspace.config_path))
    assert run_id is not None
    client = _client(workspace)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "quality-predictor-v9.0"
    assert run.data.params == {k: str(v) for k, v in PARAMS.items()}
    assert run.data.metrics == METRICS
    assert run.data.tags["version"] == "v9.0" and run.data.tags["job"] == "7"
    assert run.data.tags["parent"] == "v1.0"  # from the lineage sidecar
    assert run.data.tags["beast.workspace"] == str(workspace.root)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "beast-mode"
    assert experiment.artifact_location == (workspace.root / "mlartifacts").as_uri()
    names = {a.path for a in client.list_artifacts(run_id, "model")}
    assert names == {
        "model/quality-predictor-v9.0.json",
        "model/quality-predictor-v9.0.json.lineage",
    }
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    local = client.download_artifacts(run_id, "model/quality-predictor-v9.0.json", str(fetched))
    assert Path(local).read_bytes() == model_path(workspace, "v9.0").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".beast-mode", "fetched"]  # no mlruns/
    second = _log(workspace, load_config(workspace.config_path), run_name="again")
    assert second is not None and second != run_id
    assert client.get_run(second).info.experiment_id == experiment.experiment_id


def test_a_configured_store_and_experiment_are_used(
    workspace: Workspace, empty_store: Path
) -> None:
    config = _set_mlflow(
        workspace, tracking_uri='"sqlite:///runs/track.db"', experiment='"nightly"'
    )
    (workspace.root / "runs").mkdir()
    shutil.copyfile(empty_store, workspace.root / "runs" / "track.db")
    run_id = _log(workspace, config)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace.root / 'runs' / 'track.db'}")
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "nightly"
    assert (workspace.root / "runs" / "mlartifacts" / run_id).is_dir()
    assert not (workspace.root / "mlflow.db").exists()


def test_a_logging_failure_is_one_beast_error_and_a_failed_run(
    workspace: Workspace, empty_store: Path
) -> None:
    shutil.copyfile(empty_store, workspace.root / "mlflow.db")
    config = load_config(workspace.config_path)
    with pytest.raises(BeastError) as refused:
        _log(workspace, config, metrics={"not a valid name!": 1.0})
    message = str(refused.value)
    assert "\n" not in message and message.startswith("MLflow logging to sqlite:///")
    runs = _client(workspace).search_runs(
        [_client(workspace).get_experiment_by_name("beast-mode").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    with pytest.raises(BeastError, match="is not a file"):
        _log(workspace, config, lineage_path=workspace.root / "missing.lineage")


def test_nothing_is_logged_when_disabled(workspace: Workspace) -> None:
    config = _set_mlflow(workspace, enabled="false")
    assert _log(workspace, config) is None
    assert not (workspace.root / "mlflow.db").exists()


def test_nothing_is_logged_without_mlflow(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    assert _log(workspace, load_config(workspace.config_path)) is None
    assert not (workspace.root / "mlflow.db").exists()


def test_the_engine_never_imports_mlflow() -> None:
    code = (
        "import sys, engine, engine.cli, engine.retrain.mlflow_tracking;"
        " print('mlflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "False"


def test_beast_mlflow_without_the_extra_says_how_to_install_it(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["--workspace", str(workspace.root), "mlflow"]) == 1
    err = capsys.readouterr().err
    assert err == "beast: MLflow is not installed: pip install 'beast-mode[mlflow]'\n"


def test_beast_mlflow_refuses_a_server_uri_and_a_bad_port(
    workspace: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--workspace", str(workspace.root), "mlflow", "--port", "70000"]) == 1
    assert "is not a TCP port" in capsys.readouterr().err
    _set_mlflow(workspace, tracking_uri='"https://mlflow.example.com"')
    assert main(["--workspace", str(workspace.root), "mlflow"]) == 1
    assert "is a tracking server (https://mlflow.example.com)" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ui(workspace: Workspace, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`beast mlflow` on a free port, in its own process group (killed whole afterwards)."""
    port = _free_port()
    command = [sys.executable, "-m", "engine.cli.main", "--workspace", str(workspace.root)]
    with (tmp_path / "ui.log").open("wb") as log:
        process = subprocess.Popen(
            [*command, "mlflow", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != "BEAST_HOME"},
        )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone if the UI exited
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _first_page(process: subprocess.Popen[bytes], url: str, log: Path) -> bytes:
    """Poll until the UI answers 200; fail with its log if it exits or never does (a slack
    bound for a loaded machine, not a timing assertion)."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                return bytes(response.read())
        except OSError:  # refused, reset or timed out while the server starts
            time.sleep(0.2)
    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
    raise AssertionError(f"the UI never answered (exit code {process.poll()}):\n{tail}")


def test_beast_mlflow_serves_the_ui_over_the_workspace_store(
    workspace: Workspace, tmp_path: Path, ui: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, base = ui
    # Logged while the UI starts on the same new store: both create it, under one lock.
    run_id = _log(workspace, load_config(workspace.config_path))
    experiment_id = _client(workspace).get_run(run_id).info.experiment_id
    body = _first_page(process, base + "/", tmp_path / "ui.log")
    assert b"<html" in body.lower()
    request = urllib.request.Request(
        base + "/ajax-api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read())["runs"]
    assert [r["info"]["run_id"] for r in runs] == [run_id]
    assert process.poll() is None


def test_a_forced_retrain_logs_its_run(workspace: Workspace, empty_store: Path) -> None:
    from engine.demo import sample_data
    from tests.retrain_helpers import LINE, run_job, train_on_samples

    first = workspace.models_dir / f"{LINE}-v1.0.json"
    train_on_samples(first, rows=300, depth=2, rounds=5, seed=1)
    sample_data.write_csv(workspace.data_dir / "samples.csv", sample_data.generate(300, seed=3))
    shutil.copyfile(empty_store, workspace.root / "mlflow.db")
    engine = Engine(workspace, actor="tester")
    try:
        engine.register(first)
        engine.deploy(version="v1.0", model=LINE)  # production: the new run's parent
        job = run_job(engine, timeout=120)
        assert job.status == "succeeded", engine.job_log(job.id)
        logged = [line for line in engine.job_log(job.id) if line.startswith("MLflow")]
    finally:
        engine.close()
    client = _client(workspace)
    (run,) = client.search_runs([client.get_experiment_by_name("beast-mode").experiment_id])
    assert logged == [f"MLflow: {run.info.run_id}"]
    assert run.info.status == "FINISHED" and run.info.run_name == f"{LINE}-{job.version}"
    model = workspace.models_dir / f"{LINE}-{job.version}.json"
    lineage = json.loads(model.with_name(model.name + ".lineage").read_text())
    assert run.data.params == {k: str(v) for k, v in lineage["parameters"].items()}
    assert run.data.metrics["holdout_mae"] == lineage["metrics"]["holdout"]["mae"]
    names = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert names == {f"model/{model.name}", f"model/{model.name}.lineage"}
    tags = run.data.tags
    assert (tags["line"], tags["version"], tags["parent"]) == (LINE, job.version, "v1.0")
    assert tags["job"] == str(job.id)
