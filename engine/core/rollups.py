"""Rollup records: what a flush adds to one rollup row, what one label adds, and a version's
rows, stacked.

They cross the storage seam (engine.store.rollups) in both directions, so they live here,
below the store and the domains. numpy is imported where a histogram is summed, not with this
module: a label's record and its class bin are built by `beast feedback` too, which has no
other use for numpy.

Class histograms (binary lines' AUC): each labelled score is counted by its label's class under
its own value — the key is the score's float32 bit pattern, which orders as the score does for
scores in [0, 1] (and what a model serves is a float32), offset by `CLASS_BINS` for class 1.
AUC over merged histograms counts a positive above a negative 1 and an equal score ½, as
scikit-learn's `roc_auc_score` does, so the rollups' AUC is the exact one at any sample size
(tests/test_binary_rollups.py). Bins of fixed width could not promise that: with 1,024 logit
bins 43 scores were 0.003 off (two near pairs of 460 shared a bin), with 16,384 bins 15 were
0.009 off. Stored sparse, (key, count) pairs: a labelled minute holds a few keys, an hour at
most one per label. The keys are part of the stored format: changing them needs a migration.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# n, errors, labelled, within, abs_err_sum, abs_err_sq_sum, drift_n,
# log_loss_sum, pred_pos, actual_pos, true_pos
SCALARS = 11
CLASS_BINS = 1 << 30  # class 1's offset: above every key of class 0 (float32 1.0 is 0x3F800000)
_PAIR = struct.Struct("<qq")
_FLOAT32 = struct.Struct("<f")
_INT32 = struct.Struct("<i")


def class_bin(score: float) -> int:
    """The key of a score in a class histogram: the float32 bit pattern of the score clipped
    to [0, 1] (this module's docstring), which orders as the score does."""
    clipped = min(score, 1.0) if score > 0.0 else 0.0  # -0.0 and NaN count as 0
    key: int = _INT32.unpack(_FLOAT32.pack(clipped))[0]
    return key


def class_key(score: float, positive: bool) -> int:
    """A labelled score's key in a class histogram: its bin, offset by `CLASS_BINS` for
    class 1."""
    return class_bin(score) + (CLASS_BINS if positive else 0)


def encode_classes(counts: dict[int, int]) -> bytes | None:
    """A sparse class histogram as its blob: (key, count) pairs of little-endian int64, by key."""
    kept = sorted((k, c) for k, c in counts.items() if c)
    return b"".join(_PAIR.pack(k, c) for k, c in kept) or None


def decode_classes(blob: bytes | None) -> dict[int, int]:
    """The (key → count) pairs of a class histogram blob (empty for None)."""
    return dict(_PAIR.iter_unpack(blob)) if blob else {}


def merge_classes(blobs: Iterable[bytes | None]) -> bytes | None:
    """Class histogram blobs added key by key."""
    total: dict[int, int] = {}
    for blob in blobs:
        for key, count in decode_classes(blob).items():
            total[key] = total.get(key, 0) + count
    return encode_classes(total)


@dataclass(frozen=True)
class LabelDelta:
    """What one labelled prediction adds to its rollup row.

    Every label: `within` (regression: |error| ≤ tolerance; binary: the prediction at the
    decision threshold equals the label), |score − label| and its square (binary: the square
    sums to the Brier score). Binary labels also: the log loss term, whether the score
    predicted class 1, whether the label is 1, and the score's class histogram key.
    """

    within: bool
    error: float
    log_loss: float = 0.0
    pred_pos: bool = False
    actual_pos: bool = False
    class_key: int | None = None

    @property
    def true_pos(self) -> bool:
        return self.pred_pos and self.actual_pos


@dataclass
class Delta:
    """What to add to one rollup row (a minute's or an hour's)."""

    n: int = 0
    errors: int = 0
    score_sum: float = 0.0
    latency_hist: np.ndarray | None = None
    drift_n: int = 0
    feature_hist: np.ndarray | None = None
    score_hist: np.ndarray | None = None
    labelled: int = 0
    within: int = 0
    abs_err_sum: float = 0.0
    abs_err_sq_sum: float = 0.0
    log_loss_sum: float = 0.0
    pred_pos: int = 0
    actual_pos: int = 0
    true_pos: int = 0
    class_hist: bytes | None = None  # sparse (`encode_classes`)

    def add(self, other: Delta) -> None:
        """Add `other` to this one (histograms bucket by bucket)."""
        self.n += other.n
        self.errors += other.errors
        self.score_sum += other.score_sum
        self.latency_hist = _sum(self.latency_hist, other.latency_hist)
        self.feature_hist, self.drift_n = merge_hist(
            self.feature_hist, self.drift_n, other.feature_hist, other.drift_n
        )
        self.score_hist, _ = merge_hist(self.score_hist, 0, other.score_hist, 0)
        self.labelled += other.labelled
        self.within += other.within
        self.abs_err_sum += other.abs_err_sum
        self.abs_err_sq_sum += other.abs_err_sq_sum
        self.log_loss_sum += other.log_loss_sum
        self.pred_pos += other.pred_pos
        self.actual_pos += other.actual_pos
        self.true_pos += other.true_pos
        if other.class_hist:
            self.class_hist = merge_classes((self.class_hist, other.class_hist))


RollupKey = tuple[int, str, int]  # (version id, A/B test name or "", minute or hour)


@dataclass(frozen=True)
class StackedRollups:
    """A version's rollup rows as arrays, one row per minute (or compacted hour), by time.

    `scalars` holds the `SCALARS` columns; `hourly` marks compacted hours (their first
    minute in `minutes`), None when there are none. `classes` holds the rows' class
    histograms sparse, as (row, key, count) columns (None when no row has one).
    """

    minutes: np.ndarray
    scalars: np.ndarray
    latency: np.ndarray
    features: np.ndarray | None
    scores: np.ndarray | None
    hourly: np.ndarray | None = None
    classes: np.ndarray | None = None


def _sum(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return b if a is None else a
    if a.size == b.size:
        total: np.ndarray = a + b
        return total
    import numpy as np  # a flush's histograms: numpy is loaded wherever they exist

    out = np.zeros(max(a.size, b.size), np.int64)  # a histogram of another bucket count
    out[: a.size] += a
    out[: b.size] += b
    return out


def merge_hist(
    old: np.ndarray | None, old_n: int, new: np.ndarray | None, new_n: int
) -> tuple[np.ndarray | None, int]:
    """Drift histograms add up when they share bins; a new binning (a new reference)
    replaces the old one rather than mixing bins of different edges."""
    if new is None:
        return old, old_n
    if old is None or old.size != new.size:
        return new, new_n
    return old + new, old_n + new_n
