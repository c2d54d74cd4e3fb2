"""Numbers for people: what the CLI's tables, the incident report and the console print
(`engine.sig` is the console's too, so a figure reads the same everywhere). JSON keeps full
precision; only text rounds."""

from __future__ import annotations

import math


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
