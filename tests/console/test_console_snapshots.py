"""The console's pictures, with frozen time and fixed-seed data: stable across runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from textual.pilot import Pilot

from console.app import BeastConsole
from console.gateway import Gateway
from engine import Workspace
from tests.console import snapdata
from tests.console.pilot import drive, make_app, press
from tests.console.snapshots import assert_snapshot


@pytest.fixture
def frozen(registered: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    snapdata.build(registered, monkeypatch)
    gateway = Gateway(registered, actor="ops")
    yield gateway
    gateway.close()


def _app(gateway: Gateway, **kw: bool) -> BeastConsole:
    return make_app(gateway, clock=lambda: snapdata.FROZEN, workspace_label=".beast-mode", **kw)


def _picture(
    gateway: Gateway,
    name: str,
    size: tuple[int, int],
    keys: tuple[str, ...] = (),
    **kw: bool,
) -> set[str]:
    """Take the picture; return the screen's classes (the layout breakpoint) at that moment."""
    app = _app(gateway, **kw)
    classes: set[str] = set()

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "ctrl+r")  # a second poll: sparklines and drift have history
        await press(app, pilot, *keys)
        classes.update(app.screen.classes)
        assert_snapshot(app, name)

    drive(app, scenario, size=size)
    return classes


def test_main_screen_80x24(frozen: Gateway) -> None:
    assert "-narrow" in _picture(frozen, "main-80x24", (80, 24))


def test_main_screen_120x40(frozen: Gateway) -> None:
    assert "-wide" in _picture(frozen, "main-120x40", (120, 40))


def test_readonly_badge(registered: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    snapdata.build(registered, monkeypatch)
    gateway = Gateway(registered, readonly=True, actor="ops")
    try:
        _picture(gateway, "readonly-120x40", (120, 40))
    finally:
        gateway.close()


def test_no_color(frozen: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    _picture(frozen, "no-color-120x40", (120, 40))
