"""`beast init --demo`: a demo workspace built from nothing, honestly.

Generated, labelled sample data (engine.demo.sample_data, written to data/demo-samples.csv and
marked as demo in its name), three real XGBoost versions named by the seed's convention
(`v1.0` baseline, `v1-enhanced`, `v3-advanced`), trained here with a bounded thread count,
registered through the normal validation path, `v1-enhanced` in production and `v3-advanced`
as the candidate of the A/B test `retrain-v3` at 10%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from engine.core.errors import Conflict
from engine.core.workspace import Workspace
from engine.demo import sample_data
from engine.facade import Engine
from engine.monitoring import baselines

LINE = "quality-predictor"
DEMO_ROWS = 6000
DEMO_TEST = "retrain-v3"

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
    models: tuple[Path, ...]


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
        _write_lineage(final, booster, samples, cut, names)
        # XGBoost picks the format from the extension, so the temp name keeps `.json`.
        tmp = final.with_name(f".{final.stem}.partial{final.suffix}")
        booster.save_model(str(tmp))
        tmp.replace(final)
        paths.append(final)
    return data, tuple(paths)


def _write_lineage(model: Path, booster: Any, samples: Any, cut: int, names: list[str]) -> None:
    """The sidecar registration reads: drift reference (training rows and scores) and the
    validation accuracy (within ±5 points) and MAE that model drift is measured against."""
    train_scores = booster.inplace_predict(samples.features[:cut])
    valid = booster.predict(xgb.DMatrix(samples.features[cut:], feature_names=names))
    errors = np.abs(valid - samples.scores[cut:])
    reference = baselines.VersionReference.build(
        samples.features[:cut], np.asarray(train_scores), tuple(names)
    )
    baselines.write_sidecar(
        model,
        reference,
        metrics={"accuracy": float(np.mean(errors <= 5.0)), "mae": float(np.mean(errors))},
        extra={"demo": True, "rows": int(cut), "generator": "engine.demo.sample_data"},
    )


def build(ws: Workspace) -> DemoResult:
    """Create the workspace if needed, then data, models, production and the A/B test."""
    engine, _ = Engine.init(ws)
    try:
        if engine.status().deployments:
            raise_existing(ws)
        data, paths = train_versions(ws)
        for path in paths:
            engine.register(path)
        engine.deploy(version="v1.0", model=LINE, note="demo: baseline")
        engine.deploy(version="v1-enhanced", model=LINE, note="demo: enhanced features")
        engine.deploy(
            version="v3-advanced",
            model=LINE,
            traffic=10,
            ab_test=DEMO_TEST,
            note="demo: advanced model on 10% of traffic",
        )
    finally:
        engine.close()
    return DemoResult(ws.root, data, paths)


def raise_existing(ws: Workspace) -> None:
    raise Conflict(f"{ws.root} already has deployments; use an empty directory for the demo")
