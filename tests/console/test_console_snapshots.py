"""The console's pictures, with frozen time and fixed-seed data: stable across runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.pilot import Pilot

from console.app import BeastConsole
from console.gateway import Gateway
from engine import Workspace
from tests.console import snapdata
from tests.console.pilot import drive, make_app, press, screen_lines, steady
from tests.console.snapshots import assert_snapshot


@pytest.fixture
def frozen(registered: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    snapdata.build(registered, monkeypatch)
    gateway = Gateway(registered, actor="ops")
    yield gateway
    gateway.close()


def _app(gateway: Gateway, **kw: bool) -> BeastConsole:
    return make_app(gateway, clock=lambda: snapdata.FROZEN, workspace_label=".beast-mode", **kw)


VIEW_KEYS = ("? Help", "/ Filter", "z Zoom", "p Pause", "^r Refresh", "H History", "^p palette")
MUTATION_KEYS = ("R Rollback", "P Promote", "A Abort", "T Retrain", "D Deploy")
ACT_KEYS = (*MUTATION_KEYS, "I Report", "q Quit")
SIZES = [(80, 24), (200, 50)]


def _picture(
    gateway: Gateway,
    name: str,
    size: tuple[int, int],
    keys: tuple[str, ...] = (),
    **kw: bool,
) -> tuple[set[str], list[str]]:
    """Take the picture; return the screen's classes (the layout breakpoint) and its text
    at that moment."""
    app = _app(gateway, **kw)
    classes: set[str] = set()
    lines: list[str] = []

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "ctrl+r")  # a second poll: sparklines and drift have history
        await press(app, pilot, *keys)
        classes.update(app.screen.classes)
        lines.extend(screen_lines(app))
        await steady(app, pilot)
        assert_snapshot(app, name)

    drive(app, scenario, size=size)
    return classes, lines


def _footer(lines: list[str], size: tuple[int, int]) -> str:
    """The footer's lines: one at 200 columns, two at 80 (what looks, then what acts)."""
    footer = lines[-1:] if size[0] >= 200 else lines[-2:]
    return "\n".join(footer)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen(frozen: Gateway, size: tuple[int, int]) -> None:
    classes, lines = _picture(frozen, f"main-{size[0]}x{size[1]}", size)
    assert ("-narrow" if size[0] < 100 else "-wide") in classes
    footer = _footer(lines, size)
    for key in (*VIEW_KEYS, *ACT_KEYS):
        assert key in footer, footer
    assert "engine" in lines[0] and "health ✖ critical" in lines[0]  # the header, one line
    assert lines[1].startswith("╭─ 1 Deployments")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_maximized_ab_pane_keeps_the_header_and_the_keys(
    frozen: Gateway, size: tuple[int, int]
) -> None:
    _, lines = _picture(frozen, f"zoom-ab-{size[0]}x{size[1]}", size, ("4", "z"))
    assert lines[1].startswith("╭─ 4 A/B retrain-v3")
    assert "pred" in lines[2] and "lab" in lines[2]
    footer = _footer(lines, size)
    for key in (*VIEW_KEYS, *ACT_KEYS):
        assert key in footer, footer


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_readonly_badge(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    snapdata.build(registered, monkeypatch)
    gateway = Gateway(registered, readonly=True, actor="ops")
    try:
        _, lines = _picture(gateway, f"readonly-{size[0]}x{size[1]}", size)
    finally:
        gateway.close()
    assert "RO read-only" in lines[0]
    footer = "\n".join(lines[-2:])  # what looks, the report and quit: no key that changes
    for key in (*VIEW_KEYS, "I Report", "q Quit"):
        assert key in footer, footer
    for key in MUTATION_KEYS:
        assert key not in "\n".join(lines), key


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_color(frozen: Gateway, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    _, lines = _picture(frozen, f"no-color-{size[0]}x{size[1]}", size)
    assert "health X critical" in lines[0]  # ASCII marks
    footer = _footer(lines, size)
    for key in (*VIEW_KEYS, *ACT_KEYS):
        assert key in footer, footer
