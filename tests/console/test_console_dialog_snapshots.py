"""Pictures of every dialog and screen over the main one, at 80×24 (the design size) and
200×50, with frozen time and fixed-seed data; each also asserts its footer's keys and that
what it says is on screen whole (wrapped, never cut)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing

import pytest
from textual.pilot import Pilot

from console.app import BeastConsole
from console.gateway import Gateway
from engine import Engine, Workspace
from tests.console import snapdata
from tests.console.pilot import drive, make_app, press, steady
from tests.console.snapshots import assert_snapshot
from tests.console.test_console_history import EVIDENCE, append_with_evidence

SIZES = ((80, 24), (200, 50))


@pytest.fixture
def frozen(registered: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    # The default workspace for a bare `beast`, so the dialogs' commands carry no tmp path.
    monkeypatch.setenv("BEAST_HOME", str(registered.root))
    snapdata.build(registered, monkeypatch)
    gateway = Gateway(registered, actor="ops")
    yield gateway
    gateway.close()


@pytest.fixture
def decided(frozen: Gateway) -> Gateway:
    """The test aborted, then a change with its evidence: five rows of history."""
    ws = frozen.workspace
    with closing(Engine(ws, actor="ops")) as engine:
        engine.abort("retrain-v3")
    append_with_evidence(ws, EVIDENCE)
    return frozen


def screen_text(app: BeastConsole) -> list[str]:
    """The terminal's lines as drawn (what a user reads, dialogs over the panes)."""
    return [strip.text.rstrip() for strip in app.screen._compositor.render_strips()]


def _inside(line: str) -> str:
    """A line's text inside a dialog's border (`█`), without the panes behind it."""
    if line.count("█") >= 2:
        line = line[line.index("█") + 1 : line.rindex("█")]
    return re.sub(r"[▊▎]", " ", line)


def _picture(
    gateway: Gateway,
    name: str,
    size: tuple[int, int],
    keys: tuple[str, ...],
    footer: tuple[str, ...],
    *,
    whole: tuple[str, ...] = (),
    **kw: bool,
) -> None:
    app = make_app(gateway, clock=lambda: snapdata.FROZEN, workspace_label=".beast-mode", **kw)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "ctrl+r", *keys)
        lines = screen_text(app)
        for key in footer:
            assert key in lines[-1], (key, lines[-1])
        # Wrapped at word boundaries: each phrase reads whole once the lines are joined.
        joined = re.sub(r"\s+", " ", " ".join(_inside(line) for line in lines))
        for phrase in whole:
            assert phrase in joined, (phrase, "\n".join(lines))
        await steady(app, pilot)
        assert_snapshot(app, f"{name}-{size[0]}x{size[1]}")

    drive(app, scenario, size=size)


CONFIRM = ("y Confirm", "esc Cancel", "c Copy command")
DIALOGS = {
    "confirm-rollback": (("R",), ("beast rollback --expect v2.0 --expect-revision 3",)),
    "confirm-promote": (
        ("P",),
        (
            "beast promote retrain-v3 --force --expect v2.0 --expect-revision 3",
            "alerts firing now: 4 on quality-predictor",
        ),
    ),
    "confirm-abort": (("A",), ("beast abort retrain-v3 --expect v2.0 --expect-revision 3",)),
    "confirm-retrain": (("T",), ("beast retrain --force --detach",)),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(DIALOGS))
def test_confirm_dialogs(frozen: Gateway, name: str, size: tuple[int, int]) -> None:
    keys, whole = DIALOGS[name]
    _picture(frozen, name, size, keys, CONFIRM, whole=whole)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_confirm_deploy_after_aborting(frozen: Gateway, size: tuple[int, int]) -> None:
    # Deploying needs no running test: abort it, then the form's Next on v1.0 as a candidate.
    keys = ("A", "y", "ctrl+r", "D", "tab", "enter")
    whole = ("beast deploy --version v1.0 --traffic 10 --ab-test ab-v1.0 --expect v2.0",)
    _picture(frozen, "confirm-deploy", size, keys, CONFIRM, whole=whole)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_type_to_confirm_half_typed(frozen: Gateway, size: tuple[int, int]) -> None:
    keys = ("P", "v", "3")  # the name is v3.0: OK stays disabled
    footer = ("esc Cancel",)  # `c` is a letter of the name here (tab out, then it copies)
    whole = ("production changes: type v3.0 and enter to confirm",)
    _picture(frozen, "confirm-promote-typed", size, keys, footer, whole=whole, type_to_confirm=True)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_deploy_form(frozen: Gateway, size: tuple[int, int]) -> None:
    whole = ("Deploy on quality-predictor", "Version", "Role", "Traffic %", "Test name")
    _picture(frozen, "deploy-form", size, ("A", "y", "ctrl+r", "D"), ("esc Cancel",), whole=whole)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(frozen: Gateway, size: tuple[int, int]) -> None:
    _picture(frozen, "help", size, ("question_mark",), ("esc Close",))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_details(frozen: Gateway, size: tuple[int, int]) -> None:
    _picture(frozen, "details-v3", size, ("j", "enter"), ("esc Back",))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history(decided: Gateway, size: tuple[int, int]) -> None:
    footer = ("⏎ Evidence", "esc Close")
    whole = ("History of quality-predictor · 5 changes, newest first",)
    _picture(decided, "history", size, ("H",), footer, whole=whole)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_evidence(decided: Gateway, size: tuple[int, int]) -> None:
    whole = ("health: critical", "control: 1,653", "accuracy 0.747 < 0.75")
    _picture(decided, "evidence", size, ("H", "enter"), ("esc Back",), whole=whole)
