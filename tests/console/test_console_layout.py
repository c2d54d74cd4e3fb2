"""80×24 is the design size: every key in the footer, a one-line header, cells never cut
while there is room, one Deployments row per artifact, sparklines with gaps and a scale."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator, Sequence

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from console.app import BeastConsole
from console.gateway import Gateway
from console.keybar import KeyBar
from console.panes import SyncTable
from console.sparkline import BLOCKS, band, render
from engine import Engine, Workspace
from tests.console import snapdata
from tests.console.pilot import drive, make_app, press, rows, screen_lines
from tests.helpers import model_path, set_config

VIEW_KEYS = ("? Help", "/ Filter", "z Zoom", "p Pause", "^r Refresh", "H History", "^p palette")
MUTATION_KEYS = ("R Rollback", "P Promote", "A Abort", "T Retrain", "D Deploy")
ACT_KEYS = (*MUTATION_KEYS, "I Report", "q Quit")


@pytest.fixture
def frozen(registered: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    snapdata.build(registered, monkeypatch)
    yield registered


def _screen(
    ws: Workspace, size: tuple[int, int], *, readonly: bool = False, keys: tuple[str, ...] = ()
) -> tuple[list[str], list[str], int]:
    """(screen lines, the footer's lines, the header's height) after a poll and `keys`."""
    gateway = Gateway(ws, readonly=readonly, actor="ops")
    app = make_app(gateway, clock=lambda: snapdata.FROZEN, workspace_label=".beast-mode")
    shot: dict[str, object] = {}

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, *keys)
        bar = app.query_one(KeyBar)
        shot["lines"] = screen_lines(app)
        shot["footer"] = shot["lines"][-bar.size.height :]  # type: ignore[index]
        shot["header"] = app.query_one("#header").size.height

    try:
        drive(app, scenario, size=size)
    finally:
        gateway.close()
    return shot["lines"], shot["footer"], shot["header"]  # type: ignore[return-value]


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_every_key_is_in_the_footer(frozen: Workspace, size: tuple[int, int]) -> None:
    _, footer, _ = _screen(frozen, size)
    text = "\n".join(footer)
    for key in (*VIEW_KEYS, *ACT_KEYS, "⏎ Details"):
        assert key in text, f"{key!r} not in the footer at {size}:\n{text}"
    assert len(footer) == (2 if size[0] == 80 else 1)
    assert all(len(line) <= size[0] for line in footer)


def test_read_only_footer_shows_no_mutation_key(frozen: Workspace) -> None:
    """Read-only: the keys that look, then the two that only read or leave (the incident
    report, quit); no key that changes state."""
    _, footer, _ = _screen(frozen, (80, 24), readonly=True)
    assert len(footer) == 2
    for key in VIEW_KEYS:
        assert key in footer[0]
    assert footer[1].split() == ["I", "Report", "q", "Quit"]
    for key in MUTATION_KEYS:
        assert key not in "\n".join(footer)


def test_header_is_one_line_at_80_columns_and_keeps_its_badges(frozen: Workspace) -> None:
    set_config(frozen, environment='"production"')
    lines, _, height = _screen(frozen, (80, 24), readonly=True, keys=("p",))
    assert height == 1
    for word in ("PRODUCTION", "RO read-only", "PAUSED", "engine ○ not running", "health"):
        assert word in lines[0], lines[0]
    assert lines[1].startswith("╭"), lines[:2]  # the next row is the first pane's border


def test_header_drops_the_host_first_and_keeps_everything_at_200(frozen: Workspace) -> None:
    gateway = Gateway(frozen, actor="ops")
    app = make_app(gateway, clock=lambda: snapdata.FROZEN, host="a-rather-long-hostname")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        wide = app.header_text(200).plain
        assert "updated 0s ago · a-rather-long-hostname" in wide
        assert "a-rather-long-hostname" not in app.header_text(len(wide) - 1).plain
        for width in range(40, 200):
            text = app.header_text(width)
            assert text.cell_len <= width
            assert ("engine" in text.plain and "health" in text.plain) or width < 50

    try:
        drive(app, scenario, size=(200, 50))
    finally:
        gateway.close()


class _OneTable(App[None]):
    def compose(self) -> ComposeResult:
        yield SyncTable([("id", "#"), ("status", "status"), ("message", "alert")], flex="message")


def _table_screen(width: int, *syncs: Sequence[tuple[str, tuple[object, ...]]]) -> list[str]:
    app = _OneTable()
    out: list[str] = []

    async def run() -> None:
        async with app.run_test(size=(width, 8)) as pilot:
            table = app.query_one(SyncTable)
            for rows_now in syncs:
                table.sync(rows_now)
                await pilot.pause()
            assert table.virtual_size.width <= table.size.width  # no sideways scrolling
            out.extend(screen_lines(app))  # type: ignore[arg-type]

    asyncio.run(run())
    return out


def test_a_cell_that_grows_is_never_cut_while_there_is_room() -> None:
    before = [("#1", ("#1", "queued", Text("✖ CRIT short")))]
    after = [("#1", ("#1", "running", Text("✖ CRIT auto_deploy = false in config.toml")))]
    shown = "\n".join(_table_screen(120, before, after))
    assert "running" in shown and "auto_deploy = false in config.toml" in shown


def test_free_text_is_cut_with_an_ellipsis_only_when_the_terminal_is_too_narrow() -> None:
    long = [("#1", ("#1", "resolved", Text("accuracy 0.612 < 0.75 on 40 labelled predictions")))]
    narrow = "\n".join(_table_screen(40, long))
    assert "resolved" in narrow and "…" in narrow
    assert "accuracy 0.612 < 0.75 on 40 labelled predictions" in "\n".join(_table_screen(90, long))


def test_deployments_show_one_row_per_artifact_with_its_aliases(testing: Workspace) -> None:
    copy = testing.models_dir / "quality-predictor-best.json"
    shutil.copyfile(model_path(testing, "v3.0"), copy)
    engine = Engine(testing, actor="setup")
    try:
        engine.register(copy, version="best")
        engine.promote("retrain-v3", force=True)
    finally:
        engine.close()
    gateway = Gateway(testing, actor="ops")
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert rows(app, "deployments-table") == [
            "v3.0 (best, ab-winner-retrain-v3)",
            "v1.0",
            "v2.0",
            "v4.0",
        ]
        assert app.selected == "quality-predictor/v3.0"  # the key is the name that serves

    try:
        drive(app, scenario)
    finally:
        gateway.close()


def test_a_sparkline_keeps_gaps_and_a_flat_series_is_not_a_full_block() -> None:
    values = (0.8, 0.8, None, None, 0.8, 0.7)
    scale = band(values, threshold=0.75, ceiling=1.0)
    line = render(values, scale, 8, ascii_only=False)
    assert line.plain[:2] == "  "  # older minutes than the data: blank
    assert line.plain[4:6] == "  "  # two minutes without data: blank
    assert line.plain[2] == line.plain[3] == line.plain[6] != BLOCKS[-1]  # flat, not full
    assert line.plain[7] == BLOCKS[0]  # 0.7 is the bottom of [0.7, 1]
    bad = [span for span in line.spans if "red" in str(span.style)]
    assert [(s.start, s.end) for s in bad] == [(7, 8)]  # below the 0.75 threshold


def test_the_metrics_pane_sparkline_has_a_gap_for_minutes_without_traffic(
    frozen: Workspace,
) -> None:
    """snapdata's traffic stops a minute before the frozen time: the last minute is blank."""
    gateway = Gateway(frozen, actor="ops")
    app = make_app(gateway, clock=lambda: snapdata.FROZEN)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        series = app.series.get("quality-predictor/v2.0")
        assert series is not None
        traffic = series.values("traffic")
        assert traffic[-1] is None and traffic[0] == 36.0 and len(traffic) == 31

    try:
        drive(app, scenario)
    finally:
        gateway.close()
