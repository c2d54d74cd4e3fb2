"""The console shows text from file names and the store escaped (issue 12 §4).

Rows written before the edge checks existed — a history actor with `ESC[2J`, a model file
renamed with a newline, a bidi override and a `[/]` (Rich markup) in its name, an alert and a
job trigger quoting them — must draw as `\\x1b[2J`, `\\n`, `\\u202e` and a literal `[/]`:
never a second line, never a terminal control, never taken for markup (a `[/]` cell crashed
the table before, a raw ESC reached the terminal).
"""

from __future__ import annotations

import io
import sqlite3

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from console.app import BeastConsole
from console.dialogs import ConfirmScreen
from console.gateway import Gateway
from console.screens import DetailsScreen
from engine import Workspace
from engine.core import text
from engine.core.clock import utc_now
from engine.store.sqlite.tx import SqliteTx
from tests.console.pilot import action_log, drive, make_app, press
from tests.retrain_helpers import queue_job
from tests.test_text_edges import rewrite_history_row

EVIL_FILE = "evil[bold]\n\u202eline-v2.0.json"
ACTOR = "eve\x1b[2J"
ALERT = "accuracy fell [/]on evil\nline\x1b[31m"
TRIGGER = "manual\x1b[2J\u202e"
RAW = ("\x1b", "\u202e")


def _plant(ws: Workspace) -> None:
    """Production v2.0 served from a file with an evil name; an old history row, an alert and
    a job that quote unsafe text, as a store written before the edge checks would hold."""
    rewrite_history_row(ws, note="old\nnote", actor=ACTOR, entry=2)  # v1.0 → v2.0
    conn = sqlite3.connect(ws.db_path)
    try:
        with conn:
            (path,) = conn.execute(
                "SELECT a.path FROM artifacts a JOIN versions v ON v.artifact_id = a.id"
                " WHERE v.name = 'v2.0'"
            ).fetchone()
            (ws.models_dir / path).rename(ws.models_dir / EVIL_FILE)
            conn.execute("UPDATE artifacts SET path = ? WHERE path = ?", (EVIL_FILE, path))
            now = utc_now()
            conn.execute(
                "INSERT INTO alerts (line, version, metric, severity, value, threshold, message,"
                " first_seen, last_seen) VALUES ('quality-predictor', 'v2.0', 'accuracy',"
                " 'warning', 0.5, 0.7, ?, ?, ?)",
                (ALERT, now, now),
            )
            queue_job(SqliteTx(conn), trigger=TRIGGER)
    finally:
        conn.close()


def _cells(app: BeastConsole, table_id: str) -> list[str]:
    table = app.query_one(f"#{table_id}", DataTable)
    return [str(cell) for i in range(table.row_count) for cell in table.get_row_at(i)]


def _screen_text(app: BeastConsole) -> str:
    """What the screen's Static widgets hold, rendered by Rich as plain text."""
    out = Console(file=io.StringIO(), width=240, record=True, color_system=None)
    for static in app.screen.query(Static):
        out.print(static.content)
    return out.export_text(styles=False)


def assert_safe(shown: str) -> None:
    for char in RAW:
        assert char not in shown, f"raw {char!r} on screen: {shown!r}"


def test_stored_text_draws_escaped_in_panes_details_dialog_and_log(
    serving: Workspace, gateway: Gateway
) -> None:
    _plant(serving)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        alerts = _cells(app, "alerts-table")
        assert_safe("".join(alerts))
        assert "accuracy fell [/]on evil\\nline\\x1b[31m" in alerts

        jobs = _cells(app, "jobs-table")
        assert_safe("".join(jobs))
        assert "manual\\x1b[2J\\u202e" in jobs

        await press(app, pilot, "enter")  # details of production v2.0
        assert isinstance(app.screen, DetailsScreen)
        shown = _screen_text(app)
        assert_safe(shown)
        assert "evil[bold]\\n\\u202eline-v2.0.json" in shown
        assert "eve\\x1b[2J" in shown
        await press(app, pilot, "escape")

        await press(app, pilot, "R")  # the rollback dialog quotes the firing alert
        assert isinstance(app.screen, ConfirmScreen)
        context = str(app.screen.query_one("#dialog-alerts", Static).render())
        assert_safe(context)
        assert "accuracy fell [/]on evil\\nline\\x1b[31m" in context
        await press(app, pilot, "escape")

        app.log_action(f"refused: {EVIL_FILE}")
        last = action_log(app).splitlines()[-1]
        assert last.endswith("refused: evil[bold]\\n\\u202eline-v2.0.json")
        assert_safe(action_log(app))

    drive(make_app(gateway), scenario, size=(200, 50))  # room for every alert's whole text


def test_escaping_leaves_ordinary_names_alone(serving: Workspace, gateway: Gateway) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        versions = _cells(app, "deployments-table")
        assert "v2.0" in versions and "v1.0" in versions
        assert all(text.escape(cell) == cell for cell in versions)

    drive(make_app(gateway), scenario)
