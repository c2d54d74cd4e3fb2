"""Retraining, the pure parts: data, time-ordered splits, the bounded search, the gate, naming.

Data (DESIGN.md §6) = the workspace's `data/` files plus the line's labelled production
predictions. A data file is CSV (`*.csv`) or Parquet (`*.parquet`, needs pyarrow) with one
column per feature of the line (by name; extra columns are ignored), `score` (the label) and
`observed_at` (UTC ISO-8601) — the schema `engine.demo.sample_data` writes. A file without the
line's columns is skipped with a log line; rows with a non-finite label or time, or an
infinite feature, are dropped (NaN features are XGBoost's "missing").

Rows are ordered by time; the newest `HOLDOUT_FRACTION` is the holdout that judges the new
model against production, the newest `VALID_FRACTION` of the rest stops boosting early, and
the oldest part trains. At most `len(SEARCH)` configurations are tried; the one with the best
validation MAE wins.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.config import DEFAULT_LABEL as LABEL
from engine.core.config import DEFAULT_TIME as TIME

HOLDOUT_FRACTION = 0.2
VALID_FRACTION = 0.2
MIN_ROWS = 50
MAX_ROUNDS = 400
SEARCH_ROWS = 16_000
EARLY_STOPPING_ROUNDS = 20
THREADS = 2
DATA_SUFFIXES = (".csv", ".parquet")

BASE_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "eval_metric": "mae",
    "tree_method": "hist",
    "max_bin": 128,  # half the default bins: faster histograms, no loss on scores 0–100
    "nthread": THREADS,
    "seed": 0,
}
# A small, bounded grid: shallow and deeper trees, fast and slow learning, one with row and
# column sampling. (Depth 8 was dropped: on 100k rows it cost a fifth of the job's time and
# never won on the sample data.)
SEARCH: tuple[dict[str, Any], ...] = (
    {"max_depth": 4, "eta": 0.3},
    {"max_depth": 6, "eta": 0.3},
    {"max_depth": 4, "eta": 0.1},
    {"max_depth": 6, "eta": 0.1},
    {"max_depth": 6, "eta": 0.1, "subsample": 0.8, "colsample_bytree": 0.8},
)


@dataclass(frozen=True)
class Source:
    """Where training rows came from: a data file or the prediction log."""

    name: str
    rows: int
    sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Training rows in time order: features (float32, the line's order), labels, times."""

    x: np.ndarray
    y: np.ndarray
    at_ms: np.ndarray
    sources: tuple[Source, ...]
    skipped: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])

    def sha256(self) -> str:
        """The hash of exactly what was trained and judged on (lineage)."""
        digest = hashlib.sha256()
        for part in (self.x, self.y, self.at_ms):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_frame(path: Path) -> Any:
    import pandas as pd  # ~0.5 s to import: only when a data file is read

    if path.suffix.lower() == ".parquet":
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise ValueError(f"reading Parquet needs pyarrow ({exc})") from None
    return pd.read_csv(path)


