"""Every mutation through the console's keys and dialogs, judged by the engine's state."""

from __future__ import annotations

from contextlib import closing

from textual.pilot import Pilot
from textual.widgets import Select

from console.app import BeastConsole
from console.dialogs import ConfirmScreen, DeployForm
from console.gateway import Gateway
from engine import Engine, Workspace
from tests.console.pilot import Scenario, action_log, drive, make_app, press, settle, state
from tests.helpers import history_of


async def open_confirm(app: BeastConsole, pilot: Pilot[None], *keys: str) -> ConfirmScreen:
    """Press `keys`, which must open the confirmation dialog; the dialog, not yet answered."""
    await press(app, pilot, *keys)
    assert isinstance(app.screen, ConfirmScreen)
    return app.screen


def drive_changing_nothing(ws: Workspace, gateway: Gateway, scenario: Scenario) -> None:
    """Run `scenario` in a fresh console; production, candidate and history stay as they were."""
    before = state(ws)
    drive(make_app(gateway), scenario)
    assert state(ws) == before


def test_rollback_asks_then_goes_back_to_the_previous_production(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        dialog = await open_confirm(app, pilot, "R")
        assert "production v2.0 → v1.0 (100%)" in dialog.proposal.changes
        assert state(serving)[0] == "v2.0"  # nothing happens before the answer
        await press(app, pilot, "y")
        assert "rolled back: production v2.0 → v1.0" in action_log(app)

    drive(make_app(gateway), scenario)
    production, _, actions = state(serving)
    assert production == "v1.0"
    assert actions[-1] == "rollback"
    assert history_of(serving)[-1].actor == "console-test"


def test_enter_on_the_dialog_cancels_because_cancel_is_focused(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        dialog = await open_confirm(app, pilot, "R")
        assert dialog.focused is not None and dialog.focused.id == "cancel"
        await press(app, pilot, "enter")
        assert not isinstance(app.screen, ConfirmScreen)
        await press(app, pilot, "R", "n")
        await press(app, pilot, "R", "escape")
        assert action_log(app).count("rollback: cancelled, nothing changed") == 3

    drive_changing_nothing(serving, gateway, scenario)


def test_promote_makes_the_candidate_production_recorded_as_forced(
    testing: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        dialog = await open_confirm(app, pilot, "P")
        text = "\n".join(dialog.proposal.context)
        assert "verdict: not enough data" in text
        assert "forced" in text
        await press(app, pilot, "y")

    drive(make_app(gateway), scenario)
    production, candidate, actions = state(testing)
    assert (production, candidate, actions[-1]) == ("v3.0", None, "promote")
    with closing(Engine(testing)) as engine:
        test = engine.experiment("retrain-v3")
        assert test.status == "promoted" and test.forced


def test_abort_ends_the_test_and_production_takes_all_traffic(
    testing: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        dialog = await open_confirm(app, pilot, "A")
        assert "candidate v3.0 10% → 0%" in dialog.proposal.changes
        await press(app, pilot, "y")

    drive(make_app(gateway), scenario)
    assert state(testing)[:2] == ("v2.0", None)
    with closing(Engine(testing)) as engine:
        assert engine.experiment("retrain-v3").status == "aborted"
        assert engine.status().deployments[0].traffic_bp == 10_000


def test_promote_and_abort_are_hidden_without_a_running_test(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert not app.mutation_allowed("promote")
        assert not app.mutation_allowed("abort")
        await press(app, pilot, "P", "A")
        assert not isinstance(app.screen, ConfirmScreen)

    drive_changing_nothing(serving, gateway, scenario)


def test_deploy_form_starts_an_ab_test_with_the_selected_version(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        # rows: v2.0 production, then registered v1.0, v3.0, v4.0
        await press(app, pilot, "j", "j")
        assert app.selected == "quality-predictor/v3.0"
        await press(app, pilot, "D")
        form = app.screen
        assert isinstance(form, DeployForm)
        assert form.focused is not None and form.focused.id == "cancel"  # enter cancels
        await press(app, pilot, "shift+tab", "shift+tab")  # back to Traffic %
        dialog = await open_confirm(app, pilot, "backspace", "backspace", "2", "5", "enter")
        assert "A/B test ab-v3.0: candidate v3.0 at 25%" in dialog.proposal.changes
        await press(app, pilot, "y")

    drive(make_app(gateway), scenario)
    assert state(serving)[:2] == ("v2.0", "v3.0")
    with closing(Engine(serving)) as engine:
        assert engine.experiment("ab-v3.0").traffic_bp == 2500


def test_deploy_form_as_production_and_a_bad_share_is_refused(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "D")
        form = app.screen
        assert isinstance(form, DeployForm)
        await press(app, pilot, "shift+tab", "shift+tab")  # Cancel has the focus: to Traffic %
        await press(app, pilot, "backspace", "backspace", "0", "enter")  # 0% is no share
        assert app.screen is form
        assert "1–99" in str(form.query_one("#form-error").render())
        form.query_one("#form-version", Select).value = "v4.0"
        form.query_one("#form-mode", Select).value = "production"
        await settle(app, pilot)
        await pilot.click("#next")
        await settle(app, pilot)
        dialog = await open_confirm(app, pilot)  # no key to press: the click opened it
        assert "production v2.0 → v4.0 (100%)" in dialog.proposal.changes
        await press(app, pilot, "y")

    drive(make_app(gateway), scenario)
    assert state(serving)[:2] == ("v4.0", None)


def test_a_state_changed_meanwhile_is_refused_not_acted_on(
    serving: Workspace, gateway: Gateway
) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await open_confirm(app, pilot, "R")
        with closing(Engine(serving, actor="someone-else")) as other:
            other.deploy(version="v4.0")  # while the dialog is open
        await press(app, pilot, "y")
        assert "rollback: state changed, retry" in action_log(app)

    drive(make_app(gateway), scenario)
    production, _, actions = state(serving)
    assert production == "v4.0"
    assert actions.count("rollback") == 0


def test_retrain_starts_a_job_in_a_worker_process(serving: Workspace, gateway: Gateway) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await open_confirm(app, pilot, "T")
        await press(app, pilot, "y")
        assert "retrain: job #1 started" in action_log(app)
        await press(app, pilot, "ctrl+r")
        assert app.data is not None and app.data.jobs
        assert app.data.jobs[0].id == 1

    drive(make_app(gateway), scenario)
    with closing(Engine(serving)) as engine:
        (job,) = engine.jobs()
        assert job.trigger and job.line == "quality-predictor"
        done = engine.wait_job(job.id, timeout_s=60)  # no worker left behind
        assert done.finished
