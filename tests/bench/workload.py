"""What the serving, monitoring, drift and HTTP benchmarks share: data, models, workspaces.

Twenty features: the twelve realistic ones of `engine.demo.sample_data` and eight more of the same
kind (build times, flaky tests, review hours …), with a label that depends on all of them.
Models are real XGBoost regressors of DESIGN.md §8's size — 200 trees of depth 6 — trained
once per process and seed (a few seconds) and written into each benchmark's own workspace,
with the lineage sidecar training writes, so the writer bins features for drift as it would
in production.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

from engine import Engine, Workspace
from engine.demo import sample_data
from engine.monitoring import baselines
from tests.helpers import settle_compiled

LINE = "quality-predictor"
EXTRA: tuple[str, ...] = (
    "build_minutes",  # CI build time, 1–90
    "flaky_test_rate",  # fraction of flaky tests, 0–0.3
    "review_hours",  # median hours to first review, 0.1–200
    "commits_per_week",  # 0–150
    "bus_factor",  # 1–20
    "security_alerts",  # open advisories, 0–40
    "type_coverage",  # fraction of typed symbols, 0–1
    "stale_branches",  # 0–100
)
FEATURES: tuple[str, ...] = sample_data.FEATURES + EXTRA
TREES = 200
DEPTH = 6
TRAIN_ROWS = 20_000


@dataclass(frozen=True)
class Data:
    x: np.ndarray  # float32 (n, 20)
    y: np.ndarray  # float32 (n,)


def generate(n: int, *, seed: int = 0, drift: float = 0.0) -> Data:
    """n labelled rows of the twenty features; `drift` ages the codebase as sample_data does."""
    base = sample_data.generate(n, seed=seed, drift=drift)
    rng = np.random.default_rng(seed + 10_000)
    extra = np.column_stack(
        [
            np.clip(rng.gamma(2.5, 4.0, n) + 1 + 10 * drift, 1, 90),
            np.clip(rng.beta(1, 30, n) + 0.05 * drift, 0, 0.3),
            np.clip(rng.lognormal(2.0, 1.0, n) * (1 + drift), 0.1, 200),
            np.clip(rng.poisson(15, n).astype(float), 0, 150),
            np.clip(rng.geometric(0.3, n).astype(float), 1, 20),
            np.clip(rng.poisson(2 + 3 * drift, n).astype(float), 0, 40),
            np.clip(rng.beta(4, 2, n) - 0.2 * drift, 0, 1),
            np.clip(rng.poisson(6, n).astype(float), 0, 100),
        ]
    ).astype(np.float32)
    effect = (
        -0.08 * (extra[:, 0] - 10)
        - 25.0 * (extra[:, 1] - 0.03)
        - 1.5 * np.log1p(extra[:, 2])
        + 0.5 * np.log1p(extra[:, 4])
        - 0.4 * extra[:, 5]
        + 6.0 * (extra[:, 6] - 0.66)
    )
    y = np.clip(base.scores + effect, 0, 100).astype(np.float32)
    return Data(np.hstack([base.features, extra]), y)


@functools.cache
def _trained(seed: int) -> tuple[bytes, bytes]:
    """(model JSON, lineage sidecar JSON) of a 200-tree, depth-6 model; once per process."""
    data = generate(TRAIN_ROWS, seed=seed)
    cut = int(TRAIN_ROWS * 0.8)
    names = list(FEATURES)
    dtrain = xgb.DMatrix(data.x[:cut], label=data.y[:cut], feature_names=names)
    booster = xgb.train(
        {
            "objective": "reg:squarederror",
            "max_depth": DEPTH,
            "eta": 0.1,
            "subsample": 0.9,
            # One thread: on a shared 2-core machine OpenMP's spinning threads make a 1.5 s
            # training take 15 s when another process holds a core (DESIGN.md §8).
            "nthread": 1,
            "seed": seed,
        },
        dtrain,
        num_boost_round=TREES,
    )
    valid = booster.inplace_predict(data.x[cut:])
    errors = np.abs(valid - data.y[cut:])
    reference = baselines.VersionReference.build(
        data.x[:cut], np.asarray(booster.inplace_predict(data.x[:cut])), FEATURES
    )
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"beast-bench-{os.getpid()}-{seed}.json"
    try:
        booster.save_model(str(scratch))
        model = scratch.read_bytes()
        baselines.write_sidecar(
            scratch,
            reference,
            metrics={"accuracy": float(np.mean(errors <= 5.0)), "mae": float(np.mean(errors))},
            extra={"rows": cut, "generator": "tests.bench.workload"},
        )
        sidecar = baselines.sidecar_path(scratch).read_bytes()
    finally:
        scratch.unlink(missing_ok=True)
        baselines.sidecar_path(scratch).unlink(missing_ok=True)
    return model, sidecar


def model_file(ws: Workspace, version: str, seed: int) -> Path:
    """Write a trained model (and its lineage sidecar) into the workspace's models/."""
    model, sidecar = _trained(seed)
    path = ws.models_dir / f"{LINE}-{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    baselines.sidecar_path(path).write_bytes(sidecar)
    return path


