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
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.serving import latency

WINDOWS: dict[str, int | None] = {"1h": 60, "24h": 1440, "deploy": None}
KEEP_MINUTES = 120  # minute rows younger than this are never compacted (1h window, series)
_SCALARS = "n, errors, labelled, within, abs_err_sum, abs_err_sq_sum, drift_n"
_BLOBS = "latency_hist, feature_hist, score_hist"


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
    conn: sqlite3.Connection,
    version_id: int,
    *,
    since_minute: int | None = None,
    experiment: str | None = None,
) -> VersionRollups:
    """A version's rollup minutes and compacted hours (optionally only one A/B test's)."""
    minute_sql = f"SELECT minute, 0, {_SCALARS}, {_BLOBS} FROM rollups WHERE version_id = ?"
    hour_sql = f"SELECT hour * 60, 1, {_SCALARS}, {_BLOBS} FROM rollups_hourly WHERE version_id = ?"
    minute_params: list[Any] = [version_id]
    hour_params: list[Any] = [version_id]
    if since_minute is not None:
        minute_sql += " AND minute >= ?"
        minute_params.append(since_minute)
        hour_sql += " AND hour >= ?"  # the hour that holds since_minute, and later ones
        hour_params.append(since_minute // 60)
    if experiment is not None:
        minute_sql += " AND experiment = ?"
        minute_params.append(experiment)
        hour_sql += " AND experiment = ?"
        hour_params.append(experiment)
    rows = conn.execute(hour_sql, hour_params).fetchall()
    rows += conn.execute(minute_sql, minute_params).fetchall()
    if not rows:
        empty = np.zeros((0, 7))
        return VersionRollups(
            np.zeros(0, np.int64), empty, np.zeros((0, latency.BUCKETS), np.int64), None, None
        )
    rows.sort(key=lambda r: r[0])
    minutes = np.array([r[0] for r in rows], dtype=np.int64)
    hourly = np.array([r[1] for r in rows], dtype=bool)
    scalars = np.array([r[2:9] for r in rows], dtype=np.float64)
    lat = _stack([r[9] for r in rows])
    if lat is None or lat.shape[1] != latency.BUCKETS:
        lat = np.zeros((len(rows), latency.BUCKETS), np.int64)
    return VersionRollups(
        minutes,
        scalars,
        lat,
        _stack([r[10] for r in rows]),
        _stack([r[11] for r in rows]),
        hourly if hourly.any() else None,
    )


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


_ROLLUP_COLUMNS = (
    "n, errors, score_sum, latency_hist, drift_n, feature_hist, score_hist, labelled, within,"
    " abs_err_sum, abs_err_sq_sum"
)
_TABLES = {"minute": "rollups", "hour": "rollups_hourly"}


def add_to_row(
    conn: sqlite3.Connection, unit: str, key: tuple[int, str, int], delta: Delta
) -> None:
    """Add `delta` to the rollup row of (version_id, experiment, minute or hour)."""
    table = _TABLES[unit]
    old = conn.execute(
        f"SELECT {_ROLLUP_COLUMNS} FROM {table}"
        f" WHERE version_id = ? AND experiment = ? AND {unit} = ?",
        key,
    ).fetchone()
    total = delta
    if old is not None:
        total = Delta(
            old[0],
            old[1],
            old[2],
            _array(old[3]),
            old[4],
            _array(old[5]) if old[5] else None,
            _array(old[6]) if old[6] else None,
            old[7],
            old[8],
            old[9],
            old[10],
        )
        total.add(delta)
    lat = total.latency_hist
    conn.execute(
        f"INSERT OR REPLACE INTO {table} (version_id, experiment, {unit}, {_ROLLUP_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *key,
            total.n,
            total.errors,
            total.score_sum,
            _blob(lat if lat is not None else np.zeros(latency.BUCKETS, np.int64)),
            total.drift_n,
            _blob(total.feature_hist),
            _blob(total.score_hist),
            total.labelled,
            total.within,
            total.abs_err_sum,
            total.abs_err_sq_sum,
        ),
    )


def compaction_cutoff(now_minute: int) -> int:
    """Minutes before this one are compacted: whole hours older than `KEEP_MINUTES`."""
    return (now_minute - KEEP_MINUTES) // 60 * 60


def compactable(conn: sqlite3.Connection, now_minute: int) -> bool:
    """Whether `compact` has anything to do (a read: no write lock taken for nothing)."""
    found = conn.execute(
        "SELECT 1 FROM rollups WHERE minute < ? LIMIT 1", (compaction_cutoff(now_minute),)
    ).fetchone()
    return found is not None


def compact(conn: sqlite3.Connection, now_minute: int) -> int:
    """Fold minute rows of whole hours older than `KEEP_MINUTES` into hour rows.

    Runs inside the caller's write transaction (the writer's); returns the minute rows
    folded. Late minutes of an hour compacted before are added to its row the same way.
    """
    cutoff = compaction_cutoff(now_minute)
    rows = conn.execute(
        f"SELECT version_id, experiment, minute, {_ROLLUP_COLUMNS} FROM rollups WHERE minute < ?"
        " ORDER BY minute",
        (cutoff,),
    ).fetchall()
    if not rows:
        return 0
    hours: dict[tuple[int, str, int], Delta] = {}
    for r in rows:
        delta = Delta(
            r[3],
            r[4],
            r[5],
            _array(r[6]),
            r[7],
            _array(r[8]) if r[8] else None,
            _array(r[9]) if r[9] else None,
            r[10],
            r[11],
            r[12],
            r[13],
        )
        key = (r[0], r[1], r[2] // 60)
        if key in hours:
            hours[key].add(delta)
        else:
            hours[key] = delta
    for key, delta in hours.items():
        add_to_row(conn, "hour", key, delta)
    conn.execute("DELETE FROM rollups WHERE minute < ?", (cutoff,))
    return len(rows)


def _array(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i8").astype(np.int64) if blob else np.zeros(0, np.int64)


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


def _blob(values: np.ndarray | None) -> bytes | None:
    return None if values is None else np.asarray(values, dtype="<i8").tobytes()


def _stack(blobs: list[bytes | None]) -> np.ndarray | None:
    """Stack the minutes that have a histogram; the others count as zeros."""
    width = next((len(b) for b in blobs if b), 0)
    if width == 0:
        return None
    zero = bytes(width)
    joined = b"".join(b if b and len(b) == width else zero for b in blobs)
    return np.frombuffer(joined, dtype="<i8").reshape(len(blobs), -1)
