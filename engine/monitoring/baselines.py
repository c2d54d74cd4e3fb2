"""Baselines: what "normal" is for an artifact — its drift reference and validation figures.

A reference comes from training (a lineage sidecar `<model file>.lineage` written beside the
model, read at registration) or, failing that, from the version's first
`FIRST_PREDICTIONS` logged predictions. Baseline accuracy and MAE (what model drift is
measured against) come from the sidecar's validation figures, or from the version's first
labelled window when there is none.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.clock import utc_now
from engine.monitoring import drift

FIRST_PREDICTIONS = 500
SIDECAR_SUFFIX = ".lineage"
_RETRY_S = 5.0


@dataclass(frozen=True)
class VersionReference:
    """A version's drift reference, ready to count live rows into its bins."""

    features: drift.Reference
    score: drift.Reference

    @property
    def width(self) -> int:
        return len(self.features.names)

    def feature_counts(self, rows: np.ndarray) -> np.ndarray:
        """Per-feature bin counts, concatenated; missing values (NaN) are not counted, as
        the reference's bins were built without them."""
        columns = np.asarray(rows, dtype=np.float64).T.copy()  # one contiguous row per feature
        counts = []
        for column, edges in zip(columns, self.features.edges, strict=True):
            present = column[~np.isnan(column)] if np.isnan(column).any() else column
            counts.append(drift.bin_counts(present, edges))
        return np.concatenate(counts).astype(np.int64)

    def score_counts(self, scores: np.ndarray) -> np.ndarray:
        values = scores.astype(np.float64)
        return drift.bin_counts(values[~np.isnan(values)], self.score.edges[0]).astype(np.int64)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-feature counts out of the flat histogram `feature_counts` builds."""
        out, start = [], 0
        for edges in self.features.edges:
            out.append(flat[start : start + len(edges) + 1])
            start += len(edges) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"features": self.features.to_json(), "score": self.score.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionReference:
        return cls(
            drift.Reference.from_json(data["features"]), drift.Reference.from_json(data["score"])
        )

    @classmethod
    def build(
        cls, rows: np.ndarray, scores: np.ndarray, names: tuple[str, ...]
    ) -> VersionReference:
        return cls(
            drift.build_reference(rows, names),
            drift.build_reference(scores.reshape(-1, 1), ("score",)),
        )


def sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + SIDECAR_SUFFIX)


def write_sidecar(
    model: Path,
    reference: VersionReference,
    *,
    accuracy: float | None,
    mae: float | None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the lineage sidecar beside a model (training code calls this)."""
    doc = {
        "reference": reference.to_json(),
        "validation": {"accuracy": accuracy, "mae": mae},
        **(extra or {}),
    }
    path = sidecar_path(model)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(path)
    return path


def read_sidecar(
    model: Path, names: tuple[str, ...] | None
) -> tuple[VersionReference | None, float | None, float | None]:
    """(reference, accuracy, mae) from a sidecar, or Nones when absent or unusable."""
    try:
        doc = json.loads(sidecar_path(model).read_text(encoding="utf-8"))
        reference = VersionReference.from_json(doc["reference"])
        validation = doc.get("validation") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None, None, None
    if names is not None and reference.features.names != names:
        return None, None, None
    return reference, _fraction(validation.get("accuracy")), _nonneg(validation.get("mae"))


