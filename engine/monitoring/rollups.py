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

from engine.core import tasks
from engine.core.rollups import CLASS_BINS, SCALARS, Delta, RollupKey
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
    """What a version did over a window. Ratios are None when there is nothing to divide.

    Every label adds `within`, |error| and error²; a binary line's labels (score p, label y)
    also add the log loss term, predicted / actual / true positives and the score's class
    histogram (engine.core.rollups), from which `auc` is read. `metrics(task)` gives a task's
    figures by engine.core.tasks.METRICS key: the same definitions as
    engine.monitoring.scoring over the labelled rows themselves.
    """

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
    log_loss_sum: float = 0.0
    pred_pos: int = 0
    actual_pos: int = 0
    true_pos: int = 0
    class_hist: np.ndarray | None = field(default=None, repr=False)  # (key, count) pairs

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
    def rmse(self) -> float | None:
        return math.sqrt(self.abs_err_sq_sum / self.labelled) if self.labelled else None

    @property
    def brier(self) -> float | None:
        return self.abs_err_sq_sum / self.labelled if self.labelled else None

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.labelled if self.labelled else None

    @property
    def precision(self) -> float | None:
        return self.true_pos / self.pred_pos if self.pred_pos else None

    @property
    def recall(self) -> float | None:
        return self.true_pos / self.actual_pos if self.actual_pos else None

    @property
    def auc(self) -> float | None:
        return None if self.class_hist is None else auc_of(self.class_hist)

    def metrics(self, task: str) -> dict[str, float | None]:
        """The task's figures by the exact keys of engine.core.tasks.METRICS[task]."""
        return {key: getattr(self, key) for key in tasks.METRICS[task]}

    @property
    def labelled_fraction(self) -> float | None:
        return self.labelled / self.predictions if self.predictions else None

    def latency_ms(self) -> dict[str, float | None]:
        return {f"p{q}": latency.percentile(self.latency_hist, q) for q in (50, 95, 99)}

    def to_json(self, task: str = tasks.REGRESSION) -> dict[str, Any]:
        """The window's figures, the task's metrics by their exact keys."""
        return {
            "predictions": self.predictions,
            "errors": self.errors,
            "error_rate": _round(self.error_rate),
            "labelled": self.labelled,
            "labelled_fraction": _round(self.labelled_fraction),
            **{key: _round(value) for key, value in self.metrics(task).items()},
            "latency_ms": {k: _round(v) for k, v in self.latency_ms().items()},
        }


def auc_of(class_hist: np.ndarray) -> float | None:
    """ROC AUC from a sparse class histogram, a (entries, 2) array of (key, count)
    (engine.core.rollups): a positive above a negative counts 1, an equal score ½ (None with
    one class only)."""
    keys = class_hist[:, 0].astype(np.int64)
    return grouped_aucs(np.zeros(keys.size, np.int64), keys, class_hist[:, 1], 1)[0]


def grouped_aucs(
    group: np.ndarray, key: np.ndarray, count: np.ndarray, size: int
) -> list[float | None]:
    """The AUC of each of `size` groups from sparse entries (group, key, count), all at once.

    Entries of one (group, key) are merged; then, by group, by score, a score's negatives
    before its positives: the negatives counted before a positive entry are those below it
    and at its own score (the entry just before), which count half.
    """
    if not key.size:
        return [None] * size
    flat = group.astype(np.int64) * (2 * CLASS_BINS) + key
    found, at = np.unique(flat, return_inverse=True)
    n = np.bincount(at, count.astype(np.float64))
    g, key = found // (2 * CLASS_BINS), found % (2 * CLASS_BINS)
    positive = key >= CLASS_BINS
    order = np.lexsort((positive, key % CLASS_BINS, g))
    g, key, n, positive = g[order], key[order], n[order], positive[order]
    negs = np.where(positive, 0.0, n)
    before = np.cumsum(negs) - negs
    starts = np.searchsorted(g, np.arange(size))
    before -= before[np.minimum(starts, g.size - 1)][g]
    same = np.zeros_like(n)
    if g.size > 1:
        shared = (g[1:] == g[:-1]) & (key[1:] - CLASS_BINS == key[:-1]) & positive[1:]
        same[1:][shared] = n[:-1][shared]
    wins = np.bincount(g, np.where(positive, n * (before - same / 2), 0.0), size)
    pos_n = np.bincount(g, np.where(positive, n, 0.0), size)
    neg_n = np.bincount(g, negs, size)
    return [
        float(w / (p * q)) if p and q else None for w, p, q in zip(wins, pos_n, neg_n, strict=True)
    ]


