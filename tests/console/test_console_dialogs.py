"""The dialogs: the deploy form's labelled fields, the figures and alerts every confirm dialog
shows, and copy as command — the `beast …` that makes the same change from a shell."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shlex
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Label, Select, Static

from console.app import BeastConsole
from console.data import fetch
from console.dialogs import FIELDS, ConfirmScreen, DeployForm
from console.format import p_value
from console.gateway import Gateway
from console.proposals import command_line, firing_alerts, rollback
from console.screens import DetailsScreen
from engine import Engine, Workspace, sig
from tests.console import snapdata
from tests.console.pilot import action_log, drive, make_app, press, settle, state
from tests.helpers import REPO, history_of, model_path, set_config, train_model


def _revision(ws: Workspace) -> int:
    with closing(Engine(ws)) as engine:
        return engine.status().revisions["quality-predictor"]


def _dialog(app: BeastConsole) -> ConfirmScreen:
    assert isinstance(app.screen, ConfirmScreen)
    return app.screen


def _notices(app: BeastConsole) -> list[str]:
    return [n.message for n in app._notifications]


def run_copied(command: str) -> tuple[int, str]:
    """Run a copied command as a shell would: the installed `beast` script, argv by shlex."""
    argv = shlex.split(command)
    assert argv[0] == "beast"
    script = Path(sys.executable).parent / "beast"
    done = subprocess.run(
        [str(script), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
        env={k: v for k, v in os.environ.items() if k != "BEAST_HOME"},
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_c_copies_the_command_of_every_dialog(testing: Workspace) -> None:
    gateway = Gateway(testing, actor="console-test")
    root, rev = str(testing.root), _revision(testing)
    expect = f"--expect v2.0 --expect-revision {rev}"
    wanted = {
        "R": f"beast rollback {expect} --workspace {root}",
        "P": f"beast promote retrain-v3 --force {expect} --workspace {root}",
        "A": f"beast abort retrain-v3 {expect} --workspace {root}",
        "T": f"beast retrain --force --detach --workspace {root}",
    }

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        for key, command in wanted.items():
            await press(app, pilot, key)
            dialog = _dialog(app)
            assert dialog.command == command
            shown = str(dialog.query_one("#dialog-command", Static).render())
            assert command in shown.replace("\n", " ")
            await press(app, pilot, "c")
            assert app.clipboard == command  # what OSC 52 sent (App.copy_to_clipboard)
            assert f"copied: {command}" in _notices(app)
            assert app.screen is dialog  # copying answers nothing
            await press(app, pilot, "escape")

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
    assert state(testing)[:2] == ("v2.0", "v3.0")  # copying changed nothing


def _copy_then_cancel(ws: Workspace, *keys: str) -> str:
    """Open a dialog with `keys`, copy its command, cancel; the command copied."""
    gateway = Gateway(ws, actor="console-test")
    copied: list[str] = []

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, *keys)
        _dialog(app)
        await press(app, pilot, "c", "escape")
        assert not isinstance(app.screen, ConfirmScreen)
        assert "cancelled, nothing changed" in action_log(app)
        copied.append(app.clipboard)

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
    return copied[0]


def test_the_copied_rollback_rolls_back_once_even_pasted_twice(
    serving: Workspace,
) -> None:
    before = state(serving)
    command = _copy_then_cancel(serving, "R")
    assert state(serving) == before
    code, out = run_copied(command)
    assert code == 0, out
    assert state(serving)[0] == "v1.0"
    assert history_of(serving)[-1].action == "rollback"
    code, out = run_copied(command)  # pasted twice: its --expect makes it once, not twice
    assert code == 0 and "already rolled back" in out and "nothing done" in out, out
    assert state(serving)[2].count("rollback") == 1


def test_a_copied_command_is_refused_once_someone_else_changed_the_line(
    serving: Workspace,
) -> None:
    command = _copy_then_cancel(serving, "R")
    with closing(Engine(serving, actor="someone-else")) as other:
        other.deploy(version="v4.0")  # after the dialog showed v2.0
    code, out = run_copied(command)
    assert code == 1 and "state changed since you looked, retry" in out, out
    assert len(out.strip().splitlines()) == 1
    assert state(serving)[0] == "v4.0"


def test_the_copied_promote_is_forced_like_the_dialog(testing: Workspace) -> None:
    code, out = run_copied(_copy_then_cancel(testing, "P"))
    assert code == 0, out
    assert state(testing)[:2] == ("v3.0", None)
    with closing(Engine(testing)) as engine:
        test = engine.experiment("retrain-v3")
        assert test.status == "promoted" and test.forced


def test_the_copied_abort_ends_the_test(testing: Workspace) -> None:
    code, out = run_copied(_copy_then_cancel(testing, "A"))
    assert code == 0, out
    assert state(testing)[:2] == ("v2.0", None)
    with closing(Engine(testing)) as engine:
        assert engine.experiment("retrain-v3").status == "aborted"


def test_the_copied_deploy_starts_the_same_ab_test(serving: Workspace) -> None:
    # rows: v2.0 production, registered v1.0, v3.0: Cancel has the focus, Traffic % is two back
    keys = ("j", "j", "D", "shift+tab", "shift+tab", "backspace", "backspace", "2", "5", "enter")
    command = _copy_then_cancel(serving, *keys)
    assert command.startswith("beast deploy --version v3.0 --traffic 25 --ab-test ab-v3.0 ")
    code, out = run_copied(command)
    assert code == 0, out
    assert state(serving)[:2] == ("v2.0", "v3.0")
    with closing(Engine(serving)) as engine:
        assert engine.experiment("ab-v3.0").traffic_bp == 2500


def test_command_line_names_the_workspace_only_when_a_bare_beast_would_not_find_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BEAST_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    here = tmp_path / ".beast-mode"
    assert command_line(("abort", "t1"), here) == "beast abort t1"
    odd = tmp_path / "my ws"
    assert command_line(("abort", "t1"), odd) == f"beast abort t1 --workspace '{odd}'"
    monkeypatch.setenv("BEAST_HOME", str(odd))
    assert command_line(("abort", "t1"), odd) == "beast abort t1"


def test_a_second_line_adds_model_and_the_alerts_of_other_lines_are_counted(
    serving: Workspace,
) -> None:
    other = train_model(serving.models_dir / "other-line-v1.0.json", seed=9)
    with closing(Engine(serving, actor="setup")) as engine:
        engine.register(other)
        engine.deploy(version="v1.0", model="other-line")
        engine.monitoring.note_log_drops(4, 4)  # a workspace-wide alert ("*")
    gateway = Gateway(serving)
    try:
        data = fetch(gateway, 0.0)
    finally:
        gateway.close()
    assert data.report is not None
    (wide,) = data.report.alerts
    elsewhere = {**wide, "id": 99, "line": "other-line", "version": "v1.0", "message": "x"}
    report = dataclasses.replace(data.report, alerts=(wide, elsewhere))
    data = dataclasses.replace(data, report=report)
    proposal = rollback(data, "quality-predictor")
    assert proposal.argv[:3] == ("rollback", "--model", "quality-predictor")
    head, *shown = firing_alerts(data, "quality-predictor")
    assert head == ("alerts firing now: 1 on quality-predictor or workspace-wide; 1 on other lines")
    assert len(shown) == 1 and "prediction log lost 4" in shown[0]


def test_the_verdict_figures_are_the_reports_own_per_arm(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Predictions and labelled predictions per arm, labelled as such, from the report the
    A/B pane reads: the dialog's figures equal the engine's for the same window."""
    snapdata.build(registered, monkeypatch)
    with closing(Engine(registered)) as engine:
        (test,) = engine.report(window="1h").experiments
    gateway = Gateway(registered, actor="ops")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "P")
        text = "\n".join(_dialog(app).proposal.context)
        for arm, version, window in (
            ("control", "v2.0", test.control),
            ("candidate", "v3.0", test.candidate),
        ):
            line = f"{arm} {version}: {window.predictions:,} predictions, "
            assert f"{line}{window.labelled:,} labelled" in text
        assert f"verdict: {test.verdict.outcome}" in text
        v = test.verdict
        assert (
            f"accuracy diff {sig(v.diff)} [{sig(v.lo)}, {sig(v.hi)}] (always-valid 95%)"
            f" · margin ±{v.margin:g} · p = {p_value(v.p)}"
        ) in text
        await press(app, pilot, "escape")

    try:
        drive(make_app(gateway, clock=lambda: snapdata.FROZEN), scenario)
    finally:
        gateway.close()


