"""`MetricSpark`: a one-line sparkline with a scale, gaps and its threshold.

Textual's Sparkline scales each series to its own min and max, so a flat series fills its
cells with full blocks, and it has no "no data": a minute without predictions looked like a
value. Here a minute without data is a blank cell; the scale is the metric's band (accuracy
over [min(alert, data), 1], a latency over [0, max(alert, data)]), so a flat series sits at
its level; and a minute on the wrong side of the alert threshold is drawn in the alert's
colour (the threshold's number stays beside the line, as words survive `NO_COLOR`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

BLOCKS = "▁▂▃▄▅▆▇█"
ASCII = "_.,-=+*#"  # eight levels that read bottom to top on any terminal


@dataclass(frozen=True)
class Scale:
    """A metric's band on screen and its alert threshold (None: no threshold)."""

    low: float
    high: float
    threshold: float | None = None
    higher_is_better: bool = True

    def bad(self, value: float) -> bool:
        """On the wrong side of the threshold (at it is still fine, as the alerts say)."""
        if self.threshold is None:
            return False
        return value < self.threshold if self.higher_is_better else value > self.threshold


def band(
    values: Sequence[float | None],
    *,
    threshold: float | None = None,
    higher_is_better: bool = True,
    ceiling: float | None = None,
) -> Scale:
    """The scale of a metric: from the worst of its data and its threshold to `ceiling`
    (1 for a ratio that is better higher), or from 0 to the worst of both when lower is
    better (a flat series without a threshold: from 0 to twice its value)."""
    seen = [v for v in values if v is not None and not math.isnan(v)]
    if higher_is_better:
        floor = min([*seen, *([threshold] if threshold is not None else [])], default=0.0)
        top = ceiling if ceiling is not None else max(seen, default=1.0)
        return Scale(floor, max(top, floor), threshold, True)
    top = max([*seen, *([threshold] if threshold is not None else [])], default=1.0)
    if threshold is None and seen and min(seen) == top:
        top *= 2  # a flat series with nothing to compare it to sits mid-height, not full
    return Scale(0.0, top, threshold, False)


def render(values: Sequence[float | None], scale: Scale, width: int, *, ascii_only: bool) -> Text:
    """The last `width` values as one line: a block per minute, blank for no data."""
    ramp = ASCII if ascii_only else BLOCKS
    shown = list(values)[-width:] if width > 0 else []
    out = Text(" " * (max(0, width) - len(shown)), no_wrap=True)
    span = scale.high - scale.low
    top = len(ramp) - 1
    for value in shown:
        if value is None or math.isnan(value):
            out.append(" ")
            continue
        level = top // 2 if span <= 0 else round((value - scale.low) / span * top)
        char = ramp[min(top, max(0, level))]
        out.append(char, style="bold red" if scale.bad(value) else "")
    return out


class MetricSpark(Static):
    """One metric's minutes, newest on the right, redrawn when its data or width change."""

    DEFAULT_CSS = "MetricSpark { height: 1; }"

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.values: tuple[float | None, ...] = ()
        self.scale = Scale(0.0, 1.0)
        self.ascii_only = False
        self._drawn: tuple[object, ...] = ()

    def show(
        self, values: tuple[float | None, ...], scale: Scale, *, ascii_only: bool = False
    ) -> None:
        self.values, self.scale, self.ascii_only = values, scale, ascii_only
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        width = self.size.width
        drawn = (self.values, self.scale, self.ascii_only, width)
        if drawn != self._drawn:  # a poll with the same minutes draws nothing
            self._drawn = drawn
            self.update(render(self.values, self.scale, width, ascii_only=self.ascii_only))


def by_cell(minutes: Sequence[int], width: int) -> list[int | None]:
    """Which point each of at most `width` cells draws (the index into `minutes`, rising;
    None: a blank cell). A cell per minute from the first to the last while they fit;
    over a longer span each cell is a stretch of minutes drawing its last point, so the
    whole run stays on screen (an A/B interval narrows most in its first minutes)."""
    if not minutes or width <= 0:
        return []
    first = minutes[0]
    span = minutes[-1] - first + 1
    cells = min(width, span)
    out: list[int | None] = []
    at = 0
    for cell in range(cells):
        end = first + (cell + 1) * span / cells  # this cell's stretch ends before `end`
        last = None
        while at < len(minutes) and minutes[at] < end:
            last, at = at, at + 1
        out.append(last)
    return out


def interval_rows(
    lo: Sequence[float | None],
    hi: Sequence[float | None],
    margin: float,
    width: int,
    *,
    ascii_only: bool,
) -> tuple[Text, Text, str]:
    """An interval's bounds as two sparklines on one scale (the upper row, then the
    lower), and the ramp's character at −margin. A lower bound above −margin
    (non-inferior) is green; an upper bound below it (surely worse) is red.

    The scale is the latest interval and ±margin, with as much again above and below: a
    confidence sequence's first minutes are many times wider than its last, and a scale
    that held them flattened the rest of the run to one level; they run off the ends
    (full, empty) and the narrowing stays visible around the margin."""
    last_lo = next((v for v in reversed(lo) if v is not None and not math.isnan(v)), 0.0)
    last_hi = next((v for v in reversed(hi) if v is not None and not math.isnan(v)), 0.0)
    low, high = min(last_lo, -margin, 0.0), max(last_hi, margin, 0.0)
    scale = Scale(low - (high - low), high + (high - low))
    upper = render(hi, Scale(scale.low, scale.high, -margin), width, ascii_only=ascii_only)
    lower = render(lo, scale, width, ascii_only=ascii_only)
    offset = max(0, width) - len(list(lo)[-width:] if width > 0 else [])
    for i, value in enumerate(list(lo)[-width:] if width > 0 else []):
        if value is not None and not math.isnan(value) and value > -margin:
            lower.stylize("green", offset + i, offset + i + 1)
    mark = render([-margin], scale, 1, ascii_only=ascii_only).plain
    return upper, lower, mark
