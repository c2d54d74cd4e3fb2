"""SVG snapshots of the console, kept in tests/console/__snapshots__/.

Compared as text; a missing or different SVG fails and the new one is written beside it
(`NAME.new.svg`) to look at. Set `BEAST_UPDATE_SNAPSHOTS=1` to accept the new pictures.
"""

from __future__ import annotations

import os
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
        "if the change is meant, rerun with BEAST_UPDATE_SNAPSHOTS=1"
    )
