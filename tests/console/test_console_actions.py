"""Every mutation through the console's keys and dialogs, judged by the engine's state."""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import Select

from console.app import BeastConsole
from console.dialogs import ConfirmScreen, DeployForm
from console.gateway import Gateway
from engine import Engine, Workspace
from tests.console.pilot import action_log, drive, make_app, press, settle, state


def test_rollback_asks_then_goes_back_to_the_previous_production(
    serving: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R")
        assert isinstance(app.screen, ConfirmScreen)
        assert "production v2.0 → v1.0 (100%)" in app.screen.proposal.changes
        assert state(serving)[0] == "v2.0"  # nothing happens before the answer
        await press(app, pilot, "y")
        assert "rolled back: production v2.0 → v1.0" in action_log(app)

    drive(app, scenario)
    production, _, actions = state(serving)
    assert production == "v1.0"
    assert actions[-1] == "rollback"
    assert Engine(serving).history()[-1].actor == "console-test"


def test_enter_on_the_dialog_cancels_because_cancel_is_focused(
    serving: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R")
        assert app.screen.focused is not None and app.screen.focused.id == "cancel"
        await press(app, pilot, "enter")
        assert not isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "R", "n")
        await press(app, pilot, "R", "escape")
        assert action_log(app).count("rollback: cancelled, nothing changed") == 3

    before = state(serving)
    drive(app, scenario)
    assert state(serving) == before


def test_promote_makes_the_candidate_production_recorded_as_forced(
    testing: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "P")
        assert isinstance(app.screen, ConfirmScreen)
        text = "\n".join(app.screen.proposal.context)
        assert "verdict: not enough data" in text
        assert "forced" in text
        await press(app, pilot, "y")

    drive(app, scenario)
    production, candidate, actions = state(testing)
    assert (production, candidate, actions[-1]) == ("v3.0", None, "promote")
    engine = Engine(testing)
    try:
        test = engine.experiment("retrain-v3")
        assert test.status == "promoted" and test.forced
    finally:
        engine.close()


def test_abort_ends_the_test_and_production_takes_all_traffic(
    testing: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "A")
        assert isinstance(app.screen, ConfirmScreen)
        assert "candidate v3.0 10% → 0%" in app.screen.proposal.changes
        await press(app, pilot, "y")

    drive(app, scenario)
    assert state(testing)[:2] == ("v2.0", None)
    engine = Engine(testing)
    try:
        assert engine.experiment("retrain-v3").status == "aborted"
        assert engine.status().deployments[0].traffic_bp == 10_000
    finally:
        engine.close()


def test_promote_and_abort_are_hidden_without_a_running_test(
    serving: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert not app.mutation_allowed("promote")
        assert not app.mutation_allowed("abort")
        await press(app, pilot, "P", "A")
        assert not isinstance(app.screen, ConfirmScreen)

    before = state(serving)
    drive(app, scenario)
    assert state(serving) == before


def test_deploy_form_starts_an_ab_test_with_the_selected_version(
    serving: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        # rows: v2.0 production, then registered v1.0, v3.0, v4.0
        await press(app, pilot, "j", "j")
        assert app.selected == "quality-predictor/v3.0"
        await press(app, pilot, "D")
        assert isinstance(app.screen, DeployForm)
        await press(app, pilot, "backspace", "backspace", "2", "5", "enter")
        assert isinstance(app.screen, ConfirmScreen)
        assert "A/B test ab-v3.0: candidate v3.0 at 25%" in app.screen.proposal.changes
        await press(app, pilot, "y")

    drive(app, scenario)
    assert state(serving)[:2] == ("v2.0", "v3.0")
    engine = Engine(serving)
    try:
        assert engine.experiment("ab-v3.0").traffic_bp == 2500
    finally:
        engine.close()


def test_deploy_form_as_production_and_a_bad_share_is_refused(
    serving: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "D")
        form = app.screen
        assert isinstance(form, DeployForm)
        await press(app, pilot, "backspace", "backspace", "0", "enter")  # 0% is no share
        assert app.screen is form
        assert "1–99" in str(form.query_one("#form-error").render())
        form.query_one("#form-version", Select).value = "v4.0"
        form.query_one("#form-mode", Select).value = "production"
        await settle(app, pilot)
        await pilot.click("#next")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "production v2.0 → v4.0 (100%)" in app.screen.proposal.changes
        await press(app, pilot, "y")

    drive(app, scenario)
    assert state(serving)[:2] == ("v4.0", None)


def test_a_state_changed_meanwhile_is_refused_not_acted_on(
    serving: Workspace, gateway: Gateway
) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "R")
        assert isinstance(app.screen, ConfirmScreen)
        other = Engine(serving, actor="someone-else")
        try:
            other.deploy(version="v4.0")  # while the dialog is open
        finally:
            other.close()
        await press(app, pilot, "y")
        assert "rollback: state changed, retry" in action_log(app)

    drive(app, scenario)
    production, _, actions = state(serving)
    assert production == "v4.0"
    assert actions.count("rollback") == 0


def test_retrain_starts_a_job_in_a_worker_process(serving: Workspace, gateway: Gateway) -> None:
    app = make_app(gateway)

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "T")
        assert isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "y")
        assert "retrain: job #1 started" in action_log(app)
        await press(app, pilot, "ctrl+r")
        assert app.data is not None and app.data.jobs
        assert app.data.jobs[0].id == 1

    drive(app, scenario)
    engine = Engine(serving)
    try:
        (job,) = engine.jobs()
        assert job.trigger and job.line == "quality-predictor"
        done = engine.wait_job(job.id, timeout_s=60)  # no worker left behind
        assert done.finished
    finally:
        engine.close()