def _fraction(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and 0 <= value <= 1 else None


def _nonneg(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def store(
    conn: sqlite3.Connection,
    artifact_id: int,
    source: str,
    *,
    reference: VersionReference | None,
    accuracy: float | None,
    mae: float | None,
) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO baselines (artifact_id, source, reference, accuracy, mae,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            artifact_id,
            source,
            json.dumps(reference.to_json()) if reference else None,
            accuracy,
            mae,
            utc_now(),
        ),
    )


def for_version(
    conn: sqlite3.Connection, version_id: int
) -> tuple[VersionReference | None, float | None, float | None]:
    row = conn.execute(
        "SELECT b.reference, b.accuracy, b.mae FROM baselines b"
        " JOIN versions v ON v.artifact_id = b.artifact_id WHERE v.id = ?",
        (version_id,),
    ).fetchone()
    if row is None:
        return None, None, None
    ref = VersionReference.from_json(json.loads(row[0])) if row[0] else None
    return ref, row[1], row[2]


def ensure_from_first_predictions(conn: sqlite3.Connection, version_ids: set[int]) -> None:
    """Build a reference from the first predictions of versions that have none yet.

    Runs inside the prediction writer's transaction; rows that are not a whole float32 row
    of the line's width (never written by the router) are skipped, not trusted.
    """
    for version_id in version_ids:
        known = conn.execute(
            "SELECT 1 FROM baselines b JOIN versions v ON v.artifact_id = b.artifact_id"
            " WHERE v.id = ? AND b.reference IS NOT NULL",
            (version_id,),
        ).fetchone()
        if known:
            continue
        names_row = conn.execute(
            "SELECT a.id, m.feature_names, m.n_features FROM versions v"
            " JOIN artifacts a ON a.id = v.artifact_id JOIN model_lines m ON m.name = v.line"
            " WHERE v.id = ?",
            (version_id,),
        ).fetchone()
        if names_row is None:
            continue
        artifact_id, names_json, width = names_row
        if _logged_successes(conn, version_id) < FIRST_PREDICTIONS:
            continue  # not enough yet: no scan of the log
        found = _first_rows(conn, version_id, width)
        if found is None:
            continue
        x, scores = found
        names = (
            tuple(json.loads(names_json)) if names_json else tuple(f"f{i}" for i in range(width))
        )
        reference = VersionReference.build(x, scores, names)
        conn.execute(
            "INSERT INTO baselines (artifact_id, source, reference, created_at)"
            " VALUES (?, 'first_predictions', ?, ?) ON CONFLICT(artifact_id) DO UPDATE"
            " SET reference = excluded.reference WHERE reference IS NULL",
            (artifact_id, json.dumps(reference.to_json()), utc_now()),
        )


def _first_rows(
    conn: sqlite3.Connection, version_id: int, width: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The version's first `FIRST_PREDICTIONS` successful rows (features, scores), single
    predictions and batches' rows together by time; None while there are fewer.

    Both scans start where the writer recorded the version's first rows and walk the table's
    own key (single rows by id, which is by time; batches by rowid): the log keeps no index
    on the version.
    """
    start = conn.execute(
        "SELECT from_key, from_batch FROM first_predictions WHERE version_id = ?", (version_id,)
    ).fetchone()
    if start is None:
        return None
    singles = conn.execute(
        "SELECT coalesce(at_ms, hi >> 16), features, score FROM predictions WHERE hi >= ?"
        " AND version_id = ? AND error IS NULL AND length(features) = ? ORDER BY hi, lo LIMIT ?",
        (start[0], version_id, 4 * width, FIRST_PREDICTIONS),
    ).fetchall()
    at = [r[0] for r in singles]
    xs = [np.frombuffer(b"".join(r[1] for r in singles), dtype=np.float32).reshape(-1, width)]
    scores = [np.array([r[2] for r in singles], dtype=np.float64)]
    batch_rows = 0
    for at_ms, ids_blob, x_blob, s_blob in conn.execute(
        "SELECT at_ms, version_ids, features, scores FROM prediction_batches"
        " WHERE id >= ? AND width = ? ORDER BY id",
        (start[1], width),
    ):
        mine = np.frombuffer(ids_blob, dtype="<i8") == version_id
        s = np.frombuffer(s_blob, dtype="<f8")
        keep = mine & ~np.isnan(s)
        if keep.any():
            xs.append(np.frombuffer(x_blob, dtype="<f4").reshape(-1, width)[keep])
            scores.append(s[keep])
            at += [at_ms] * int(keep.sum())
            batch_rows += int(keep.sum())
        if batch_rows >= FIRST_PREDICTIONS:
            break
    if len(at) < FIRST_PREDICTIONS:
        return None
    first = np.argsort(np.array(at, dtype=np.int64), kind="stable")[:FIRST_PREDICTIONS]
    return np.concatenate(xs)[first], np.concatenate(scores)[first]


def _logged_successes(conn: sqlite3.Connection, version_id: int) -> int:
    """Successful predictions of a version, from its rollups (minutes and hours)."""
    found = conn.execute(
        "SELECT coalesce(sum(n - errors), 0) FROM rollups WHERE version_id = ?"
        " UNION ALL SELECT coalesce(sum(n - errors), 0) FROM rollups_hourly WHERE version_id = ?",
        (version_id, version_id),
    ).fetchall()
    return int(sum(row[0] for row in found))


class ReferenceCache:
    """Per-process cache of version references for the writer (misses retried every 5 s)."""

    def __init__(self) -> None:
        self._found: dict[int, VersionReference] = {}
        self._missed: dict[int, float] = {}

    def get(self, conn: sqlite3.Connection, version_id: int) -> VersionReference | None:
        if version_id in self._found:
            return self._found[version_id]
        if time.monotonic() - self._missed.get(version_id, -_RETRY_S) < _RETRY_S:
            return None
        reference, _acc, _mae = for_version(conn, version_id)
        if reference is None:
            self._missed[version_id] = time.monotonic()
            return None
        self._found[version_id] = reference
        return reference
