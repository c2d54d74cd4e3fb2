"""Metrics per version and window, read from the per-minute rollups (never a scan of the log).

One query fetches a version's minutes for the widest window asked; the histograms are stacked
into arrays once and every window is a mask over them, so a monitor refresh stays in
milliseconds whatever the size of the prediction log.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import latency

WINDOWS: dict[str, int | None] = {"1h": 60, "24h": 1440, "deploy": None}


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

    def window(self, since_minute: int | None) -> WindowMetrics:
        mask = (
            np.ones(self.minutes.size, bool)
            if since_minute is None
            else self.minutes >= since_minute
        )
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
        out = []
        for i in np.nonzero(self.minutes >= since_minute)[0]:
            n, errors, labelled, within, abs_sum = self.scalars[i, :5]
            out.append(
                MinutePoint(
                    int(self.minutes[i]),
                    int(n),
                    within / labelled if labelled else None,
                    abs_sum / labelled if labelled else None,
                    latency.percentile(self.latency[i], 95),
                    errors / n if n else None,
                )
            )
        return out


def load(
    conn: sqlite3.Connection,
    version_id: int,
    *,
    since_minute: int | None = None,
    experiment: str | None = None,
) -> VersionRollups:
    """A version's rollup minutes (optionally only those of one A/B test)."""
    sql = (
        "SELECT minute, n, errors, labelled, within, abs_err_sum, abs_err_sq_sum, drift_n,"
        " latency_hist, feature_hist, score_hist FROM rollups WHERE version_id = ?"
    )
    params: list[Any] = [version_id]
    if since_minute is not None:
        sql += " AND minute >= ?"
        params.append(since_minute)
    if experiment is not None:
        sql += " AND experiment = ?"
        params.append(experiment)
    rows = conn.execute(sql + " ORDER BY minute", params).fetchall()
    if not rows:
        empty = np.zeros((0, 7))
        return VersionRollups(
            np.zeros(0, np.int64), empty, np.zeros((0, latency.BUCKETS), np.int64), None, None
        )
    minutes = np.array([r[0] for r in rows], dtype=np.int64)
    scalars = np.array([r[1:8] for r in rows], dtype=np.float64)
    lat = np.frombuffer(b"".join(r[8] for r in rows), dtype="<i8").reshape(len(rows), -1)
    return VersionRollups(
        minutes, scalars, lat, _stack([r[9] for r in rows]), _stack([r[10] for r in rows])
    )


def _stack(blobs: list[bytes | None]) -> np.ndarray | None:
    """Stack the minutes that have a histogram; the others count as zeros."""
    width = next((len(b) for b in blobs if b), 0)
    if width == 0:
        return None
    zero = bytes(width)
    joined = b"".join(b if b and len(b) == width else zero for b in blobs)
    return np.frombuffer(joined, dtype="<i8").reshape(len(blobs), -1)
