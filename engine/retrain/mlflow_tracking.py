"""Training runs logged to MLflow (the optional `mlflow` extra), and the command for its UI.

mlflow is imported inside these functions only: it is not installed without the extra, and
importing it takes a second or more, which `beast status` and the server must never pay.

The store defaults to the workspace's own: `sqlite:///<workspace>/mlflow.db` (MLflow 3's
recommended local backend; its file store is in maintenance mode and refused by default) with
artifacts in `<workspace>/mlartifacts/`. The registered model file itself is logged as an
artifact, byte for byte (the same sha256 as in the registry), next to its lineage sidecar;
`mlflow.xgboost.log_model` would re-serialise it and spends seconds inferring requirements.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.core.config import Config, MlflowSettings
from engine.core.errors import BeastError
from engine.core.workspace import Workspace

INSTALL_HINT = "pip install 'beast-mode[mlflow]'"
STORE_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"
MODEL_ARTIFACT_DIR = "model"
# MLflow's log_batch limits: 100 params and 1000 metrics per request.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_SQLITE = "sqlite:///"
# lineage sidecar key -> run tag
_LINEAGE_TAGS = {"line": "line", "version": "version", "parent_version": "parent", "job": "job"}


def available() -> bool:
    """Whether the mlflow package is installed, found without importing it."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        return False


def tracking_uri(workspace: Workspace, settings: MlflowSettings) -> str:
    """The configured tracking URI; "" is the workspace's store, relative sqlite paths are
    taken from the workspace (not from whatever directory the worker runs in)."""
    uri = settings.tracking_uri
    if not uri:
        return _SQLITE + str(workspace.root / STORE_FILENAME)
    if uri.startswith(_SQLITE):
        path = uri[len(_SQLITE) :]
        if path and not path.startswith(("/", ":memory:")):
            return _SQLITE + str(workspace.root / path)
    return uri


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith(_SQLITE + "/"):
        return None
    return Path(uri[len(_SQLITE) :].split("?", 1)[0])


