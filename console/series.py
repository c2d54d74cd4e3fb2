"""Bounded per-version metric histories that feed the sparklines.

Per-minute points come from the engine's rollups (merged by minute, so the current minute is
updated in place); drift has no per-minute history in the store, so it is sampled once per
poll. Each series is a bounded deque; a sparkline is handed a fresh tuple of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from engine import MinutePoint, VersionReport

METRICS = ("primary", "second", "p95", "errors", "traffic", "drift")
POINTS = 60
# "primary": the line's primary metric (accuracy, or a binary line's AUC); "second": MAE on a
# regression line, accuracy at the decision threshold on a binary one.
_PICK: dict[str, Callable[[MinutePoint], float | None]] = {
    "primary": lambda p: p.primary,
    "second": lambda p: p.mae,
    "second-binary": lambda p: p.accuracy,
    "p95": lambda p: p.p95_ms,
    "errors": lambda p: p.error_rate,
    "traffic": lambda p: float(p.predictions),
}


class VersionSeries:
    """The last POINTS values of each metric of one version."""

    def __init__(self) -> None:
        self._minutes: deque[MinutePoint] = deque(maxlen=POINTS)
        self._drift: deque[float] = deque(maxlen=POINTS)
        self._binary = False

    def feed(self, report: VersionReport) -> None:
        self._binary = report.task == "binary"
        for point in report.series:
            if self._minutes and point.minute < self._minutes[-1].minute:
                continue
            if self._minutes and point.minute == self._minutes[-1].minute:
                self._minutes[-1] = point
            else:
                self._minutes.append(point)
        drift = report.drift.model if report.drift.model is not None else report.drift.data
        if drift is not None:
            self._drift.append(drift)

    def values(self, metric: str) -> tuple[float, ...]:
        if metric == "drift":
            return tuple(self._drift)
        pick = _PICK[f"{metric}-binary" if self._binary and metric == "second" else metric]
        return tuple(float(v) for v in (pick(p) for p in self._minutes) if v is not None)


class SeriesBook:
    """One `VersionSeries` per version key, forgotten when the version stops serving."""

    def __init__(self) -> None:
        self._by_key: dict[str, VersionSeries] = {}

    def feed(self, reports: tuple[VersionReport, ...]) -> None:
        keys = set()
        for report in reports:
            key = f"{report.line}/{report.version}"
            keys.add(key)
            self._by_key.setdefault(key, VersionSeries()).feed(report)
        for gone in set(self._by_key) - keys:
            del self._by_key[gone]

    def get(self, key: str) -> VersionSeries | None:
        return self._by_key.get(key)
