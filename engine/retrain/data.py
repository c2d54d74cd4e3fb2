"""Retraining's data: the workspace's `data/` files and the line's labelled predictions.

A data file is CSV (`*.csv`) or Parquet (`*.parquet`, needs pyarrow) with one column per
feature of the line (by name), the line's label column and its time column (`[lines.NAME]
label` and `time`, engine.core.config: `score` and `observed_at` for a line that declares
nothing — the schema `engine.demo.sample_data` writes); other columns are ignored. A file
without one of those columns, or whose rows are all unusable, is skipped with the reason.
A row is unusable when its label is not a number (on a binary line: not 0/1 or false/true,
engine.core.tasks.binary_label) or lies outside the line's `label_range` (feedback there is
refused too), when its time is not an ISO-8601 time, or when a feature is infinite (NaN
features are XGBoost's "missing"); such rows are dropped and counted by reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.core import tasks
from engine.core.config import LineSettings
from engine.core.errors import BeastError
from engine.store.base import Tx

DATA_SUFFIXES = (".csv", ".parquet")
PREDICTIONS = "labelled predictions"


@dataclass(frozen=True)
class Columns:
    """What retraining reads of a line's data: its features in model order, the label and
    time columns, and how a label is read (its task and range)."""

    features: tuple[str, ...]
    label: str
    time: str
    task: str
    label_range: tuple[float, float]

    @classmethod
    def of(cls, features: tuple[str, ...], line: LineSettings) -> Columns:
        return cls(features, line.label, line.time, line.task, line.label_range)

    @classmethod
    def read(cls, tx: Tx, line: str, settings: LineSettings) -> Columns:
        """The line's columns: its features by name (from its models), label and time."""
        names = tx.retrain_inputs.feature_names(line)
        if names is None:
            raise BeastError(
                f"model line {line} has no feature names: training data is matched by name"
            )
        return cls.of(names, settings)

    @property
    def required(self) -> tuple[str, ...]:
        return (*self.features, self.label, self.time)


@dataclass(frozen=True)
class Source:
    """Where training rows came from: a data file or the prediction log; the rows it gave,
    the rows it left out (reason → count), and for a file its columns and hash."""

    name: str
    rows: int
    sha256: str | None = None
    columns: tuple[str, ...] = ()
    dropped: tuple[tuple[str, int], ...] = ()
    skipped: str | None = None  # why nothing of it was used

    def note(self) -> str:
        """One line for the job log and `beast retrain --check`."""
        if self.skipped is not None:
            return f"{self.name}: skipped: {self.skipped}"
        left = "; ".join(f"{n} dropped: {why}" for why, n in self.dropped)
        return f"{self.name}: {self.rows} rows" + (f" ({left})" if left else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "sha256": self.sha256,
            "columns": list(self.columns),
            "dropped": {why: n for why, n in self.dropped},
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class Dataset:
    """Training rows in time order: features (float32, the line's order), labels, times."""

    x: np.ndarray
    y: np.ndarray
    at_ms: np.ndarray
    sources: tuple[Source, ...]

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])

    @property
    def skipped(self) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.skipped is not None)

    @property
    def used(self) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.skipped is None)

    def sha256(self) -> str:
        """The hash of exactly what was trained and judged on (lineage)."""
        digest = hashlib.sha256()
        for part in (self.x, self.y, self.at_ms):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()

    def input_hash(self, columns: Columns, settings: dict[str, Any]) -> str:
        """The rows' hash with the feature names, the task and the training `settings`: two
        jobs with the same input hash would train the same model."""
        digest = hashlib.sha256(self.sha256().encode())
        extra = {"features": columns.features, "task": columns.task, "settings": settings}
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
        return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """A file's sha256, read in chunks (lineage names each data file by it)."""
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


def labels(values: Any, columns: Columns) -> tuple[np.ndarray, str]:
    """Labels as float32, NaN where unusable; and the reason an unusable one is dropped."""
    import pandas as pd  # as in _read_frame

    series = pd.Series(values)
    if columns.task == tasks.BINARY:
        if series.dtype.kind in "biuf":
            numbers = series.to_numpy(dtype=np.float64)
            y = np.where(np.isin(numbers, (0.0, 1.0)), numbers, np.nan)
        else:
            y = np.array([_binary(v) for v in series.tolist()], dtype=np.float64)
        return y.astype(np.float32), "label not 0/1 (or false/true)"
    y = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    low, high = columns.label_range
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(y) & ((y < low) | (y > high))
    reason = f"label not a number in label_range [{low:g}, {high:g}]"
    return np.where(outside, np.nan, y).astype(np.float32), reason


def _binary(value: object) -> float:
    try:
        return float(tasks.binary_label(value))
    except ValueError:
        return float("nan")


