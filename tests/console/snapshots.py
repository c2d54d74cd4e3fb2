"""SVG snapshots of the console, kept in tests/console/__snapshots__/.

Compared as text; a missing or different SVG fails and the new one is written beside it
(`NAME.new.svg`) to look at. Set `BEAST_UPDATE_SNAPSHOTS=1` to accept the new pictures.
"""

from __future__ import annotations

import difflib
import html
import os
import re
from pathlib import Path

from console.app import BeastConsole

SNAPSHOTS = Path(__file__).parent / "__snapshots__"


def assert_snapshot(app: BeastConsole, name: str) -> None:
    svg = app.export_screenshot(title="beast console")
    expected = SNAPSHOTS / f"{name}.svg"
    fresh = SNAPSHOTS / f"{name}.new.svg"
    if os.environ.get("BEAST_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        expected.write_text(svg, encoding="utf-8")
        fresh.unlink(missing_ok=True)
        return
    if expected.is_file() and expected.read_text(encoding="utf-8") == svg:
        fresh.unlink(missing_ok=True)
        return
    SNAPSHOTS.mkdir(exist_ok=True)
    fresh.write_text(svg, encoding="utf-8")
    raise AssertionError(
        f"snapshot {name} differs from {expected.name} (new picture: {fresh}); "
        "if the change is meant, rerun with BEAST_UPDATE_SNAPSHOTS=1\n" + _diff(expected, svg)
    )


def _diff(expected: Path, svg: str) -> str:
    """What moved, as text (a CI log keeps no `.new.svg`): the pictures' text runs, diffed,
    or a line saying only the styles differ."""
    old = _runs(expected.read_text(encoding="utf-8")) if expected.is_file() else []
    new = _runs(svg)
    lines = difflib.unified_diff(old, new, "expected", "now", n=1, lineterm="")
    return "\n".join(lines) or "(the same text: only styles differ)"


def _runs(svg: str) -> list[str]:
    texts = re.findall(r"<text[^>]*>(.*?)</text>", svg)
    return [html.unescape(t).replace("\xa0", " ") for t in texts if t.strip()]
