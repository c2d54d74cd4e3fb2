"""Metrics per version and window, read from the rollups (never a scan of the log).

The writer keeps one rollup row per version, test and minute. Minutes older than
`KEEP_MINUTES` are compacted into one row per hour (`compact`, run by the writer about once a
minute), so a day is read as ~24 hours and the last two hours of minutes rather than 1,440
rows. A minute lives in exactly one table, so sums over both are the raw log's sums.

Windows: "1h" is the last 60 minutes (minute rows, always kept); longer windows start on a
whole hour ("24h" covers the current hour and the 24 before it), so they never split a
compacted hour; "deploy" starts at the deployment's minute, and if that minute lies in an
hour compacted since, that whole hour counts (it holds other predictions of this version only
if the version also served earlier in the same hour, more than two hours ago).

One query per table fetches a version's rows for the widest window asked; the histograms are
stacked into arrays once and every window is a mask over them, so a monitor refresh stays in
milliseconds whatever the size of the prediction log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.core.rollups import Delta, RollupKey
from engine.serving import latency
from engine.store.base import Tx

WINDOWS: dict[str, int | None] = {"1h": 60, "24h": 1440, "deploy": None}
KEEP_MINUTES = 120  # minute rows younger than this are never compacted (1h window, series)


def window_start(span: int | None, now_minute: int) -> int | None:
    """The first minute of a window of `span` minutes ending now (None: no start).

    Spans of an hour or less are minute-exact; longer ones start on a whole hour.
    """
    if span is None:
        return None
    start = now_minute - span + 1
    return start if span <= 60 else start // 60 * 60


@dataclass(frozen=True)
class WindowMetrics:
    """What a version did over a window. Ratios are None when there is nothing to divide."""

    predictions: int
    errors: int
    labelled: int
    within: int
    abs_err_sum: float
    abs_err_sq_sum: float
    latency_hist: np.ndarray = field(repr=False)
    drift_n: int = 0
    feature_hist: np.ndarray | None = field(default=None, repr=False)
    score_hist: np.ndarray | None = field(default=None, repr=False)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.predictions if self.predictions else None

    @property
    def accuracy(self) -> float | None:
        return self.within / self.labelled if self.labelled else None

    @property
    def mae(self) -> float | None:
        return self.abs_err_sum / self.labelled if self.labelled else None

    @property
    def labelled_fraction(self) -> float | None:
        return self.labelled / self.predictions if self.predictions else None

    def latency_ms(self) -> dict[str, float | None]:
        return {f"p{q}": latency.percentile(self.latency_hist, q) for q in (50, 95, 99)}

    def to_json(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions,
            "errors": self.errors,
            "error_rate": _round(self.error_rate),
            "labelled": self.labelled,
            "labelled_fraction": _round(self.labelled_fraction),
            "accuracy": _round(self.accuracy),
            "mae": _round(self.mae),
            "latency_ms": {k: _round(v) for k, v in self.latency_ms().items()},
        }


@dataclass(frozen=True)
class MinutePoint:
    minute: int
    predictions: int
    accuracy: float | None
    mae: float | None
    p95_ms: float | None
    error_rate: float | None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


@dataclass(frozen=True)
class VersionRollups:
    """A version's minutes, stacked: one row per minute, one column per bucket."""

    minutes: np.ndarray
    scalars: np.ndarray  # n, errors, labelled, within, abs_err_sum, abs_err_sq_sum, drift_n
    latency: np.ndarray
    features: np.ndarray | None
    scores: np.ndarray | None
    hourly: np.ndarray | None = None  # True for a compacted hour (its first minute in minutes)

    def window(self, since_minute: int | None) -> WindowMetrics:
        mask = np.ones(self.minutes.size, bool)
        if since_minute is not None:
            mask = self.minutes >= since_minute
            if self.hourly is not None:  # an hour counts if it ends after the start
                mask |= self.hourly & (self.minutes + 60 > since_minute)
        s = self.scalars[mask].sum(axis=0) if mask.any() else np.zeros(7)
        feats = (
            self.features[mask].sum(axis=0) if self.features is not None and mask.any() else None
        )
        scores = self.scores[mask].sum(axis=0) if self.scores is not None and mask.any() else None
        hist = self.latency[mask].sum(axis=0) if mask.any() else np.zeros(latency.BUCKETS, np.int64)
        return WindowMetrics(
            int(s[0]),
            int(s[1]),
            int(s[2]),
            int(s[3]),
            float(s[4]),
            float(s[5]),
            hist,
            int(s[6]),
            feats,
            scores,
        )

    def series(self, since_minute: int) -> list[MinutePoint]:
        """One point per logged minute from `since_minute` (minutes younger than
        `KEEP_MINUTES` are never compacted, so the last hour is always whole). A minute
        with rows of several tests (a test started or ended in it) is one point."""
        chosen = self.minutes >= since_minute
        if self.hourly is not None:
            chosen &= ~self.hourly
        idx = np.nonzero(chosen)[0]
        minutes, group = np.unique(self.minutes[idx], return_inverse=True)
        scalars = np.zeros((minutes.size, self.scalars.shape[1]))
        np.add.at(scalars, group, self.scalars[idx])
        lat = np.zeros((minutes.size, self.latency.shape[1]), np.int64)
        np.add.at(lat, group, self.latency[idx])
        out = []
        for i, minute in enumerate(minutes.tolist()):
            n, errors, labelled, within, abs_sum = scalars[i, :5]
            out.append(
                MinutePoint(
                    minute,
                    int(n),
                    within / labelled if labelled else None,
                    abs_sum / labelled if labelled else None,
                    latency.percentile(lat[i], 95),
                    errors / n if n else None,
                )
            )
        return out


def load(
    tx: Tx,
    version_id: int,
    *,
    since_minute: int | None = None,
    experiment: str | None = None,
) -> VersionRollups:
    """A version's rollup minutes and compacted hours (optionally only one A/B test's)."""
    found = tx.rollups.stacked(version_id, since_minute=since_minute, experiment=experiment)
    lat = found.latency
    if lat.shape[1] != latency.BUCKETS:
        lat = np.zeros((found.minutes.size, latency.BUCKETS), np.int64)
    return VersionRollups(
        found.minutes, found.scalars, lat, found.features, found.scores, found.hourly
    )


def add_minutes(tx: Tx, deltas: Mapping[RollupKey, Delta]) -> None:
    """Add each delta to its (version id, A/B test, minute) rollup row, all in one go (the
    writer's flush: one call per flush, never one per row)."""
    tx.rollups.add_minutes(deltas)


def compaction_cutoff(now_minute: int) -> int:
    """Minutes before this one are compacted: whole hours older than `KEEP_MINUTES`."""
    return (now_minute - KEEP_MINUTES) // 60 * 60


def compactable(tx: Tx, now_minute: int) -> bool:
    """Whether `compact` has anything to do (a read: no write lock taken for nothing)."""
    return tx.rollups.has_minutes_before(compaction_cutoff(now_minute))


def compact(tx: Tx, now_minute: int) -> int:
    """Fold minute rows of whole hours older than `KEEP_MINUTES` into hour rows.

    Runs inside the caller's write transaction (the writer's); returns the minute rows
    folded. Late minutes of an hour compacted before are added to its row the same way.
    """
    return tx.rollups.compact_before(compaction_cutoff(now_minute))
