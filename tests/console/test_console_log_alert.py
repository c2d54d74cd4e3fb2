"""The console's Alerts pane shows the prediction log's loss alert while it fires (issue 12
§1): it reads the alerts table, like `beast monitor`, and the alert is not for any version."""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from console.app import BeastConsole
from console.dialogs import ConfirmScreen
from console.gateway import Gateway
from engine import Engine, Workspace
from tests.console.pilot import drive, make_app, press


def test_the_alerts_pane_shows_a_firing_prediction_log_alert(
    serving: Workspace, gateway: Gateway
) -> None:
    engine = Engine(serving)
    try:
        engine.monitoring.note_log_drops(4, 4)  # what the engine's loop records on a loss
        engine.monitoring.note_log_drops(0, 4)  # and its next round, with nothing new
    finally:
        engine.close()
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "ctrl+r")
        table = app.query_one("#alerts-table", DataTable)
        cells = [
            " ".join(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)
        ]
        lost = [c for c in cells if "prediction log lost 4 acknowledged" in c]
        assert len(lost) == 1 and "firing" in lost[0] and "CRIT" in lost[0].upper(), cells

    drive(app, scenario, size=(200, 50))  # room for the whole message: it is cut at 120


def test_every_dialog_lists_the_workspace_wide_alert_the_alerts_pane_shows(
    testing: Workspace,
) -> None:
    """Issue 15: the `T` dialog said "alerts: none firing" while the Alerts pane showed the
    prediction log's critical alert: it fires for the workspace (line "*"), not for a line."""
    engine = Engine(testing)
    try:
        engine.monitoring.note_log_drops(4, 4)
    finally:
        engine.close()
    gateway = Gateway(testing, actor="console-test")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "ctrl+r")
        for key in ("R", "P", "A", "T"):
            await press(app, pilot, key)
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen), key
            shown = str(dialog.query_one("#dialog-alerts", Static).render())
            assert "alerts firing now: 1 on quality-predictor or workspace-wide" in shown, key
            assert "critical workspace: prediction log lost 4 acknowledged" in shown, key
            await press(app, pilot, "escape")

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
