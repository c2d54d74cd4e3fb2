"""Helpers for the retraining tests: a line on the sample-data schema, real jobs, /proc checks."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

from engine import Engine, Workspace
from engine.demo import sample_data
from engine.retrain import jobs
from engine.retrain.jobs import Job
from engine.store.base import Tx

LINE = "quality-predictor"
DATA_ROWS = 300


def train_on_samples(path: Path, *, rows: int, depth: int, rounds: int, seed: int) -> Path:
    """A real model of the sample-data schema (12 named features)."""
    samples = sample_data.generate(rows, seed=seed)
    dtrain = xgb.DMatrix(
        samples.features, label=samples.scores, feature_names=list(sample_data.FEATURES)
    )
    booster = xgb.train(
        {"max_depth": depth, "eta": 0.3, "nthread": 1, "seed": seed},
        dtrain,
        num_boost_round=rounds,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return path


def build_template(root: Path) -> Workspace:
    """v1.0 weak (depth 1, 2 rounds), v2.0 strong (3000 rows), none deployed; 300 rows of
    sample data in data/ (newer than what the models saw)."""
    ws = Workspace(root)
    engine, _ = Engine.init(ws)
    try:
        weak = train_on_samples(
            ws.models_dir / f"{LINE}-v1.0.json", rows=500, depth=1, rounds=2, seed=1
        )
        strong = train_on_samples(
            ws.models_dir / f"{LINE}-v2.0.json", rows=3000, depth=4, rounds=60, seed=2
        )
        engine.register(weak)
        engine.register(strong)
    finally:
        engine.close()
    sample_data.write_csv(ws.data_dir / "samples.csv", sample_data.generate(DATA_ROWS, seed=3))
    # MLflow (when the extra is installed) costs a job seconds of imports: its own tests cover it.
    text = ws.config_path.read_text(encoding="utf-8")
    if "\n[mlflow]\n" in text:
        text = text.replace("\nenabled = true\n", "\nenabled = false\n", 1)
        ws.config_path.write_text(text, encoding="utf-8")
    return ws


def set_retrain(ws: Workspace, **values: object) -> None:
    """Set keys of config.toml's [retrain] table (before an Engine reads it)."""
    text = ws.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        line = re.compile(rf"^{key} = .*$", re.MULTILINE)
        if line.search(text):
            text = line.sub(f"{key} = {shown}", text, count=1)
        else:
            text = text.replace("[retrain]\n", f"[retrain]\n{key} = {shown}\n", 1)
    ws.config_path.write_text(text, encoding="utf-8")


def wait_for_log(engine: Engine, job_id: int, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in engine.job_log(job_id):
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never logged {needle!r}: {engine.job_log(job_id)}")


def alive(pid: int) -> bool:
    """Running (a zombie is dead; whoever adopted it reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def wait_reaped(pid: int, timeout: float = 10) -> bool:
    """Gone from /proc: dead and reaped by its parent (a child of ours: no zombie left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    return False


def queue_job(
    tx: Tx,
    *,
    trigger: str = "t",
    deploy: bool = False,
    timeout_s: float = 9,
    lease_s: float = 9,
) -> int:
    """A forced job of the line queued (or joined) by a test, in the caller's transaction."""
    job_id, _joined = jobs.create_or_join(
        tx.jobs,
        LINE,
        trigger=trigger,
        force=True,
        deploy=deploy,
        actor="x",
        timeout_s=timeout_s,
        lease_s=lease_s,
    )
    return job_id


def run_job(engine: Engine, *, deploy: bool = False, timeout: float = 60) -> Job:
    job = engine.start_retrain(force=True, deploy=deploy)
    return engine.wait_job(job.id, timeout)


def model_files(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.models_dir.iterdir())


def version_names(engine: Engine) -> set[str]:
    with engine.store.read_sql() as conn:
        return {r[0] for r in conn.execute("SELECT name FROM versions")}


def holdout_rows(n: int, seed: int) -> np.ndarray:
    return sample_data.generate(n, seed=seed).features