# Cutoffs × entries held at once by `prefix_aucs` (floats: 16 MB per array).
_PREFIX_CELLS = 2_000_000


def prefix_aucs(
    classes: np.ndarray, row_ends: np.ndarray, cutoffs: np.ndarray
) -> list[float | None]:
    """The AUC over the rows ending by each cutoff, from sparse (row, key, count) entries.

    The entries are sorted once by score, a score's negatives before its positives; a cutoff
    keeps the entries of its rows, and a positive beats the kept negatives before its score
    and half those at it. Counts are whole, so every sum is exact: the last cutoff's AUC is
    `auc_of`'s over the same rows to the bit."""
    key = classes[:, 1]
    score, positive = key % CLASS_BINS, key >= CLASS_BINS
    order = np.lexsort((positive, score))
    score, positive = score[order], positive[order]
    count = classes[order, 2].astype(np.float64)
    end = row_ends[classes[order, 0]]
    first = np.searchsorted(score, score, side="left")  # where each entry's score begins
    out: list[float | None] = []
    step = max(1, _PREFIX_CELLS // max(1, count.size))
    for lo in range(0, cutoffs.size, step):
        kept = np.where(end[None, :] <= cutoffs[lo : lo + step, None], count, 0.0)
        negs = np.where(positive, 0.0, kept)
        below = np.cumsum(negs, axis=1) - negs  # kept negatives before each entry
        wins = np.where(positive, kept * (below + below[:, first]) / 2, 0.0).sum(axis=1)
        pos_n = np.where(positive, kept, 0.0).sum(axis=1)
        neg_n = negs.sum(axis=1)
        out.extend(
            float(w / (p * q)) if p and q else None
            for w, p, q in zip(wins, pos_n, neg_n, strict=True)
        )
    return out


@dataclass(frozen=True)
class MinutePoint:
    """One minute of a version for the sparklines; `primary` is its line's primary metric
    (engine.core.tasks.PRIMARY: accuracy, or a binary line's AUC)."""

    minute: int
    predictions: int
    accuracy: float | None
    mae: float | None
    p95_ms: float | None
    error_rate: float | None
    primary: float | None = None


def _round(value: float | None) -> float | None:
    """A figure for JSON: full precision (screens round for people), None for NaN."""
    return None if value is None or math.isnan(value) or math.isinf(value) else value


@dataclass(frozen=True)
class VersionRollups:
    """A version's minutes, stacked: one row per minute, one column per bucket."""

    minutes: np.ndarray
    scalars: np.ndarray  # engine.core.rollups.SCALARS columns
    latency: np.ndarray
    features: np.ndarray | None
    scores: np.ndarray | None
    hourly: np.ndarray | None = None  # True for a compacted hour (its first minute in minutes)
    classes: np.ndarray | None = None  # (row, key, count): engine.core.rollups.StackedRollups

    def window(self, since_minute: int | None) -> WindowMetrics:
        """The figures of the rows from `since_minute` (the module's docstring: windows)."""
        mask = np.ones(self.minutes.size, bool)
        if since_minute is not None:
            mask = self.minutes >= since_minute
            if self.hourly is not None:  # an hour counts if it ends after the start
                mask |= self.hourly & (self.minutes + 60 > since_minute)
        return self._masked(mask)

    def between(self, start: int, end: int) -> WindowMetrics:
        """The figures of minutes [start, end): minute rows in it, and compacted hours that lie
        wholly before `end` and end after `start` (none of a later minute is counted)."""
        mask = (self.minutes >= start) & (self.minutes < end)
        if self.hourly is not None:
            hours = self.hourly & (self.minutes + 60 > start) & (self.minutes + 60 <= end)
            mask = (mask & ~self.hourly) | hours
        return self._masked(mask)

    def first_labelled(self, at_least: int) -> WindowMetrics | None:
        """The figures of the earliest rows holding `at_least` labelled predictions (whole
        rows: a few more when the last one holds several); None while there are fewer."""
        labelled = np.cumsum(self.scalars[:, 2]) if self.minutes.size else np.zeros(0)
        if not labelled.size or labelled[-1] < at_least:
            return None
        last = int(np.searchsorted(labelled, at_least))
        return self._masked(np.arange(self.minutes.size) <= last)

    def _masked(self, mask: np.ndarray) -> WindowMetrics:
        s = self.scalars[mask].sum(axis=0) if mask.any() else np.zeros(SCALARS)
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
            float(s[7]),
            int(s[8]),
            int(s[9]),
            int(s[10]),
            self._class_hist(mask),
        )

    def _class_hist(self, mask: np.ndarray) -> np.ndarray | None:
        """The chosen rows' class histogram, merged: (key, count) pairs by key."""
        if self.classes is None:
            return None
        chosen = self.classes[mask[self.classes[:, 0]]]
        if not chosen.size:
            return None
        keys, at = np.unique(chosen[:, 1], return_inverse=True)
        return np.column_stack((keys, np.bincount(at, weights=chosen[:, 2]).astype(np.int64)))

    def series(self, since_minute: int, task: str = tasks.REGRESSION) -> list[MinutePoint]:
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
        aucs = self._minute_aucs(idx, group, minutes.size) if task == tasks.BINARY else None
        out = []
        for i, minute in enumerate(minutes.tolist()):
            n, errors, labelled, within, abs_sum = scalars[i, :5]
            accuracy = within / labelled if labelled else None
            out.append(
                MinutePoint(
                    minute,
                    int(n),
                    accuracy,
                    abs_sum / labelled if labelled else None,
                    latency.percentile(lat[i], 95),
                    errors / n if n else None,
                    accuracy if aucs is None else aucs[i],
                )
            )
        return out

    def row_ends(self) -> np.ndarray:
        """Each row's last minute: its own, or a compacted hour's last."""
        if self.hourly is None:
            return self.minutes
        ends: np.ndarray = self.minutes + np.where(self.hourly, 59, 0)
        return ends

    def until(self, cutoffs: np.ndarray, task: str) -> tuple[np.ndarray, list[float | None]]:
        """The figures of the rows ending by each of `cutoffs` (minutes, ascending): one row of
        `SCALARS` sums per cutoff, and a binary line's AUC over the same rows (else None) —
        a test's figures as they stood at the end of each minute."""
        ends = self.row_ends()
        order = np.argsort(ends, kind="stable")
        sums = np.cumsum(self.scalars[order], axis=0)
        at = np.searchsorted(ends[order], cutoffs, side="right") - 1
        out = np.where((at >= 0)[:, None], sums[np.maximum(at, 0)], 0.0) if sums.size else None
        found = np.zeros((cutoffs.size, self.scalars.shape[1])) if out is None else out
        if task != tasks.BINARY or self.classes is None:
            return found, [None] * cutoffs.size
        return found, prefix_aucs(self.classes, ends, cutoffs)

    def _minute_aucs(self, idx: np.ndarray, group: np.ndarray, size: int) -> list[float | None]:
        """Each chosen minute's AUC from its own class histogram, all at once over the sparse
        (row, key, count) entries (rows of one minute merged)."""
        if self.classes is None:
            return [None] * size
        of_row = np.full(self.minutes.size, -1, np.int64)
        of_row[idx] = group
        where = of_row[self.classes[:, 0]]
        kept = where >= 0
        return grouped_aucs(where[kept], self.classes[kept, 1], self.classes[kept, 2], size)


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
        found.minutes,
        found.scalars,
        lat,
        found.features,
        found.scores,
        found.hourly,
        found.classes,
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
