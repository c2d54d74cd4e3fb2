"""Read-only mode, focus, filter, help, details, zoom, pause, remapped keys, the palette."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from console.app import BeastConsole
from console.commands import ConsoleCommands
from console.dialogs import ConfirmScreen
from console.gateway import Gateway, ReadOnlyRefused
from console.screens import DetailsScreen, HelpScreen
from engine import Engine, Expect, Workspace
from tests.console.pilot import action_log, drive, make_app, press, rows, settle, state


def test_readonly_hides_and_refuses_every_mutation(testing: Workspace) -> None:
    gateway = Gateway(testing, readonly=True)
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert "RO read-only" in app.header_text().plain
        footer_keys = {b.binding.id for b in app.screen.active_bindings.values()}
        assert footer_keys.isdisjoint({"rollback", "promote", "abort", "retrain", "deploy"})
        for action in ("rollback", "promote", "abort", "retrain", "deploy"):
            assert app.check_action("mutate", (action,)) is False
        await press(app, pilot, "R", "P", "A", "T", "D")
        assert not isinstance(app.screen, ConfirmScreen)
        app.action_mutate("rollback")  # even a direct call is refused, with a reason
        assert "rollback is not available here" in action_log(app)
        palette = [c[0] for c in ConsoleCommands.__dict__["_available"](_Commands(app))]
        assert palette and not any(text.startswith(("Deploy", "Retrain")) for text in palette)

    before = state(testing)
    try:
        drive(app, scenario)
        with pytest.raises(ReadOnlyRefused, match="read-only console: rollback refused"):
            gateway.rollback("quality-predictor", Expect(production="v2.0"))
    finally:
        gateway.close()
    assert state(testing) == before


class _Commands:
    """Just enough of a palette Provider to list the console's commands."""

    def __init__(self, app: BeastConsole) -> None:
        self.console = app


def test_number_keys_focus_panes_and_tab_cycles(gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        focused = []
        for key in "31245":
            await press(app, pilot, key)
            assert app.focused is not None
            focused.append(app.focused.id)
        assert focused == ["alerts-table", "deployments-table", "pane-2", "ab-table", "jobs-table"]
        await press(app, pilot, "1", "tab")
        assert app.focused is not None and app.focused.id == "pane-2"

    drive(app, scenario)


def test_filter_shows_matching_rows_and_escape_brings_all_back(gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert rows(app, "deployments-table") == ["v2.0", "v1.0", "v3.0", "v4.0"]
        await press(app, pilot, "slash", "v", "3")
        assert rows(app, "deployments-table") == ["v3.0"]
        await press(app, pilot, "enter")  # keeps the filter, back to the table
        assert app.focused is not None and app.focused.id == "deployments-table"
        await press(app, pilot, "ctrl+r")
        assert rows(app, "deployments-table") == ["v3.0"]
        await press(app, pilot, "slash", "escape")
        assert rows(app, "deployments-table") == ["v2.0", "v1.0", "v3.0", "v4.0"]

    drive(app, scenario)


def test_the_cursor_stays_on_its_row_across_refreshes(serving: Workspace, gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "j", "j")
        table = app.query_one("#deployments-table", DataTable)
        assert app.selected == "quality-predictor/v3.0"
        other = Engine(serving, actor="someone-else")
        try:
            other.deploy(version="v4.0")  # v4.0 moves to the top as production
        finally:
            other.close()
        await press(app, pilot, "ctrl+r")
        assert rows(app, "deployments-table") == ["v4.0", "v1.0", "v2.0", "v3.0"]
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        assert row_key.value == "quality-predictor/v3.0"

    drive(app, scenario)


def test_help_lists_the_keys_and_closes(gateway: Gateway) -> None:
    app = make_app(gateway, keymap={"rollback": "ctrl+b"})

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.rows)
        assert keys["ctrl+b"] == "roll back production (asks first)"
        assert "R" not in keys
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, HelpScreen)

    drive(app, scenario)


def test_a_remapped_key_performs_the_action(serving: Workspace, gateway: Gateway) -> None:
    app = make_app(gateway, keymap={"rollback": "ctrl+b"})

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R")
        assert not isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "ctrl+b", "y")

    drive(app, scenario)
    assert state(serving)[0] == "v1.0"


def test_enter_opens_the_details_of_the_version(testing: Workspace, gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "j", "enter")
        screen = app.screen
        assert isinstance(screen, DetailsScreen)
        assert screen.key == "quality-predictor/v3.0"
        assert screen.lineage is not None and screen.lineage.artifact.versions == ("v3.0",)
        assert screen.report is not None and screen.report.role == "candidate"
        assert [e.action for e in screen.history] == ["ab_start"]
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, DetailsScreen)

    drive(app, scenario)


def test_z_maximizes_the_focused_pane_and_p_pauses(gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "3", "z")
        assert app.screen.maximized is not None and app.screen.maximized.id == "pane-3"
        await press(app, pilot, "z")
        assert app.screen.maximized is None
        await press(app, pilot, "p")
        assert app.paused and "PAUSED" in app.header_text().plain
        await press(app, pilot, "p")
        assert not app.paused
        assert "live refresh paused" in action_log(app)

    drive(app, scenario)


def test_the_palette_runs_rollback(serving: Workspace, gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "ctrl+p")
        for key in "rollback":
            await pilot.press(key)
        await settle(app, pilot)
        await press(app, pilot, "enter")
        assert isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "y")

    drive(app, scenario)
    assert state(serving)[0] == "v1.0"
