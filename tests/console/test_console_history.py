"""The History view (`H`): every change newest first; `enter` shows the evidence it was
decided on, drawn generically (its keys are the engine's), numbers rounded for people."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Mapping
from contextlib import closing
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from console.app import BeastConsole
from console.gateway import Gateway
from console.history import NO_EVIDENCE, EvidenceScreen, HistoryScreen, evidence_view
from engine import Engine, Workspace
from tests.console.pilot import drive, make_app, press

LINE = "quality-predictor"
EVIDENCE: dict[str, Any] = {
    "health": "critical",
    "alerts": [
        {"severity": "critical", "version": "v3.0", "message": "accuracy 0.747 < 0.75"},
        {"severity": "warning", "version": "v2.0", "message": "model drift 41.9% > 10%"},
    ],
    "verdict": {
        "outcome": "control wins",
        "n": {"control": 1653, "candidate": 171},
        "p": {"accuracy": 0.0004128, "mae": 0.03141592},
    },
    "drift": {"coverage": 0.8208333333333333, "churn": 0.0123456},
    "versions": [
        {
            "version": "v3.0",
            "findings": [{"metric": "accuracy", "value": 0.7466666, "threshold": 0.75}],
            "drift": {"model": 0.1234567, "features": [{"name": "churn", "psi": 0.31234}]},
        }
    ],
}


def append_with_evidence(
    ws: Workspace, evidence: Mapping[str, Any] | None, note: str = "evidence test"
) -> int:
    """A history row written through the store, as the engine writes one with its change:
    the line's state and revision move with it, so the workspace's invariants hold (a
    rollback that stays where it is: the line must serve no candidate)."""
    with closing(Engine(ws)) as engine:
        with engine.store.write() as tx:
            line_state = tx.deployments.state(LINE)
            assert line_state is not None
            now = line_state.snapshot()
            entry = tx.history.append(
                line=LINE,
                at="2026-01-15T12:00:00.000Z",
                actor="ops",
                action="rollback",
                version=now.production,
                experiment=None,
                from_state=now,
                to_state=now,
                note=note,
                evidence=evidence,
            )
            tx.deployments.put_state(dataclasses.replace(line_state, revision=entry.id))
        engine.export_history()
        return entry.id


def _text(renderable: Any, width: int = 100) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_evidence_is_drawn_generically_with_numbers_for_people() -> None:
    text = _text(evidence_view(EVIDENCE))
    assert "health: critical" in text
    assert re.search(r"severity\s+version\s+message", text)  # a list of objects: a table
    assert re.search(r"critical\s+v3.0\s+accuracy 0.747 < 0.75", text)
    assert "verdict:" in text and "  outcome: control wins" in text
    assert "    control: 1,653" in text and "    candidate: 171" in text  # counts whole
    assert "    accuracy: 0.000413" in text and "    mae: 0.0314" in text
    assert "  coverage: 0.821" in text and "  churn: 0.0123" in text
    assert "0.8208333" not in text
    # objects holding objects: a block each, their plain lists still tables
    assert "versions:" in text and "  - v3.0" in text and "    findings:" in text
    assert re.search(r"accuracy\s+0\.747\s+0\.750?", text) and "      model: 0.123" in text
    assert re.search(r"churn\s+0\.312", text)
    assert _text(evidence_view(None)).strip() == NO_EVIDENCE


def test_h_lists_changes_newest_first_and_enter_shows_the_evidence(
    serving: Workspace,
) -> None:
    with_evidence = append_with_evidence(serving, EVIDENCE)
    without = append_with_evidence(serving, None, note="nothing measured")
    gateway = Gateway(serving, actor="console-test")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "H")
        history = app.screen
        assert isinstance(history, HistoryScreen)
        table = history.query_one(DataTable)
        ids = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert ids == [str(without), str(with_evidence), "2", "1"]  # newest first
        cells = [str(c) for c in table.get_row_at(1)]  # one line: named in the title only
        assert cells[1:4] == ["2026-01-15 12:00", "ops", "rollback"]
        assert cells[4] == "v2.0 → v2.0" and cells[6] == "yes" and cells[7] == "evidence test"
        title = str(history.query_one("#history-title", Static).content)
        assert title == f"History of {LINE} · 4 changes, newest first"
        await press(app, pilot, "enter")  # the newest: no evidence kept
        shown = app.screen
        assert isinstance(shown, EvidenceScreen)
        assert NO_EVIDENCE in str(shown.query_one("#evidence-body", Static).render())
        await press(app, pilot, "escape", "j", "enter")
        shown = app.screen
        assert isinstance(shown, EvidenceScreen) and shown.entry.id == with_evidence
        body = _text(shown.query_one("#evidence-body", Static).content)
        assert "health: critical" in body and "control: 1,653" in body
        await press(app, pilot, "escape")
        assert app.screen is history
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, HistoryScreen)

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()


def test_history_and_evidence_keys_show_in_their_footer(serving: Workspace) -> None:
    append_with_evidence(serving, EVIDENCE)
    gateway = Gateway(serving, actor="console-test")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "H")
        keys = {b.binding.id for b in app.screen.active_bindings.values() if b.binding.show}
        assert {"history-evidence", "history-close"} <= keys
        await press(app, pilot, "enter")
        keys = {b.binding.id for b in app.screen.active_bindings.values() if b.binding.show}
        assert "evidence-close" in keys

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
