"""Bounded per-version metric histories that feed the sparklines, a value per MINUTE.

Per-minute points come from the engine's rollups (`VersionReport.series`, merged by minute,
so the current minute is updated in place); drift has no per-minute history in the store, so
it is sampled once per poll, into the minute of the report. `values` lays the last POINTS
minutes side by side up to the report's own minute, with None for a minute without data: a
minute with no traffic is a gap on screen, never a value.
"""

from __future__ import annotations

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
    """The last POINTS minutes of each metric of one version."""

    def __init__(self) -> None:
        self._minutes: dict[int, MinutePoint] = {}
        self._drift: dict[int, float] = {}
        self._binary = False
        self.last_minute: int | None = None

    def feed(self, report: VersionReport, minute: int | None = None) -> None:
        """Take a report's minutes; `minute` is the report's own (now), the right edge."""
        self._binary = report.task == "binary"
        for point in report.series:
            self._minutes[point.minute] = point
        newest = max(self._minutes, default=None)
        now = minute if minute is not None else newest
        if now is None:
            return
        self.last_minute = max(now, self.last_minute or now)
        drift = report.drift.model if report.drift.model is not None else report.drift.data
        if drift is not None:
            self._drift[now] = drift
        oldest = self.last_minute - POINTS + 1
        for book in (self._minutes, self._drift):
            for gone in [m for m in book if m < oldest]:
                del book[gone]

    def values(self, metric: str) -> tuple[float | None, ...]:
        """The metric minute by minute, oldest first, None where a minute has no value."""
        if self.last_minute is None:
            return ()
        minutes = range(self.last_minute - POINTS + 1, self.last_minute + 1)
        if metric == "drift":
            found: list[float | None] = [self._drift.get(m) for m in minutes]
        else:
            pick = _PICK[f"{metric}-binary" if self._binary and metric == "second" else metric]
            points = [self._minutes.get(m) for m in minutes]
            found = [None if p is None else _float(pick(p)) for p in points]
        first = next((i for i, v in enumerate(found) if v is not None), len(found))
        return tuple(found[first:])  # from the first minute with data: no leading blanks


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


class SeriesBook:
    """One `VersionSeries` per version key, forgotten when the version stops serving."""

    def __init__(self) -> None:
        self._by_key: dict[str, VersionSeries] = {}

    def feed(self, reports: tuple[VersionReport, ...], minute: int | None = None) -> None:
        keys = set()
        for report in reports:
            key = f"{report.line}/{report.version}"
            keys.add(key)
            self._by_key.setdefault(key, VersionSeries()).feed(report, minute)
        for gone in set(self._by_key) - keys:
            del self._by_key[gone]

    def get(self, key: str) -> VersionSeries | None:
        return self._by_key.get(key)
