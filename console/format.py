"""How values read on screen: health marks, ages, numbers. Text first, colour second.

Every status carries a word and a symbol, so it stays readable under `NO_COLOR` and over a
terminal that drops colour; the ASCII symbols replace the Unicode ones where the terminal
may not draw them.

Text from a file name or the store (versions, notes, actors, alert messages, job words,
feature names) goes on screen through `safe` or `cell`: escaped (`engine.escape`), so a
newline or `ESC[2J` shows as `\\n`, `\\x1b[2J`, and as a `Text`, never parsed as Rich markup
(a `[` in a file name would otherwise be taken for a style, or refused as bad markup).
"""

from __future__ import annotations

import math
from datetime import datetime

from rich.text import Text

from engine import escape

_MARKS = {
    "healthy": ("●", "+", "green"),
    "warning": ("▲", "!", "yellow"),
    "critical": ("✖", "X", "bold red"),
    "no data": ("○", "-", "dim"),
}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow"}


def safe(value: object) -> str:
    """Any value as one printable line (what a stored or file-given text shows as)."""
    return escape(str(value))


def cell(value: object, style: str = "") -> Text:
    """`safe`, as a Text: a table cell or a line that is never read as markup."""
    return Text(escape(str(value)), style=style)


def mark(health: str, *, ascii_only: bool) -> str:
    """The symbol of a health or severity word."""
    unicode, plain, _ = _MARKS.get(health, ("?", "?", ""))
    return plain if ascii_only else unicode


def health_text(health: str, *, ascii_only: bool) -> Text:
    """`● healthy`, styled by severity (the word carries the meaning without colour)."""
    style = _MARKS.get(health, ("", "", ""))[2]
    return Text(f"{mark(health, ascii_only=ascii_only)} {health}", style=style)


def severity_text(severity: str, *, ascii_only: bool) -> Text:
    word = "CRIT" if severity == "critical" else "WARN"
    return Text(
        f"{mark(severity, ascii_only=ascii_only)} {word}",
        style=_SEVERITY_STYLE.get(severity, ""),
    )


def epoch_of(iso: str | None) -> float | None:
    """Seconds since the epoch of a stored UTC time, or None when there is none."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age(seconds: float | None) -> str:
    """A short age: `5s`, `3m`, `2h`, `4d` (`-` when unknown)."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def since(iso: str | None, now: float) -> str:
    """The age of a stored time relative to `now`."""
    at = epoch_of(iso)
    return age(None if at is None else now - at)


def num(value: float | None, pattern: str = "{:.3f}") -> str:
    """A number in a fixed format, `-` for none or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)


def percent(bp: int) -> str:
    """Basis points as a percent, without a needless decimal."""
    return f"{bp / 100:g}%"


def p_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def setting(value: float) -> str:
    """A configured threshold as written in config.toml (`0.75`, `250`, `0.01`): a setting,
    not a measurement, so not rounded to `sig`'s three digits (`0.0100`)."""
    return f"{value:g}"
