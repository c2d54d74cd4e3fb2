"""Rollup records: what a flush adds to one rollup row, and a version's rows, stacked.

They cross the storage seam (engine.store.rollups) in both directions, so they live here,
below the store and the domains. numpy is imported with this module: only the prediction
log's writer and monitoring import it (never `beast status`'s path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALARS = 7  # n, errors, labelled, within, abs_err_sum, abs_err_sq_sum, drift_n


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


RollupKey = tuple[int, str, int]  # (version id, A/B test name or "", minute or hour)


@dataclass(frozen=True)
class StackedRollups:
    """A version's rollup rows as arrays, one row per minute (or compacted hour), by time.

    `scalars` holds the `SCALARS` columns; `hourly` marks compacted hours (their first
    minute in `minutes`), None when there are none.
    """

    minutes: np.ndarray
    scalars: np.ndarray
    latency: np.ndarray
    features: np.ndarray | None
    scores: np.ndarray | None
    hourly: np.ndarray | None = None


def _sum(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return b if a is None else a
    if a.size == b.size:
        total: np.ndarray = a + b
        return total
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
