"""Driving the console in tests: a headless app on a real workspace, settled between keys."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable

from console.app import BeastConsole
from console.gateway import Gateway
from engine import Engine, Workspace

Scenario = Callable[[BeastConsole, Pilot[None]], Awaitable[None]]


def make_app(gateway: Gateway, **kw: Any) -> BeastConsole:
    kw.setdefault("interval_s", 3600.0)  # no timer polls: tests refresh on purpose
    kw.setdefault("host", "testhost")
    kw.setdefault("workspace_label", "ws")
    return BeastConsole(gateway, **kw)


async def settle(app: BeastConsole, pilot: Pilot[None]) -> None:
    """Wait until every worker (poll, action, details) has finished and its result drawn,
    column widths included: a DataTable measures updated cells when its message queue is
    idle, and a key pressed before that (a dialog over the table) pictured `100` for `100%`."""
    # A worker's result can start the next one (an action's end asks for a poll; a poll
    # asked for while one ran starts when it ends): pending counts as well as running — a
    # poll still pending when the next key opened a dialog was drawn under it, where the
    # table never measured its columns (`100` for `100%` in confirm-deploy-200x50 on CI).
    for _ in range(20):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if all(w.is_finished for w in app.workers):
            break
    await measure_tables(app, pilot)
    # A redraw that changes a widget's height can add or drop a scrollbar, which resizes the
    # widget again (the A/B pane's evidence is drawn to its width): the picture is taken once
    # two frames in a row are the same.
    shown = screen_lines(app)
    for _ in range(20):
        await pilot.pause(0.01)
        now = screen_lines(app)
        if now == shown:
            return
        shown = now


async def steady(app: BeastConsole, pilot: Pilot[None]) -> None:
    """Before a picture: the screen, styles included, the same in three frames in a row
    (60 ms). `settle`'s text-only check let a style or a late `call_after_refresh` layout
    (a dialog fitting its body to the terminal) land between it and the picture. Raises
    when the screen never holds still for 3 s: a picture of a moving screen is no test."""
    await measure_tables(app, pilot)
    shown, same = screen_lines(app, styles=True), 0
    for _ in range(100):
        await pilot.pause(0.03)
        await measure_tables(app, pilot)
        now = screen_lines(app, styles=True)
        same = same + 1 if now == shown else 0
        if same == 2:
            return
        shown = now
    raise AssertionError("the screen kept changing for 3 s: nothing steady to picture")


async def measure_tables(app: BeastConsole, pilot: Pilot[None]) -> None:
    """Every table of the main screen with its column widths measured and drawn. A DataTable
    measures updated cells when its message queue is idle (Textual 8: `_on_idle`), and under
    load that idle had not come when the picture was taken (`role` and `%` drawn narrow in
    no-color-80x24 on CI; under a dialog it never comes): the pending measurement is run here,
    as the idle handler runs it, and laid out."""
    pending = [t for t in app.main_screen.query(DataTable) if _measuring(t)]
    for table in pending:
        await table._on_idle(events.Idle())
        table.refresh(layout=True)
    if pending:
        await pilot.pause()


def _measuring(table: DataTable[Any]) -> bool:
    """Cells updated whose column widths the table has not measured yet (Textual 8 does it
    on idle: `_on_idle`)."""
    return bool(table._updated_cells) or table._require_update_dimensions


async def press(app: BeastConsole, pilot: Pilot[None], *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot)


def drive(app: BeastConsole, scenario: Scenario, size: tuple[int, int] = (120, 40)) -> None:
    async def run() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            await scenario(app, pilot)

    asyncio.run(run())


def rows(app: BeastConsole, table_id: str) -> list[str]:
    table = app.query_one(f"#{table_id}", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def state(ws: Workspace) -> tuple[str | None, str | None, list[str]]:
    """(production, candidate, history actions) as the engine says, from a fresh Engine."""
    engine = Engine(ws)
    try:
        status = engine.status()
        prod = next((d.version for d in status.deployments if d.role == "production"), None)
        cand = next((d.version for d in status.deployments if d.role == "candidate"), None)
        return prod, cand, [e.action for e in engine.history()]
    finally:
        engine.close()


def action_log(app: BeastConsole) -> str:
    from textual.widgets import Log

    return "\n".join(app.query_one("#actions", Log).lines)


def screen_lines(app: BeastConsole, *, styles: bool = False) -> list[str]:
    """The screen as text, a line per terminal row: what an operator reads (the way
    `App.export_screenshot` renders it, without the colours; with `styles`, each line with
    its ANSI styles)."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor" if styles else None,
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(app.screen._compositor.render_update(full=True))
    lines = console.export_text(styles=styles).split("\n")
    return [line.rstrip() for line in lines[:height]]


def notices(app: BeastConsole) -> list[str]:
    """The notifications (toasts) shown so far, oldest first."""
    return [str(n.message) for n in app._notifications]