def read_file(path: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One data file as (x, y, at_ms); ValueError naming what is wrong with it."""
    import pandas as pd  # ~0.5 s to import: only when a data file is read

    try:
        frame = _read_frame(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"cannot read: {exc}") from None
    missing = [c for c in (*names, LABEL, TIME) if c not in frame.columns]
    if missing:
        raise ValueError(f"missing columns {', '.join(missing)}")
    try:
        x = frame[list(names)].to_numpy(dtype=np.float32)
        y = pd.to_numeric(frame[LABEL], errors="coerce").to_numpy(dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"non-numeric values: {exc}") from None
    times = pd.to_datetime(frame[TIME], utc=True, errors="coerce", format="ISO8601")
    valid_time = times.notna().to_numpy()
    at_ms = np.zeros(len(frame), dtype=np.int64)
    # pandas keeps the unit it parsed (µs under pandas 3, ns before): ask for ms explicitly.
    at_ms[valid_time] = times[valid_time].dt.as_unit("ms").astype("int64").to_numpy()
    keep = np.isfinite(y) & valid_time & ~np.isinf(x).any(axis=1)
    return x[keep], y[keep], at_ms[keep]


def data_files(data_dir: Path) -> list[Path]:
    if not data_dir.is_dir():
        return []
    return sorted(
        p
        for p in data_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in DATA_SUFFIXES
    )


def load(
    data_dir: Path,
    names: tuple[str, ...],
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Dataset:
    """Data files plus labelled predictions (x, actual, at_ms), ordered by time."""
    xs, ys, ts, sources, skipped = [], [], [], [], []
    for path in data_files(data_dir):
        try:
            x, y, at = read_file(path, names)
        except ValueError as exc:
            skipped.append(f"data/{path.name}: {exc}: skipped")
            continue
        xs.append(x)
        ys.append(y)
        ts.append(at)
        sources.append(Source(f"data/{path.name}", int(y.shape[0]), _file_sha256(path)))
    px, py, pt = predictions
    if py.shape[0]:
        xs.append(px.astype(np.float32, copy=False))
        ys.append(py.astype(np.float32, copy=False))
        ts.append(pt.astype(np.int64, copy=False))
        sources.append(Source("labelled predictions", int(py.shape[0])))
    width = len(names)
    x_all = np.concatenate(xs) if xs else np.zeros((0, width), np.float32)
    y_all = np.concatenate(ys) if ys else np.zeros(0, np.float32)
    t_all = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    order = np.argsort(t_all, kind="stable")
    return Dataset(x_all[order], y_all[order], t_all[order], tuple(sources), tuple(skipped))


@dataclass(frozen=True)
class Split:
    """Index ranges into a time-ordered dataset: oldest trains, newest judges."""

    train: slice
    valid: slice
    holdout: slice


def time_split(rows: int) -> Split:
    if rows < MIN_ROWS:
        raise ValueError(f"not enough training data: {rows} rows (needs at least {MIN_ROWS})")
    holdout_start = rows - max(1, int(rows * HOLDOUT_FRACTION))
    valid_start = holdout_start - max(1, int(holdout_start * VALID_FRACTION))
    return Split(
        slice(0, valid_start), slice(valid_start, holdout_start), slice(holdout_start, rows)
    )


@dataclass(frozen=True)
class Trial:
    params: dict[str, Any]
    rounds: int
    valid_mae: float


@dataclass(frozen=True)
class Trained:
    booster: Any
    params: dict[str, Any]
    rounds: int
    valid_mae: float
    trials: tuple[Trial, ...] = field(default=())


def search(
    data: Dataset,
    split: Split,
    names: tuple[str, ...],
    on_trial: Callable[[int, Trial], None] | None = None,
    grid: Iterable[dict[str, Any]] = SEARCH,
) -> Trained:
    """Try each configuration with early stopping on the validation rows; keep the best.

    On large data the configurations are compared on the newest `SEARCH_ROWS` training rows
    and half as many validation rows (the ranking of a handful of configurations settles long
    before 100k rows), and the winner alone is then trained on all of them, stopped early on
    the whole validation part: that keeps 100k rows within seconds.
    """
    x, y = data.x[split.train], data.y[split.train]
    vx, vy = data.x[split.valid], data.y[split.valid]
    matrix = _matrices(names)
    full = sample = matrix(x, y, None)
    valid = judge = matrix(vx, vy, full)
    if y.shape[0] > SEARCH_ROWS:
        sample = matrix(x[-SEARCH_ROWS:], y[-SEARCH_ROWS:], None)
        judge = matrix(vx[-SEARCH_ROWS // 2 :], vy[-SEARCH_ROWS // 2 :], sample)
    trials: list[Trial] = []
    best: tuple[Trial, Any] | None = None
    for i, extra in enumerate(grid):
        booster = _fit({**BASE_PARAMS, **extra}, sample, judge)
        trial = Trial(extra, int(booster.best_iteration) + 1, float(booster.best_score))
        trials.append(trial)
        if on_trial is not None:
            on_trial(i, trial)
        if best is None or trial.valid_mae < best[0].valid_mae:
            best = (trial, booster)
    assert best is not None, "the search grid is empty"
    winner, booster = best
    params = {**BASE_PARAMS, **winner.params}
    if sample is not full:
        booster = _fit(params, full, valid)
    rounds = int(booster.best_iteration) + 1
    return Trained(booster[:rounds], params, rounds, float(booster.best_score), tuple(trials))


def _matrices(names: tuple[str, ...]) -> Callable[[np.ndarray, np.ndarray, Any], Any]:
    """QuantileDMatrix builder: `hist` bins once at construction, sharing its reference's cuts
    (cheaper than DMatrix, which is sketched again by every training run)."""
    import xgboost as xgb  # ~2 s to import: the trigger checks load this module without training

    def build(x: np.ndarray, y: np.ndarray, ref: Any) -> Any:
        return xgb.QuantileDMatrix(
            x,
            label=y,
            feature_names=list(names),
            max_bin=BASE_PARAMS["max_bin"],
            ref=ref,
            nthread=THREADS,
        )

    return build


def _fit(params: dict[str, Any], train: Any, valid: Any) -> Any:
    import xgboost as xgb  # as in _matrices

    return xgb.train(
        params,
        train,
        num_boost_round=MAX_ROUNDS,
        evals=[(valid, "valid")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
    )


@dataclass(frozen=True)
class Scores:
    """A model's figures on the holdout: accuracy within ±tolerance, MAE, rows."""

    accuracy: float
    mae: float
    rows: int

    @property
    def finite(self) -> bool:
        return math.isfinite(self.accuracy) and math.isfinite(self.mae)

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "accuracy": self.accuracy if math.isfinite(self.accuracy) else None,
            "mae": self.mae if math.isfinite(self.mae) else None,
            "rows": self.rows,
        }


