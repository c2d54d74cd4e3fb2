"""Living with the engine: its daemon state in the header, resizes, and the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from textual.pilot import Pilot

from console.app import BeastConsole
from console.gateway import Gateway
from engine import BeastError, Engine, Workspace
from engine.cli.console import parse_keymap
from engine.core.engine_lock import EngineLock
from tests.console.pilot import drive, make_app, press
from tests.helpers import beast, set_config


def test_the_header_says_whether_the_engine_runs(serving: Workspace, gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert "engine ○ not running" in app.header_text().plain
        lock = EngineLock(serving).acquire()  # what a running `beast engine` holds
        try:
            await press(app, pilot, "ctrl+r")
            assert f"engine ● running (pid {os.getpid()})" in app.header_text().plain
        finally:
            lock.release()
        await press(app, pilot, "ctrl+r")
        assert "engine ○ not running" in app.header_text().plain

    drive(app, scenario)


def test_resizing_to_tiny_and_back_switches_the_layout(gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert app.screen.has_class("-wide")
        await pilot.resize_terminal(20, 5)
        await press(app, pilot, "ctrl+r")
        assert app.screen.has_class("-narrow")
        await pilot.resize_terminal(120, 40)
        await press(app, pilot, "ctrl+r")
        assert app.screen.has_class("-wide")
        assert app.data is not None and app.data.status.deployments

    drive(app, scenario)


def test_keymap_option_is_parsed_and_checked() -> None:
    assert parse_keymap("rollback=ctrl+b, promote=ctrl+o") == {
        "rollback": "ctrl+b",
        "promote": "ctrl+o",
    }
    assert parse_keymap(None) == {}
    with pytest.raises(BeastError, match="unknown key id 'nope'"):
        parse_keymap("nope=x")
    with pytest.raises(BeastError, match="is not ID=KEY"):
        parse_keymap("rollback")


def test_bad_console_options_are_one_line_refusals(serving: Workspace) -> None:
    done = beast(serving, "console", "--keymap", "nope=x")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("beast: --keymap: unknown key id 'nope'")
    done = beast(serving, "dashboard", "--interval", "0")
    assert (done.returncode, done.stderr.strip()) == (
        1,
        "beast: --interval must be a positive number of seconds, not 0",
    )


def test_refreshes_go_on_while_a_dialog_or_screen_is_open(gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        for opener in ("R", "question_mark", "enter"):
            await press(app, pilot, opener)
            top = app.screen
            assert top is not app.screen_stack[0]
            app.request_poll()  # as the timer would, and the header's clock tick
            app.on_clock_tick()
            await press(app, pilot)
            assert app.screen is top and app.is_running
            await press(app, pilot, "escape")
        assert app.screen is app.screen_stack[0]

    drive(app, scenario)


def test_a_tick_or_a_poll_landing_after_exit_draws_nothing(gateway: Gateway) -> None:
    # CI: the clock's timer fired while the app tore its screens down, and the header's draw
    # read `screen_stack[0]` of an empty stack (IndexError out of the event loop).
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot)

    drive(app, scenario)
    assert not app.screen_stack
    app.on_clock_tick()
    app.log_action("a late result")
    app._draw()
    app._draw_metrics()


def test_lineage_reads_the_sidecar_facts_without_the_reference(serving: Workspace) -> None:
    engine = Engine(serving)
    try:
        model = Path(engine.lineage("v2.0").artifact.path)
        sidecar = model.with_name(model.name + ".lineage")
        sidecar.write_text(
            json.dumps(
                {"reference": {"big": [1, 2, 3]}, "validation": {"accuracy": 0.9}, "rows": 4800}
            ),
            encoding="utf-8",
        )
        found = engine.lineage("v2.0")
        assert found.facts == (("validation.accuracy", "0.9"), ("rows", "4800"))
        assert engine.rollback_target() == "v1.0"
    finally:
        engine.close()


def test_the_workspace_names_its_environment_in_the_header_and_every_dialog(
    serving: Workspace,
) -> None:
    set_config(serving, environment='"production"')
    gateway = Gateway(serving, actor="console-test")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert app.header_text().plain.startswith(" beast  PRODUCTION ")
        await press(app, pilot, "R")
        title = app.screen.query_one("#dialog-title").render()
        assert "· ws · PRODUCTION" in str(title)
        await press(app, pilot, "escape")

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
