"""Shared test helpers: real XGBoost models, real workspaces, the real `beast` command."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.core.records import HistoryEntry

FEATURES = ("coverage", "complexity", "lint_density", "duplication", "churn")
REPO = Path(__file__).resolve().parent.parent


def train_model(
    path: Path,
    *,
    seed: int = 0,
    n_features: int = len(FEATURES),
    rounds: int = 5,
    names: tuple[str, ...] | None = FEATURES,
) -> Path:
    """Train a small real XGBoost regressor and save it (.json or .ubj by suffix)."""
    rng = np.random.default_rng(seed)
    x = rng.random((200, n_features)).astype(np.float32)
    y = x @ rng.random(n_features) * 100
    feature_names = list(names) if names and len(names) == n_features else None
    dtrain = xgb.DMatrix(x, label=y, feature_names=feature_names)
    booster = xgb.train(
        {"max_depth": 3, "nthread": 1, "seed": seed}, dtrain, num_boost_round=rounds
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return path


def model_path(ws: Workspace, version: str, suffix: str = ".json") -> Path:
    return ws.models_dir / f"quality-predictor-{version}{suffix}"


def copy_workspace(src: Workspace, dst_root: Path) -> Workspace:
    """Copy a workspace that no process is using; the database through SQLite's backup API."""
    shutil.copytree(
        src.root, dst_root, ignore=shutil.ignore_patterns("beast.db", "beast.db-*", ".*.lock")
    )
    if not src.db_path.exists():
        return Workspace(dst_root)  # its state is on a server (BEAST_STORE_URL)
    with sqlite3.connect(src.db_path) as source, sqlite3.connect(dst_root / "beast.db") as target:
        source.backup(target)
    source.close()
    target.close()
    return Workspace(dst_root)


def once_per_run(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """A directory `build` fills once per test run. Under xdist the workers of one run share
    it: the first to take its lock builds it, the others wait and read it (a module- or
    session-scoped fixture is set up again in every worker that runs one of its tests, and
    worksteal splits modules across workers). Its users must not change what is in it."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        own = factory.mktemp(name)
        build(own)
        return own
    shared = factory.getbasetemp().parent / f"beast-{name}-{run}"
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "ready").exists():
            build(shared)
            (shared / "ready").touch()
    return shared


def built_once(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Workspace], object]
) -> Workspace:
    """A workspace `build` fills once per run, shared by the xdist workers (each building its
    own cost each worker the training and validation again). Tests copy it (copy_workspace),
    never change it."""
    done = once_per_run(factory, name, lambda shared: build(Workspace(shared / ".beast-mode")))
    return Workspace(done / ".beast-mode")


def beast(
    ws: Workspace | None,
    *args: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `beast` command (the installed console script) in a subprocess."""
    full_env = dict(os.environ)
    full_env.pop("BEAST_HOME", None)
    if env:
        full_env.update(env)
    cmd = [sys.executable, "-m", "engine.cli.main"]
    if ws is not None:
        cmd += ["--workspace", str(ws.root)]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        input=input,
        cwd=str(REPO),
        check=False,
    )


def beast_here(
    capsys: pytest.CaptureFixture[str], ws: Workspace | None, *args: str
) -> subprocess.CompletedProcess[str]:
    """`beast` run in this process (`engine.cli.main.main`, the console script's entry point),
    for tests of what it prints and returns where the process boundary is not what they check:
    a cold `beast` subprocess spends ~2 s importing numpy and XGBoost. Argparse's exits
    (usage errors: 2, `--help`: 0) are returned as the process's would be."""
    from engine.cli.main import main

    argv = ["--workspace", str(ws.root), *args] if ws is not None else list(args)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["beast", *argv], code, out, err)


def beast_json_here(ws: Workspace, *args: str) -> Any:
    """The JSON `beast --workspace WS ARGS` prints (ARGS with --json), by the console script's
    entry point in this process: for reading state between the steps a test runs as real
    processes (a cold `beast` process is ~2 s of imports). Fails on a non-zero exit."""
    from engine.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--workspace", str(ws.root), *args])
    assert code == 0, f"beast {' '.join(args)} exited {code}"
    return json.loads(out.getvalue())


def assert_invariants(ws: Workspace) -> None:
    """The invariants of DESIGN.md §5 (doctor, integrity_check, foreign_key_check)."""
    if not ws.db_path.exists() and not os.environ.get("BEAST_STORE_URL"):
        return
    engine = Engine(ws)
    try:
        report = engine.doctor()
    finally:
        engine.close()
    assert report.ok, "invariants broken:\n" + "\n".join(report.problems)


def set_config(ws: Workspace, **values: str) -> None:
    """Rewrite keys of the workspace's config.toml, each a line `beast init` wrote once
    (values as TOML literals: `set_config(ws, environment='"production"')`)."""
    text = ws.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1, f"{key} is not a line of config.toml"
    ws.config_path.write_text(text, encoding="utf-8")


def production(engine: Engine) -> str | None:
    """The production version's name (of the only line), or None."""
    rows = [d for d in engine.status().deployments if d.role == "production"]
    return rows[0].version if rows else None


def history_of(ws: Workspace) -> list[HistoryEntry]:
    engine = Engine(ws)
    try:
        return engine.history()
    finally:
        engine.close()


def production_of(ws: Workspace) -> str | None:
    engine = Engine(ws)
    try:
        return production(engine)
    finally:
        engine.close()


def settle_compiled(engine: Engine, timeout_s: float = 600.0) -> None:
    """Wait until no version of the engine's workspace is still compiling its trees (built in
    the background after registration: engine.registry.compiled), on either backend. The demo
    template's copies then carry them (each copy's router asked for the builds again: a
    compiler run per version per test), and a benchmark measures no compiler beside it (a
    200-tree model is ~20 s of gcc: one routed row's p99 was 4.7 ms, batches 55k rows/s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        scorers = engine.models().scorers.values()
        if not any(reason.startswith("compiling") for _scorer, reason in scorers):
            return
        time.sleep(0.2)
    raise AssertionError(f"compiled trees still building after {timeout_s:g} s")