def score(predicted: np.ndarray, actual: np.ndarray, tolerance: float) -> Scores:
    """NaN figures when any prediction is not finite: such a model is never deployed."""
    predicted = np.asarray(predicted, dtype=np.float64)
    if not np.isfinite(predicted).all():
        return Scores(math.nan, math.nan, int(actual.shape[0]))
    errors = np.abs(predicted - actual.astype(np.float64))
    return Scores(float(np.mean(errors <= tolerance)), float(np.mean(errors)), int(errors.size))


@dataclass(frozen=True)
class Decision:
    deploy: bool
    reason: str


def decide(
    new: Scores, production: Scores | None, *, min_improvement: float, wanted: bool
) -> Decision:
    """Deploy only if wanted, finite, and at least `min_improvement` more accurate."""
    if not new.finite:
        return Decision(False, "not deployed: the new model's holdout metrics are NaN")
    if production is None:
        return Decision(False, "not deployed: nothing in production to compare with")
    if not production.finite:
        return Decision(False, "not deployed: production's holdout metrics are NaN")
    gain = new.accuracy - production.accuracy
    figures = (
        f"holdout accuracy {new.accuracy:.3f} vs production {production.accuracy:.3f} "
        f"(gain {gain:+.3f}, needs {min_improvement:g}), MAE {new.mae:.2f} vs "
        f"{production.mae:.2f}"
    )
    if gain < min_improvement - 1e-12:  # float noise must not decide a boundary
        return Decision(False, f"not deployed: not better than production: {figures}")
    if not wanted:
        return Decision(
            False, f"not deployed: no --deploy and auto_deploy = false (it qualifies: {figures})"
        )
    return Decision(True, f"deployed: beats production: {figures}")


_MAJOR = re.compile(r"^v(\d+)")


def next_version(names: Iterable[str], taken: Callable[[str], bool]) -> str:
    """The next free `vN.0` after the highest major version of the line (the seed's
    convention: v1.0, v1-enhanced, v3-advanced → v4.0); skips names whose file exists."""
    majors = [int(m.group(1)) for n in names if (m := _MAJOR.match(n))]
    major = max(majors, default=0) + 1
    existing = set(names)
    while f"v{major}.0" in existing or taken(f"v{major}.0"):
        major += 1
    return f"v{major}.0"
