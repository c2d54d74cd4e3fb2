"""A change made elsewhere shows at once: the watchfiles nudge polls before the timer would."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.pilot import Pilot

from console.app import BeastConsole
from console.gateway import Gateway
from console.nudge import Nudge
from engine import Workspace
from tests.console.pilot import action_log, drive, make_app, press, rows, settle
from tests.helpers import beast


async def wait_for(app: BeastConsole, pilot: Pilot[None], done: object, seconds: float) -> bool:
    """Let the app run until `done()` holds (a bounded wait for another process's change)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        await settle(app, pilot)
        if done():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


def test_a_rollback_from_another_terminal_shows_without_waiting_for_the_timer(
    serving: Workspace, gateway: Gateway
) -> None:
    def production(app: BeastConsole) -> str | None:
        found = [r for r in rows(app, "deployments-table") if "production" in r]
        return found[0] if found else None

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert app.data is not None and app.data.production("quality-predictor").version == "v2.0"
        done = beast(serving, "rollback")  # another process, as from another terminal
        assert done.returncode == 0, done.stderr
        # The timer is an hour away (make_app): only the nudge can bring the change.
        assert await wait_for(
            app,
            pilot,
            lambda: (
                app.data is not None and app.data.production("quality-predictor").version == "v1.0"
            ),
            10.0,
        ), "the console did not see the rollback made by another process"

    drive(make_app(gateway), scenario)


def test_a_paused_console_is_not_nudged(serving: Workspace, gateway: Gateway) -> None:
    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        await press(app, pilot, "p")
        done = beast(serving, "rollback")  # another process, as from another terminal
        assert done.returncode == 0, done.stderr
        await asyncio.sleep(0.5)  # several debounce periods: a nudge would have polled
        await settle(app, pilot)
        assert app.data is not None and app.data.production("quality-predictor").version == "v2.0"
        await press(app, pilot, "p")  # resuming polls at once
        assert app.data.production("quality-predictor").version == "v1.0"
        assert "live refresh resumed" in action_log(app)

    drive(make_app(gateway), scenario)


def test_a_failed_watch_is_reported_once_and_never_raises(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    reasons: list[str] = []
    nudge = Nudge([folder], lambda: None, reasons.append)
    folder.rmdir()  # vanished between the check and the watch
    nudge.start()
    nudge.stop()
    assert len(reasons) == 1 and "refreshing on the timer" in reasons[0]