def read_file(path: Path, columns: Columns) -> tuple[tuple[np.ndarray, ...] | None, Source]:
    """One data file: its usable rows as (x, y, at_ms), or None when it is skipped; and what
    it contributed (its columns named either way)."""
    import pandas as pd  # as in _read_frame

    name = f"data/{path.name}"
    try:
        frame = _read_frame(path)
    except (
        OSError,
        UnicodeDecodeError,
        ValueError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as exc:
        return None, Source(name, 0, skipped=f"cannot read: {exc}")
    found = tuple(str(c) for c in frame.columns)
    source = Source(name, 0, file_sha256(path), found)
    missing = [c for c in columns.required if c not in frame.columns]
    if missing:
        reason = f"missing columns {', '.join(missing)} (it has {', '.join(found) or 'none'})"
        return None, skip(source, reason)
    try:
        x = frame[list(columns.features)].to_numpy(dtype=np.float32)
    except (ValueError, TypeError) as exc:
        return None, skip(source, f"non-numeric feature values: {exc}")
    y, label_reason = labels(frame[columns.label], columns)
    times = pd.to_datetime(frame[columns.time], utc=True, errors="coerce", format="ISO8601")
    valid_time = times.notna().to_numpy()
    at_ms = np.zeros(len(frame), dtype=np.int64)
    # pandas keeps the unit it parsed (µs under pandas 3, ns before): ask for ms explicitly.
    at_ms[valid_time] = times[valid_time].dt.as_unit("ms").astype("int64").to_numpy()
    checks = (
        (np.isfinite(y), f"{columns.label}: {label_reason}"),
        (valid_time, f"{columns.time}: not an ISO-8601 time"),
        (~np.isinf(x).any(axis=1), "an infinite feature"),
    )
    keep = np.ones(len(frame), dtype=bool)
    dropped = []
    for ok, why in checks:
        lost = int(np.sum(keep & ~ok))
        if lost:
            dropped.append((why, lost))
        keep &= ok
    rows = int(keep.sum())
    source = Source(name, rows, source.sha256, found, tuple(dropped))
    if rows == 0:
        left = "; ".join(f"{why} in {n}" for why, n in dropped)
        return None, skip(source, f"no usable rows ({left or 'the file is empty'})")
    return (x[keep], y[keep], at_ms[keep]), source


def skip(source: Source, reason: str) -> Source:
    """`source` as skipped for `reason`, nothing of it used."""
    return Source(source.name, 0, source.sha256, source.columns, source.dropped, reason)


def data_files(data_dir: Path) -> list[Path]:
    """The data files of `data/` in name order (dot files excepted)."""
    if not data_dir.is_dir():
        return []
    return sorted(
        p
        for p in data_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in DATA_SUFFIXES
    )


def inspect(data_dir: Path, columns: Columns) -> list[Source]:
    """What each data file would contribute to a job now (`beast retrain --check`)."""
    return [read_file(path, columns)[1] for path in data_files(data_dir)]


def load(
    data_dir: Path,
    columns: Columns,
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Dataset:
    """Data files plus labelled predictions (x, actual, at_ms), ordered by time. A labelled
    prediction whose actual is no label of the line (a binary line's older feedback) is
    dropped like a file's row."""
    xs, ys, ts, sources = [], [], [], []
    for path in data_files(data_dir):
        rows, source = read_file(path, columns)
        sources.append(source)
        if rows is not None:
            xs.append(rows[0])
            ys.append(rows[1])
            ts.append(rows[2])
    px, py, pt = predictions
    if py.shape[0]:
        y, reason = labels(py, columns)
        ok = np.isfinite(y)
        xs.append(px[ok].astype(np.float32, copy=False))
        ys.append(y[ok])
        ts.append(pt[ok].astype(np.int64, copy=False))
        lost = int(py.shape[0] - ok.sum())
        sources.append(Source(PREDICTIONS, int(ok.sum()), dropped=_counted(reason, lost)))
    width = len(columns.features)
    x_all = np.concatenate(xs) if xs else np.zeros((0, width), np.float32)
    y_all = np.concatenate(ys) if ys else np.zeros(0, np.float32)
    t_all = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    order = np.argsort(t_all, kind="stable")
    return Dataset(x_all[order], y_all[order], t_all[order], tuple(sources))


def _counted(reason: str, count: int) -> tuple[tuple[str, int], ...]:
    return ((f"actual: {reason}", count),) if count else ()


def summary(sources: Iterable[Source]) -> str:
    """`data/a.csv: 300, labelled predictions: 60` (used sources only), or `none`."""
    return ", ".join(f"{s.name}: {s.rows}" for s in sources if s.skipped is None) or "none"
