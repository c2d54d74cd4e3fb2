"""Run the console in this terminal: gateway, app, terminal watchdog, clean exit."""

from __future__ import annotations

from console.app import BeastConsole
from console.gateway import Gateway
from console.watchdog import GONE_EXIT_CODE, Watchdog
from engine import Workspace


def run_console(
    workspace: Workspace,
    *,
    readonly: bool = False,
    mouse: bool = True,
    interval_s: float = 2.0,
    keymap: dict[str, str] | None = None,
    type_to_confirm: bool = False,
) -> int:
    """Open the console on a workspace until `q` (0) or the terminal goes away (129)."""
    gateway = Gateway(workspace, readonly=readonly)
    app = BeastConsole(
        gateway, interval_s=interval_s, keymap=keymap, type_to_confirm=type_to_confirm
    )
    gone: list[str] = []

    def on_gone(reason: str) -> None:
        gone.append(reason)
        app.call_from_thread(app.exit, None, GONE_EXIT_CODE)

    watchdog = Watchdog(on_gone).start()
    try:
        app.run(mouse=mouse)
    finally:
        watchdog.stop()
        gateway.close()
    return GONE_EXIT_CODE if gone else (app.return_code or 0)
