"""Baselines: what "normal" is for an artifact — its drift reference and validation figures.

A baseline comes from, in order of preference: a labelled reference file given at
registration or deployment (`beast register PATH --reference FILE`, source "reference"),
training (a lineage sidecar `<model file>.lineage` written beside the model, read at
registration, source "training"), or, failing both, the version's first `FIRST_PREDICTIONS`
logged predictions (source "first_predictions": a drift reference only). The metrics model
drift is measured against (the task's, engine.core.tasks.METRICS keys) come with the first two.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.clock import utc_now
from engine.core.records import Baseline
from engine.core.rollups import Delta
from engine.monitoring import drift
from engine.store.base import Tx

FIRST_PREDICTIONS = 500
SIDECAR_SUFFIX = ".lineage"


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


@dataclass(frozen=True)
class VersionBaseline:
    """A version's baseline: its drift reference, its metrics by key, and where they came from
    ("reference", "training" or "first_predictions"; `detail` names a reference file)."""

    reference: VersionReference | None
    metrics: Mapping[str, float]
    source: str
    detail: str | None = None


def write_sidecar(
    model: Path,
    reference: VersionReference,
    *,
    metrics: Mapping[str, float | None],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the lineage sidecar beside a model (training code calls this). `metrics`: the
    holdout's figures by engine.core.tasks.METRICS key (None where unknown)."""
    doc = {
        "reference": reference.to_json(),
        "validation": {k: v for k, v in metrics.items() if v is not None},
        **(extra or {}),
    }
    path = sidecar_path(model)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(path)
    return path


def read_sidecar(
    model: Path, names: tuple[str, ...] | None
) -> tuple[VersionReference | None, dict[str, float]]:
    """(reference, metrics) from a sidecar; (None, {}) when absent or unusable. Metrics that
    are not finite non-negative numbers (fractions, for accuracy-like keys) are dropped."""
    try:
        doc = json.loads(sidecar_path(model).read_text(encoding="utf-8"))
        reference = VersionReference.from_json(doc["reference"])
        validation = doc.get("validation") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None, {}
    if names is not None and reference.features.names != names:
        return None, {}
    if not isinstance(validation, dict):
        return reference, {}
    return reference, {
        key: float(value) for key, value in validation.items() if _plausible(key, value)
    }


# Keys whose values are fractions; every other metric is a non-negative number.
_FRACTIONS = frozenset({"accuracy", "auc", "precision", "recall", "brier"})


def _plausible(key: object, value: object) -> bool:
    if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not math.isfinite(value) or value < 0:
        return False
    return value <= 1 or key not in _FRACTIONS


def store(
    tx: Tx,
    artifact_id: int,
    source: str,
    *,
    reference: VersionReference | None,
    metrics: Mapping[str, float],
    detail: str | None = None,
) -> None:
    """Keep an artifact's baseline (inside the caller's write transaction).

    A "reference" (a labelled file the user gave) replaces whatever baseline the artifact
    had; any other source is kept only by an artifact that has none yet (the first stays)."""
    others = tuple(sorted((k, v) for k, v in metrics.items() if k not in ("accuracy", "mae")))
    baseline = Baseline(
        reference.to_json() if reference else None,
        metrics.get("accuracy"),
        metrics.get("mae"),
        others,
        source,
        detail,
    )
    keep = tx.baselines.replace if source == "reference" else tx.baselines.add
    keep(artifact_id, baseline, utc_now())


def for_version(tx: Tx, version_id: int) -> VersionBaseline | None:
    """The baseline of the version's artifact, or None when it has none yet."""
    found = tx.baselines.for_version(version_id)
    if found is None:
        return None
    ref = VersionReference.from_json(found.reference) if found.reference else None
    return VersionBaseline(ref, found.figures(), found.source, found.detail)


def ensure_from_first_predictions(tx: Tx, version_ids: set[int]) -> dict[int, VersionReference]:
    """Build a reference from the first predictions of versions that have none yet, and
    bin every row the version logged so far into its minutes' rollups; return the
    references built, by version id.

    A row counts in drift whether it came alone or in a batch, and whenever the reference
    was built: the rows before it (its own first rows among them) are binned now, the rows
    after it as they are written. Binning only the rows after the build made drift depend
    on flush boundaries: 1,600 rows sent as batches within a few seconds were never binned.
    Runs inside the prediction writer's transaction; rows that are not a whole float32 row
    of the line's width (never written by the router) are skipped, not trusted.
    """
    built: dict[int, VersionReference] = {}
    for version_id in version_ids:
        if tx.baselines.has_reference(version_id):
            continue
        source = tx.baselines.first_prediction_source(version_id)
        if source is None:
            continue
        if tx.rollups.successes(version_id) < FIRST_PREDICTIONS:
            continue  # not enough yet: no scan of the log
        found = tx.baselines.first_rows(version_id, source.width, FIRST_PREDICTIONS)
        if found is None:
            continue
        x, scores = found
        names = source.feature_names
        if names is None:
            names = tuple(f"f{i}" for i in range(source.width))
        reference = VersionReference.build(x, scores, names)
        tx.baselines.set_reference(source.artifact_id, reference.to_json(), utc_now())
        tx.rollups.add_minutes(
            {
                (version_id, experiment, minute): Delta(
                    drift_n=int(rows.shape[0]),
                    feature_hist=reference.feature_counts(rows),
                    score_hist=reference.score_counts(row_scores),
                )
                for (experiment, minute), (rows, row_scores) in tx.baselines.rows_by_minute(
                    version_id, source.width
                ).items()
            }
        )
        built[version_id] = reference
    return built


class ReferenceCache:
    """Per-process cache of version references for the writer. A version without one is
    looked up again at every flush (an indexed read, no parse): a reference built by any
    process — this one's included, once its flush has committed — bins the next rows."""

    def __init__(self) -> None:
        self._found: dict[int, VersionReference] = {}

    def get(self, tx: Tx, version_id: int) -> VersionReference | None:
        found = self._found.get(version_id)
        if found is not None or not tx.baselines.has_reference(version_id):
            return found
        baseline = for_version(tx, version_id)
        reference = baseline.reference if baseline is not None else None
        if reference is not None:
            self._found[version_id] = reference
        return reference
