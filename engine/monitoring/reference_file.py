"""Reference data for a model trained anywhere: a labelled CSV or Parquet file, scored by the
model, becomes the version's baseline (`beast register PATH --reference FILE`, `beast deploy
... --reference FILE`).

The file holds the line's features (by name; other columns are ignored) and its label column
(`[lines.NAME] label`). Its rows are scored with the model, and two things are kept: the
task's metrics over them (engine.monitoring.scoring: model drift is measured against these)
and the drift reference of its features and scores (data drift). A file that cannot serve is
refused with one line naming the problem, before anything is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.core import tasks, text
from engine.core.config import LineSettings
from engine.core.errors import BeastError
from engine.monitoring import baselines, scoring
from engine.monitoring.baselines import VersionReference
from engine.store.base import Tx

if TYPE_CHECKING:  # pandas: loaded where a file is read
    import pandas as pd

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# The drift reference needs at least two rows; fewer give no quantiles to bin by.
MIN_ROWS = 2


class ReferenceRefused(BeastError):
    """A reference file that cannot be a baseline (one line: the file and the problem)."""


@dataclass(frozen=True)
class ReferenceBaseline:
    """What a reference file gives a version: its drift reference, metrics and a label."""

    reference: VersionReference
    metrics: dict[str, float]
    detail: str  # "<file name> (<rows> rows)"
    rows: int


def build(
    path: str | Path,
    *,
    model: Path,
    sha256: str,
    features: tuple[str, ...],
    line: LineSettings,
) -> ReferenceBaseline:
    """Read the file, score it with the registered model (its bytes checked against
    `sha256`), and compute the baseline; ReferenceRefused naming the problem otherwise."""
    file = Path(path).expanduser()
    # Its name is kept (the baseline's detail) and printed: refused as any stored text is.
    text.check("reference file name", file.name, limit=text.MAX_PATH_CHARS)
    x, labels = read(file, features, line)
    scores = _score(model, sha256, x)
    metrics = scoring.metrics(
        line.task,
        scores,
        labels,
        tolerance=line.tolerance_points,
        threshold=line.decision_threshold,
    )
    reference = VersionReference.build(x, scores, features)
    rows = len(labels)
    return ReferenceBaseline(reference, metrics, f"{file.name} ({rows:,} rows)", rows)


def store(tx: Tx, artifact_id: int, built: ReferenceBaseline, *, label: str) -> None:
    """Make `built` the artifact's baseline (source "reference"), inside the caller's write
    transaction, replacing an automatic one; refused once live rows were binned by another.

    The rollups keep each minute's drift counts in the bins of the reference in force when
    the rows were logged (and a running engine keeps that reference in memory): new edges
    would mix two binnings in one drift figure.
    """
    if tx.baselines.binned(artifact_id):
        raise ReferenceRefused(
            f"{label} has served rows counted against its drift reference already; a new "
            "reference would mix two binnings in its drift figures (give --reference when "
            "registering or first deploying a version)"
        )
    baselines.store(
        tx,
        artifact_id,
        "reference",
        reference=built.reference,
        metrics=built.metrics,
        detail=built.detail,
    )


def read(
    path: Path, features: tuple[str, ...], line: LineSettings
) -> tuple[np.ndarray, np.ndarray]:
    """(features as float32 in the model's order, labels as float64) from a CSV or Parquet."""
    frame = _frame(path)
    name = path.name
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ReferenceRefused(
            f"reference {name}: missing feature column(s) {', '.join(missing)} "
            f"(the model line's features: {', '.join(features)})"
        )
    if line.label not in frame.columns:
        raise ReferenceRefused(
            f"reference {name}: no label column {line.label!r} ([lines.NAME] label in config.toml)"
        )
    if len(frame) < MIN_ROWS:
        raise ReferenceRefused(
            f"reference {name}: {len(frame)} row(s); a baseline needs at least {MIN_ROWS}"
        )
    x = np.column_stack([_numbers(name, frame[f], f) for f in features]).astype(np.float32)
    if not np.isfinite(x).all():
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise ReferenceRefused(
            f"reference {name}: column {features[col]} row {row + 1} is too large for float32"
        )
    return x, _labels(name, frame[line.label], line)


def _frame(path: Path) -> pd.DataFrame:
    import pandas as pd  # ~0.3 s: only where a reference file is read

    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ReferenceRefused(
            f"reference {path.name}: give a .csv or .parquet file "
            f"(not {path.suffix or 'a file without extension'})"
        )
    if not path.is_file():
        raise ReferenceRefused(f"reference {path}: no such file")
    # CSV without NA guessing: "", "NA" or "n/a" leave their column text, so the value that is
    # not a number is named as written; numeric columns parse in C (0.13 s for 100,000 rows of
    # six columns, against 1.05 s reading every column as text).
    try:
        frame = pd.read_csv(path, keep_default_na=False) if kind == "csv" else pd.read_parquet(path)
    except ImportError as exc:
        raise ReferenceRefused(
            f"reference {path.name}: reading Parquet needs pyarrow ({exc}); "
            "`pip install pyarrow`, or give a CSV"
        ) from None
    except pd.errors.EmptyDataError:
        raise ReferenceRefused(f"reference {path.name}: the file is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise ReferenceRefused(f"reference {path.name}: cannot read it ({first[:200]})") from None
    if frame.empty:
        raise ReferenceRefused(f"reference {path.name}: no rows (a header only)")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _numbers(name: str, column: pd.Series[Any], what: str) -> np.ndarray:
    """A column as float64; the first value that is not a finite number is named."""
    import pandas as pd

    if column.dtype == bool:
        values = column.to_numpy(dtype=np.float64)
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise ReferenceRefused(
            f"reference {name}: column {what} row {row + 1}: {_shown(column.iloc[row])} is not "
            "a number"
        )
    return values


def _labels(name: str, column: pd.Series[Any], line: LineSettings) -> np.ndarray:
    if line.binary:
        out = np.empty(len(column), dtype=np.float64)
        for row, value in enumerate(column.tolist()):
            try:
                out[row] = _binary(value)
            except ValueError:
                raise ReferenceRefused(
                    f"reference {name}: label {line.label} row {row + 1} is {_shown(value)}; "
                    "a binary line's labels are 0 or 1 (or false/true)"
                ) from None
        return out
    labels = _numbers(name, column, f"{line.label} (the label)")
    low, high = line.label_range
    outside = (labels < low) | (labels > high)
    if outside.any():
        row = int(np.argmax(outside))
        raise ReferenceRefused(
            f"reference {name}: label {line.label} row {row + 1} is {labels[row]:g}, outside "
            f"the line's label_range [{low:g}, {high:g}]"
        )
    return labels


def _binary(value: object) -> int:
    """0 or 1 as engine.core.tasks reads a label, and also as a CSV of floats writes it."""
    try:
        return tasks.binary_label(value)
    except ValueError:
        if not isinstance(value, str):
            raise
        return tasks.binary_label(float(value))  # "1.0"; ValueError for anything else


def _shown(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "an empty value"
    return repr(str(value)[:40])


def _score(model: Path, sha256: str, x: np.ndarray) -> np.ndarray:
    """The model's scores for the rows (validated in a child at registration: loaded here)."""
    from engine.serving.router import load_booster  # XGBoost: only where a file is scored

    booster = load_booster(model, sha256)
    scores = np.asarray(booster.inplace_predict(x, validate_features=False), dtype=np.float64)
    return scores.ravel()