def test_the_deploy_form_labels_its_fields_and_names_where_it_deploys(
    serving: Workspace,
) -> None:
    set_config(serving, environment='"staging"')
    gateway = Gateway(serving, actor="console-test")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "D")
        form = app.screen
        assert isinstance(form, DeployForm)
        title = str(form.query_one("#dialog Static", Static).render())
        assert "quality-predictor" in title and "STAGING" in title
        labels = [str(label.render()) for label in form.query(".form-label").results(Label)]
        assert labels == ["Version", "Role", "Traffic %", "Test name"]
        hints = [str(h.render()) for h in form.query(".form-hint").results(Static)]
        assert hints == [hint for _, _, hint in FIELDS] and all(hints)
        assert form.focused is not None and form.focused.id == "cancel"
        form.query_one("#form-mode", Select).value = "production"
        await settle(app, pilot)
        assert not form.query_one("#row-share").display
        assert not form.query_one("#row-test").display
        await press(app, pilot, "enter")  # on Cancel
        assert not isinstance(app.screen, DeployForm)
        assert "deploy: cancelled" in action_log(app)

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
    assert state(serving)[0] == "v2.0"


def test_version_details_round_every_number(serving: Workspace) -> None:
    """Issue 15: details printed a sidecar's raw floats (`0.8208333333333333`)."""
    sidecar = model_path(serving, "v2.0").with_name("quality-predictor-v2.0.json.lineage")
    sidecar.write_text(
        json.dumps({"validation": {"accuracy": 0.8208333333333333, "mae": 2.72489}, "rows": 16000}),
        encoding="utf-8",
    )
    gateway = Gateway(serving, actor="console-test")

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "enter")  # the first row: production v2.0
        assert isinstance(app.screen, DetailsScreen)
        out = io.StringIO()
        console = Console(file=out, width=120, color_system=None)
        for section in app.screen.query(".details-section").results(Static):
            console.print(section.content)
        text = out.getvalue()
        assert re.search(r"validation\.accuracy\s+0\.821\b", text), text
        assert re.search(r"validation\.mae\s+2\.72\b", text) and re.search(r"rows\s+16,000", text)
        assert not re.search(r"\d\.\d{4,}", text), text  # no raw float anywhere

    try:
        drive(make_app(gateway), scenario)
    finally:
        gateway.close()
