"""`beast console` (alias `beast dashboard`): the Textual console, imported only here.

The console package (and Textual) load inside the handler, never when `engine.cli.main` is
imported: `beast status` stays fast and the engine works on machines without a terminal.
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.core.errors import BeastError
from engine.facade import Engine

KEY_IDS = (
    "help",
    "pane-1",
    "pane-2",
    "pane-3",
    "pane-4",
    "pane-5",
    "filter",
    "maximize",
    "pause",
    "refresh",
    "rollback",
    "promote",
    "abort",
    "retrain",
    "deploy",
    "quit",
)


def parse_keymap(text: str | None) -> dict[str, str]:
    """`rollback=ctrl+b,promote=ctrl+o` → {binding id: key}; unknown ids are refused."""
    keymap: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, key = part.partition("=")
        name, key = name.strip(), key.strip()
        if not sep or not key:
            raise BeastError(f"--keymap: {part.strip()!r} is not ID=KEY")
        if name not in KEY_IDS:
            raise BeastError(f"--keymap: unknown key id {name!r} (known: {', '.join(KEY_IDS)})")
        keymap[name] = key
    return keymap


def cmd_console(engine: Engine, args: argparse.Namespace) -> int:
    keymap = parse_keymap(args.keymap)
    if args.interval <= 0:
        raise BeastError(f"--interval must be a positive number of seconds, not {args.interval:g}")
    if args.demo:  # the demo workspace (built if empty), a live engine and traffic around it
        from engine.demo import live as demo_live  # processes, sockets, HTTP: only the demo

        # Never the user's own ./.beast-mode: without --workspace the demo lives in ./demo.
        demo = Engine(demo_live.workspace_for(getattr(args, "workspace", None)))
        with demo_live.running(demo.workspace):
            return _open(demo, args, keymap)
    engine.store  # noqa: B018 - refuse a broken workspace with one line, before the screen opens
    return _open(engine, args, keymap)


def _open(engine: Engine, args: argparse.Namespace, keymap: dict[str, str]) -> int:
    engine.close()  # the console opens engines of its own, one per thread
    from console.run import run_console  # the one door to Textual: never at import (the wall)

    return run_console(
        engine.workspace,
        readonly=args.readonly,
        mouse=not args.no_mouse,
        interval_s=args.interval,
        keymap=keymap,
        type_to_confirm=args.type_to_confirm,
    )


def add_parsers(add: Any) -> None:
    """Register `console` and its alias `dashboard` on the main parser's `add` helper."""
    for name in ("console", "dashboard"):
        p = add(name, cmd_console, "the full-screen ops console (keyboard first, works over SSH)")
        p.add_argument("--readonly", action="store_true", help="hide and refuse every change")
        p.add_argument(
            "--no-mouse", action="store_true", help="do not capture the mouse (keeps selection)"
        )
        p.add_argument(
            "--interval", type=float, default=2.0, metavar="S", help="refresh every S seconds"
        )
        p.add_argument(
            "--keymap",
            metavar="ID=KEY,…",
            help="remap keys by binding id, e.g. rollback=ctrl+b (ids: see the help screen)",
        )
        p.add_argument(
            "--demo",
            action="store_true",
            help="build the demo workspace and open on live simulated traffic",
        )
        p.add_argument(
            "--type-to-confirm",
            action="store_true",
            help="a production change asks for the new version's name, typed, not just y"
            " (also: [console] type_to_confirm in config.toml)",
        )