def artifact_root(uri: str) -> str | None:
    """Where a local sqlite store keeps its artifacts (`mlartifacts/` beside the database);
    None for a server or other database, which decides for itself."""
    database = _sqlite_path(uri)
    return None if database is None else (database.parent / ARTIFACTS_DIRNAME).as_uri()


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time creates or migrates a local sqlite store: MLflow does it on first
    use, and two at once fail ("table _alembic_tmp_experiments already exists")."""
    database = _sqlite_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(database.parent / f".{database.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def prepare_store(workspace: Workspace, config: Config) -> None:
    """Create a missing local sqlite store (under the lock that workers take), so that a UI
    started on a fresh workspace never races a training worker to create it."""
    uri = tracking_uri(workspace, config.mlflow)
    database = _sqlite_path(uri)
    if database is None:
        return
    with _store_lock(uri):
        # Looked at under the lock: a file seen outside it may be half-way through creation.
        if database.exists():
            return
        try:
            _import_mlflow().MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as exc:
            # The boundary to a third-party library, as in log_training.
            raise BeastError(f"cannot create the MLflow store {uri}: {_one_line(exc)}") from exc


def _import_mlflow() -> Any:
    try:
        import mlflow  # an optional extra, ~2 s to import: only when tracking is configured
    except ImportError as exc:
        raise BeastError(f"mlflow is installed but cannot be imported: {_one_line(exc)}") from exc
    return mlflow


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def log_training(
    workspace: Workspace,
    config: Config,
    *,
    run_name: str,
    params: Mapping[str, str | int | float],
    metrics: Mapping[str, float],
    model_path: Path,
    lineage_path: Path | None,
    tags: Mapping[str, str] | None = None,
) -> str | None:
    """Log one training run (params, metrics, the model file and its lineage, tags) to MLflow.

    Tags: line, version, parent and job from the lineage sidecar, overridden by `tags`.

    Returns the MLflow run id, or None when MLflow is not installed or `[mlflow] enabled` is
    false. Raises BeastError (one line) when logging fails; the run is then marked FAILED.
    """
    settings = config.mlflow
    if not settings.tracking_enabled or not available():
        return None
    for path in (model_path, lineage_path):
        if path is not None and not path.is_file():
            raise BeastError(f"MLflow logging: {path} is not a file")
    uri = tracking_uri(workspace, settings)
    mlflow = _import_mlflow()
    client: Any = None
    run_id: str | None = None
    try:
        with _store_lock(uri):
            # Constructing the client creates (or migrates) a local store: inside the lock.
            client = mlflow.MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, settings.experiment_name, artifact_root(uri))
        all_tags = {
            "beast.workspace": str(workspace.root),
            "beast.model_file": model_path.name,
            **_lineage_tags(lineage_path),
            **(tags or {}),
        }
        run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        run_id = str(run.info.run_id)
        _log_values(client, run_id, params, metrics)
        for path in (model_path, lineage_path):
            if path is not None:
                client.log_artifact(run_id, str(path), artifact_path=MODEL_ARTIFACT_DIR)
        client.set_terminated(run_id, "FINISHED")
    except BeastError:
        _mark_failed(client, run_id)
        raise
    except Exception as exc:
        # The boundary to a third-party library: whatever it raises (MlflowException, a
        # database or network error) becomes the one line the training worker reports.
        _mark_failed(client, run_id)
        raise BeastError(f"MLflow logging to {uri} failed: {_one_line(exc)}") from exc
    return run_id


def _lineage_tags(path: Path | None) -> dict[str, str]:
    """line, version, parent and job from the sidecar, so runs can be searched by them."""
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # the sidecar is still logged as it is; tags are only an index over it
    if not isinstance(doc, dict):
        return {}
    return {tag: str(doc[key]) for key, tag in _LINEAGE_TAGS.items() if doc.get(key) is not None}


def _experiment_id(client: Any, name: str, location: str | None) -> str:
    from mlflow.exceptions import MlflowException  # optional extra (see _import_mlflow)

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException:
            # Another worker created it between our look and our create.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise BeastError(
            f"MLflow experiment {name!r} is deleted: restore it (`mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}`) or set [mlflow] experiment"
        )
    return str(experiment.experiment_id)


def _log_values(
    client: Any,
    run_id: str,
    params: Mapping[str, str | int | float],
    metrics: Mapping[str, float],
) -> None:
    from mlflow.entities import Metric, Param  # optional extra (see _import_mlflow)

    now_ms = int(time.time() * 1000)
    param_list = [Param(key, str(value)) for key, value in params.items()]
    metric_list = [Metric(key, float(value), now_ms, 0) for key, value in metrics.items()]
    for chunk in _chunks(param_list, _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metric_list, _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _mark_failed(client: Any, run_id: str | None) -> None:
    if run_id is None:
        return
    # The original failure is the one worth reporting, not a second one while recording it.
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, "FAILED")


def ui_command(workspace: Workspace, config: Config, host: str, port: int) -> list[str]:
    """The argv that serves the MLflow UI over the workspace's tracking store.

    Raises BeastError when mlflow is not installed or the store is a remote server (which
    has its own UI).
    """
    uri = tracking_uri(workspace, config.mlflow)
    if uri.startswith(("http://", "https://", "databricks")):
        raise BeastError(
            f"[mlflow] tracking_uri is a tracking server ({uri}): open its own UI; "
            "`beast mlflow` serves a local store"
        )
    if not available():
        raise BeastError(f"MLflow is not installed: {INSTALL_HINT}")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    root = artifact_root(uri)
    if root is not None:
        command += ["--default-artifact-root", root]
    # One worker: a local UI for one operator, on machines where cores serve predictions.
    return [*command, "--host", host, "--port", str(port), "--workers", "1"]
