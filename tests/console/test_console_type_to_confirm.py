"""Type-to-confirm: a production change runs only once the new production's name is typed."""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import Button, Input

from console.app import BeastConsole
from console.dialogs import ConfirmScreen
from console.gateway import Gateway
from engine import Workspace
from tests.console.pilot import action_log, drive, make_app, press, state
from tests.helpers import set_config


def _dialog(app: BeastConsole) -> ConfirmScreen:
    assert isinstance(app.screen, ConfirmScreen)
    return app.screen


def test_rollback_waits_for_the_exact_name_and_y_is_just_a_letter(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R")
        dialog = _dialog(app)
        assert dialog.required == "v1.0"  # the version that becomes production
        assert dialog.focused is not None and dialog.focused.id == "confirm-name"
        assert dialog.query_one("#ok", Button).disabled
        await press(app, pilot, "y", "enter")  # `y` is typed into the field, not a yes
        assert app.screen is dialog and state(serving)[0] == "v2.0"
        assert "type v1.0 exactly" in str(dialog.query_one("#confirm-prompt").render())
        dialog.query_one("#confirm-name", Input).value = ""
        await press(app, pilot, "v", "2", ".", "0", "enter")  # today's production: wrong
        assert app.screen is dialog and state(serving)[0] == "v2.0"
        dialog.query_one("#confirm-name", Input).value = ""
        await press(app, pilot, "v", "1", ".", "0")
        assert not dialog.query_one("#ok", Button).disabled
        await press(app, pilot, "enter")
        assert "rolled back: production v2.0 → v1.0" in action_log(app)

    drive(make_app(gateway, type_to_confirm=True), scenario)
    assert state(serving)[0] == "v1.0"


def test_escape_cancels_a_typed_confirmation_and_nothing_changes(
    serving: Workspace, gateway: Gateway
) -> None:
    before = state(serving)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R", "v", "1", ".", "0", "escape")
        assert not isinstance(app.screen, ConfirmScreen)
        assert "rollback: cancelled, nothing changed" in action_log(app)

    drive(make_app(gateway, type_to_confirm=True), scenario)
    assert state(serving) == before


def test_promote_asks_for_the_candidate_and_abort_needs_only_y(
    testing: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "P")
        assert _dialog(app).required == "v3.0"
        await press(app, pilot, "escape", "A")
        dialog = _dialog(app)  # the candidate goes to 0%: production does not change
        assert dialog.required is None and dialog.focused is not None
        assert dialog.focused.id == "cancel"
        await press(app, pilot, "y")

    drive(make_app(gateway, type_to_confirm=True), scenario)
    production, candidate, actions = state(testing)
    assert (production, candidate, actions[-1]) == ("v2.0", None, "abort")


def test_the_workspace_config_turns_it_on(serving: Workspace) -> None:
    set_config(serving, type_to_confirm="true")
    gateway = Gateway(serving, actor="console-test")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R", "y")
        assert _dialog(app).required == "v1.0"
        await press(app, pilot, "escape")

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
    assert state(serving)[0] == "v2.0"


def test_c_is_a_letter_in_the_name_field_and_copies_once_tabbed_out(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R", "c")
        dialog = _dialog(app)
        assert dialog.query_one("#confirm-name", Input).value == "c"
        assert app.clipboard == ""
        await press(app, pilot, "tab", "c")
        assert app.clipboard == dialog.command
        assert dialog.command.startswith("beast rollback --expect v2.0 --expect-revision 2")
        await press(app, pilot, "escape")

    drive(make_app(gateway, type_to_confirm=True), scenario)
    assert state(serving)[0] == "v2.0"
