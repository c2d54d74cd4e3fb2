"""Numbers for people: what the CLI's tables, the incident report and the console print
(`engine.sig` is the console's too, so a figure reads the same everywhere). JSON keeps full
precision; only text rounds."""

from __future__ import annotations

import math
import time


def sig(value: float | None, digits: int = 3) -> str:
    """`digits` significant digits below 10^(digits-1), whole and grouped above (`0.821`,
    `41.2`, `1,653`, never `1.65e+03`); a count (an int) whole (`5`, not `5.00`); `-` for
    none or NaN."""
    if value is None or math.isnan(value):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if math.isinf(value) or abs(value) >= 10 ** (digits - 1) - 0.5:
        return str(value) if math.isinf(value) else f"{round(value):,}"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    # Rounding may carry into the next power of ten (0.9996 → 1.00): measure after it.
    rounded = round(value, digits - 1 - magnitude)
    magnitude = math.floor(math.log10(abs(rounded)))
    if magnitude < -4:
        return f"{value:.{digits - 1}e}"
    return f"{rounded:.{max(0, digits - 1 - magnitude)}f}"


def signed(value: float | None) -> str:
    """`sig` with its sign always shown (`+0.150`, `-0.100`)."""
    shown = sig(value)
    return shown if shown == "-" or shown.startswith("-") else f"+{shown}"


def pct(value: float | None) -> str:
    """A relative change in percent, signed, three significant digits (`+12.3%`)."""
    if value is None or math.isnan(value):
        return "-"
    return f"{'-' if value < 0 else '+'}{sig(abs(value) * 100)}%"


def narrowing(first: tuple[int, float, float], last: tuple[int, float, float], count: int) -> str:
    """How a test's interval narrowed: its half-width at the first and last of `count`
    minutes, each a (minute since the epoch, lo, hi) (`interval ±0.0655 at 14:02 → ±0.0291 at
    14:42 UTC (41 minutes with labels)`)."""
    (m0, lo0, hi0), (m1, lo1, hi1) = first, last

    def hhmm(minute: int) -> str:
        return time.strftime("%H:%M", time.gmtime(minute * 60))

    return (
        f"interval ±{sig((hi0 - lo0) / 2)} at {hhmm(m0)} → ±{sig((hi1 - lo1) / 2)} at"
        f" {hhmm(m1)} UTC ({count} minutes with labels)"
    )
