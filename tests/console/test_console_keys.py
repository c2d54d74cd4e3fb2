"""Read-only mode, focus, filter, help, details, zoom, pause, remapped keys, the palette."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from console.app import BeastConsole
from console.commands import ConsoleCommands
from console.dialogs import ConfirmScreen
from console.gateway import Gateway, ReadOnlyRefused
from console.keybar import KeyBar
from console.screens import DetailsScreen, HelpScreen
from engine import Engine, Expect, Workspace
from tests.console.pilot import (
    action_log,
    drive,
    make_app,
    notices,
    press,
    rows,
    settle,
    state,
)
from tests.helpers import model_path, train_model


def test_readonly_hides_the_mutation_keys_and_each_says_why(testing: Workspace) -> None:
    gateway = Gateway(testing, readonly=True)
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert "RO read-only" in app.header_text().plain
        footer = {word for _, word, _, _ in app.query_one(KeyBar).items}
        assert footer.isdisjoint({"Rollback", "Promote", "Abort", "Retrain", "Deploy"})
        assert {"Help", "Quit"} <= footer
        await press(app, pilot, "R", "P", "A", "T", "D")
        assert not isinstance(app.screen, ConfirmScreen)
        said = notices(app)
        for action in ("rollback", "promote", "abort", "retrain", "deploy"):
            assert f"read-only console: {action} refused" in said
            assert not app.mutation_allowed(action)
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


def _said(ws: Workspace, *keys: str) -> tuple[list[str], dict[str, str]]:
    """(the notices after pressing `keys`, how the footer draws each key), nothing changed."""
    gateway = Gateway(ws, actor="console-test")
    app = make_app(gateway)
    shown: dict[str, str] = {}

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        shown.update({key: how for key, _, how, _ in app.query_one(KeyBar).items})
        await press(app, pilot, *keys)
        assert not isinstance(app.screen, ConfirmScreen)

    before = state(ws)
    try:
        drive(app, scenario)
    finally:
        gateway.close()
    assert state(ws) == before
    return notices(app), shown


def test_promote_and_abort_without_a_test_say_so_and_are_dimmed(serving: Workspace) -> None:
    said, shown = _said(serving, "P", "A")
    assert said == ["P: no A/B test is running", "A: no A/B test is running"]
    assert shown["P"] == shown["A"] == "dim" and shown["R"] == shown["T"] == "on"


def test_rollback_with_nothing_deployed_says_so(registered: Workspace) -> None:
    said, shown = _said(registered, "R")
    assert said == ["R: nothing is deployed"] and shown["R"] == "dim"


def test_rollback_without_a_target_says_why(registered: Workspace) -> None:
    engine = Engine(registered, actor="setup")
    try:
        engine.deploy(version="v1.0")
    finally:
        engine.close()
    said, _ = _said(registered, "R")
    assert len(said) == 1 and said[0].startswith("R: no rollback target ("), said


def test_deploy_with_no_free_version_says_so(workspace: Workspace) -> None:
    path = train_model(model_path(workspace, "v1.0"), seed=1)
    engine = Engine(workspace, actor="setup")
    try:
        engine.register(path)
        engine.deploy(version="v1.0")
    finally:
        engine.close()
    said, shown = _said(workspace, "D")
    assert said == ["D: no free version to deploy (every registered one is serving)"]
    assert shown["D"] == "dim"


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


def test_z_with_no_pane_focused_says_so(gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        app.set_focus(None)
        await press(app, pilot, "z")
        assert app.screen.maximized is None
        assert notices(app) == ["z: focus a pane first (1–5)"]

    drive(app, scenario)


@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
def test_i_writes_the_incident_report_where_the_console_was_started(
    testing: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readonly: bool
) -> None:
    """`I` is `beast report` from the console: the Markdown and its JSON in the working
    directory, the notice naming the file; it only reads, so a read-only console writes it."""
    monkeypatch.chdir(tmp_path)
    gateway = Gateway(testing, readonly=readonly, actor="console-test")
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "I")
        written = sorted(tmp_path.glob("beast-report-*"))
        assert [p.suffix for p in written] == [".json", ".md"]
        assert f"report written: {written[1]} (and its .json)" in notices(app)
        assert "quality-predictor" in written[1].read_text()

    before = state(testing)
    try:
        drive(app, scenario)
    finally:
        gateway.close()
    assert state(testing) == before


def test_i_says_why_when_the_report_cannot_be_written(
    testing: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # the directory the console was started in no longer exists
    gateway = Gateway(testing, actor="console-test")
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "I")
        assert any(n.startswith("report refused: ") for n in notices(app)), notices(app)

    try:
        drive(app, scenario)
    finally:
        gateway.close()
