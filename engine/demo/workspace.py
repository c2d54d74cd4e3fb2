"""`beast init --demo`: a demo workspace built from nothing, honestly.

Two model lines, one per task, each with generated, labelled sample data marked as demo in its
name (engine.demo.sample_data) and real XGBoost versions trained here with a bounded thread
count, registered through the normal validation path, one in production and one the candidate
of an A/B test:
- `quality-predictor` (regression, the seed's): data/demo-samples.csv; `v1.0` baseline,
  `v1-enhanced` in production, `v3-advanced` the candidate of `retrain-v3` from 10%;
- `revert-risk` (binary: whether a merged change gets reverted; declared in config.toml as
  `[lines.revert-risk]`): data/demo-reverts.csv; `binary:logistic` models, `v1.0` in
  production, `v2.0` the candidate of `revert-v2` rolled out 20 → 50 → 100% (and its shadow:
  scored beside production on every request, so its verdict is paired).
Both tests are progressive rollouts: the leader steps a candidate up as its gates pass and
pulls it when one fails (`v3-advanced`: 10 → 25 → 50 → 100%).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from engine.core import engine_lock
from engine.core.clock import utc_now
from engine.core.errors import BeastError, Conflict
from engine.core.workspace import Workspace
from engine.demo import sample_data
from engine.facade import Engine
from engine.monitoring import baselines, scoring
from engine.monitoring.report import AUTO_PULL_ACTOR

LINE = "quality-predictor"
# Written last by `build`: what marks a workspace as the demo's, the only kind `reset` deletes.
MARKER = "demo.json"
RESET_HINT = "make demo-reset"  # = beast init --demo --reset on the demo's workspace
DEMO_ROWS = 6000
DEMO_TEST = "retrain-v3"
REVERT_LINE = sample_data.REVERT_LINE
REVERT_TEST = "revert-v2"
# The tests' progressive rollouts (README "Progressive rollouts"): the leader's evaluator
# steps each candidate up as its gates pass, and pulls it when one fails.
DEMO_ROLLOUT = (10, 25, 50, 100)
REVERT_ROLLOUT = (20, 50, 100)
REVERT_ROWS = 6000
# The binary line's contract, appended to the workspace's config.toml (README "Model lines").
REVERT_TABLE = f"""
[lines.{REVERT_LINE}]
# demo: whether a merged change gets reverted (engine.demo.sample_data)
task = "binary"
label = "{sample_data.REVERT_LABEL}"
time = "{sample_data.REVERT_TIME}"
decision_threshold = 0.5
"""

# revert-risk (version, xgboost params, rounds): the candidate a step up from production —
# a quick baseline of eight stumps, then smaller steps and more rounds. The ground truth is
# additive (sample_data.revert_probability): depth 2 fits it; the deeper model this demo first
# shipped (depth 4, 200 rounds) scored 0.009 AUC under a depth-2 baseline on fresh rows, so no
# rollout could show it advancing. On 20,000 fresh rows: v1.0 AUC 0.705, v2.0 0.738 (at the
# simulator's full drift 0.730 and 0.757).
_REVERT_VERSIONS: tuple[tuple[str, dict[str, float | int], int], ...] = (
    ("v1.0", {"max_depth": 1, "eta": 0.3}, 8),
    ("v2.0", {"max_depth": 2, "eta": 0.05}, 300),
)

# (version, features used, xgboost params, rounds): each a step up from the last.
_VERSIONS: tuple[tuple[str, int, dict[str, float | int], int], ...] = (
    ("v1.0", 12, {"max_depth": 2, "eta": 0.3}, 40),
    ("v1-enhanced", 12, {"max_depth": 4, "eta": 0.2}, 120),
    ("v3-advanced", 12, {"max_depth": 6, "eta": 0.1, "subsample": 0.9}, 300),
)


@dataclass(frozen=True)
class DemoResult:
    workspace: Path
    data: Path
    models: tuple[Path, ...]  # both lines'
    revert_data: Path | None = None


def train_versions(
    ws: Workspace, rows: int = DEMO_ROWS, seed: int = 7
) -> tuple[Path, tuple[Path, ...]]:
    """Generate the demo data and train the three versions into models/ (atomic writes)."""
    samples = sample_data.generate(rows, seed=seed)
    data = sample_data.write_csv(ws.data_dir / "demo-samples.csv", samples)
    names = list(sample_data.FEATURES)
    cut = int(rows * 0.8)  # time-ordered: train on the past, stop early on the recent 20%
    train = xgb.DMatrix(samples.features[:cut], label=samples.scores[:cut], feature_names=names)
    valid = xgb.DMatrix(samples.features[cut:], label=samples.scores[cut:], feature_names=names)
    paths = []
    for version, _n, params, rounds in _VERSIONS:
        booster = xgb.train(
            {"objective": "reg:squarederror", "nthread": 2, "seed": seed, **params},
            train,
            num_boost_round=rounds,
            evals=[(valid, "valid")],
            early_stopping_rounds=20,
            verbose_eval=False,
        )
        final = ws.models_dir / f"{LINE}-{version}.json"
        _write_lineage(
            final,
            booster,
            samples.features,
            samples.scores,
            task="regression",
            cut=cut,
            names=names,
        )
        _save(booster, final)
        paths.append(final)
    return data, tuple(paths)


def _write_lineage(
    model: Path,
    booster: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    cut: int,
    names: list[str],
) -> None:
    """The sidecar registration reads: drift reference (training rows and scores) and the
    holdout's metrics for the line's task (engine.monitoring.scoring) that model drift is
    measured against."""
    reference = baselines.VersionReference.build(
        x[:cut], np.asarray(booster.inplace_predict(x[:cut])), tuple(names)
    )
    holdout = np.asarray(booster.predict(xgb.DMatrix(x[cut:], feature_names=names)), np.float64)
    baselines.write_sidecar(
        model,
        reference,
        metrics=scoring.metrics(task, holdout, y[cut:].astype(np.float64)),
        extra={"demo": True, "rows": int(cut), "generator": "engine.demo.sample_data"},
    )


def _save(booster: Any, final: Path) -> None:
    """Save atomically; XGBoost picks the format from the extension, so the temp name keeps
    `.json`."""
    tmp = final.with_name(f".{final.stem}.partial{final.suffix}")
    booster.save_model(str(tmp))
    tmp.replace(final)


def train_revert_versions(
    ws: Workspace, rows: int = REVERT_ROWS, seed: int = 11
) -> tuple[Path, tuple[Path, ...]]:
    """Generate the revert-risk data and train its `binary:logistic` versions into models/."""
    samples = sample_data.generate_reverts(rows, seed=seed)
    data = sample_data.write_reverts_csv(ws.data_dir / "demo-reverts.csv", samples)
    names = list(sample_data.REVERT_FEATURES)
    cut = int(rows * 0.8)  # time-ordered, as the score line's
    x, y = samples.features, samples.reverted
    train = xgb.DMatrix(x[:cut], label=y[:cut], feature_names=names)
    valid = xgb.DMatrix(x[cut:], label=y[cut:], feature_names=names)
    paths = []
    for version, params, rounds in _REVERT_VERSIONS:
        booster = xgb.train(
            {
                "objective": "binary:logistic",
                "eval_metric": "logloss",
                "nthread": 2,
                "seed": seed,
                **params,
            },
            train,
            num_boost_round=rounds,
            evals=[(valid, "valid")],
            early_stopping_rounds=20,
            verbose_eval=False,
        )
        final = ws.models_dir / f"{REVERT_LINE}-{version}.json"
        _write_lineage(final, booster, x, y, task="binary", cut=cut, names=names)
        _save(booster, final)
        paths.append(final)
    return data, tuple(paths)


def declare_revert_line(ws: Workspace) -> None:
    """Add `[lines.revert-risk]` to config.toml (once): registration checks models against it."""
    text = ws.config_path.read_text(encoding="utf-8")
    # A line of its own: the template's commented example mentions the same table.
    if f"[lines.{REVERT_LINE}]" not in text.splitlines():
        ws.config_path.write_text(text.rstrip("\n") + "\n" + REVERT_TABLE, encoding="utf-8")


def build(ws: Workspace) -> DemoResult:
    """Create the workspace if needed, then data, models, production and the A/B tests."""
    engine, _ = Engine.init(ws)
    try:
        if engine.status().deployments:
            raise_existing(ws)
    finally:
        engine.close()
    declare_revert_line(ws)
    engine = Engine(ws)  # reads the declared line
    try:
        data, paths = train_versions(ws)
        revert_data, revert_paths = train_revert_versions(ws)
        for path in (*paths, *revert_paths):
            engine.register(path)
        engine.deploy(version="v1.0", model=LINE, note="demo: baseline")
        engine.deploy(version="v1-enhanced", model=LINE, note="demo: enhanced features")
        engine.deploy(
            version="v3-advanced",
            model=LINE,
            ab_test=DEMO_TEST,
            rollout=DEMO_ROLLOUT,
            note="demo: advanced model, rolled out from 10% of traffic",
        )
        engine.deploy(version="v1.0", model=REVERT_LINE, note="demo: revert risk baseline")
        engine.deploy(
            version="v2.0",
            model=REVERT_LINE,
            ab_test=REVERT_TEST,
            rollout=REVERT_ROLLOUT,
            note="demo: deeper revert-risk model, rolled out from 20% of traffic",
        )
        # Also scored on every production request: its verdict is paired (the same requests,
        # both models), so the rollout's gates decide on hundreds of labels, not thousands.
        engine.shadow(version="v2.0", model=REVERT_LINE, note="demo: v2.0 scored beside production")
    finally:
        engine.close()
    _write_marker(ws)
    return DemoResult(ws.root, data, (*paths, *revert_paths), revert_data)


def raise_existing(ws: Workspace) -> None:
    raise Conflict(f"{ws.root} already has deployments; use an empty directory for the demo")


def _write_marker(ws: Workspace) -> None:
    marker = {"demo": True, "built_at": utc_now(), "generator": "engine.demo.workspace"}
    tmp = ws.root / f".{MARKER}.partial"
    tmp.write_text(json.dumps(marker) + "\n", encoding="utf-8")
    tmp.replace(ws.root / MARKER)


def built_at(ws: Workspace) -> datetime | None:
    """When `build` made this workspace (its demo.json), None when it holds no demo marker."""
    try:
        marker = json.loads((ws.root / MARKER).read_text(encoding="utf-8"))
        return datetime.fromisoformat(str(marker["built_at"]).replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reset(ws: Workspace) -> DemoResult:
    """Delete the demo workspace and build it again from nothing. Refused, touching nothing,
    unless `build` made it (demo.json) and no engine serves it."""
    if ws.root.exists() and any(ws.root.iterdir()):
        if built_at(ws) is None:
            raise BeastError(
                f"{ws.root} is not a demo workspace (no {MARKER}): --reset deletes only what "
                "`beast init --demo` built"
            )
        pid = engine_lock.running_pid(ws)
        if pid is not None:
            raise BeastError(f"a beast engine (pid {pid}) is serving {ws.root}; stop it first")
        shutil.rmtree(ws.root)
    return build(ws)


def describe(ws: Workspace, now: datetime | None = None) -> str:
    """One line on an existing demo workspace: where, how old, how its test stands, and how to
    start fresh."""
    where = _shown(ws.root)
    at = built_at(ws)
    if at is None:
        return f"demo workspace {where} (built before {MARKER}); start fresh: rm -r {where}"
    hours = ((now or datetime.now(UTC)) - at).total_seconds() / 3600
    age = f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.0f} h"
    local = at.astimezone().strftime("%Y-%m-%d %H:%M")
    return (
        f"demo workspace {where} from {local} ({age} ago, {_test_state(ws)}); "
        f"start fresh: {RESET_HINT}"
    )


def _test_state(ws: Workspace) -> str:
    engine = Engine(ws)
    try:
        test = engine.experiment(DEMO_TEST)
    except BeastError:
        return f"no test {DEMO_TEST}"
    finally:
        engine.close()
    if test.status == "running":
        return f"{test.candidate} on test"
    if test.ending == "auto-pulled" or test.ended_by == AUTO_PULL_ACTOR:
        return f"{test.candidate} pulled"
    return f"{test.candidate} {test.status}"


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (as `make demo` names it)."""
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