def booster(seed: int) -> xgb.Booster:
    """The bare floor: the same model with the router's settings (nthread=1)."""
    bare = xgb.Booster(params={"nthread": 1})
    bare.load_model(bytearray(_trained(seed)[0]))
    return bare


def compiled_library(seed: int) -> tuple[Path | None, str]:
    """The model of `seed` compiled by tl2cgen with the machine's C compiler, or None and why.

    Cached by the model's sha256 (and both libraries' versions) under TMPDIR: compiling the
    200 trees takes ≈ 40 s on this machine, once."""
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        return None, (
            f"treelite/tl2cgen are not importable ({exc}): "
            "pip install treelite==4.8.1 tl2cgen==1.0.0"
        )
    toolchain = next((cc for cc in ("gcc", "clang") if shutil.which(cc)), None)
    if toolchain is None:
        return None, "no C compiler (gcc or clang) on PATH"
    model = _trained(seed)[0]
    stamp = f"{treelite.__version__} {tl2cgen.__version__} {toolchain}".encode()
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / "beast-bench-compiled"
    lib = cache / f"{hashlib.sha256(model + stamp).hexdigest()}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        scratch = cache / f"{lib.stem}.{os.getpid()}.so"
        tl2cgen.export_lib(
            treelite.frontend.from_xgboost(booster(seed)),
            toolchain=toolchain,
            libpath=str(scratch),
            params={"parallel_comp": os.cpu_count() or 1},
            nthread=os.cpu_count() or 1,
        )
        os.replace(scratch, lib)  # whole or absent: another run may read the cache
    return lib, ""


def compiled_scorer(lib: Path) -> Callable[[np.ndarray], float]:
    """One row (float32, contiguous, in FEATURES order, no NaN: tl2cgen reads a missing value
    from a separate flag, not from NaN) scored by the compiled library's `predict`."""
    handle = ctypes.CDLL(str(lib))
    predict = handle.predict
    predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    predict.restype = None
    out = np.zeros(1, dtype=np.float32)
    out_ptr = out.ctypes.data

    def score(row: np.ndarray) -> float:
        out[0] = 0.0  # the generated trees add their leaves to it
        predict(row.ctypes.data, 0, out_ptr)
        return float(out[0])

    return score


def workspace(root: Path, *, candidate_traffic: float | None = None) -> Engine:
    """A workspace with v1.0 in production and, optionally, v2.0 in an A/B test; returned
    once its versions' compiled trees are built (`settle_compiled`)."""
    ws = Workspace(root / ".beast-mode")
    engine, _ = Engine.init(ws)
    engine.register(model_file(ws, "v1.0", seed=1))
    engine.deploy(version="v1.0", model=LINE)
    if candidate_traffic is not None:
        engine.register(model_file(ws, "v2.0", seed=2))
        engine.deploy(version="v2.0", model=LINE, traffic=candidate_traffic, ab_test="bench")
    settle_compiled(engine)
    return engine


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (2 cores shared with other work)"
