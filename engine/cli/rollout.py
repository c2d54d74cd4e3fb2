"""`beast rollout pause|resume|abort NAME`: an operator's hand on a progressive rollout.

A rollout starts with `beast deploy PATH --version V --ab-test NAME --rollout 5,25,50,100`
(`rollout_percents` parses the steps); the leader's evaluator moves it up. Pause holds it at
its share, resume begins its step again, abort ends it and its test (the candidate to 0%).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.core import text
from engine.core.records import Change
from engine.facade import Engine

ACTIONS = ("pause", "resume", "abort")


def rollout_percents(value: str) -> list[float]:
    """`--rollout 5,25,50,100` as percents (the deploy checks the steps themselves)."""
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rollout takes percentages separated by commas, e.g. 5,25,50,100; got {value!r}"
        ) from None


def cmd_rollout(engine: Engine, args: argparse.Namespace) -> int:
    change: Change
    if args.action == "pause":
        change = engine.pause_rollout(args.name, note=args.note)
    elif args.action == "resume":
        change = engine.resume_rollout(args.name, note=args.note)
    else:
        change = engine.abort_rollout(args.name, note=args.note)
    if args.json:
        sys.stdout.write(text.dumps(change.to_json()) + "\n")
    else:
        print(text.escape(change.message))
    return 0


def add_parsers(add: Any) -> None:
    """Register `beast rollout`."""
    p = add(
        "rollout",
        cmd_rollout,
        "pause, resume or abort a progressive rollout (started by deploy --rollout)",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("name", metavar="NAME", help="the A/B test of the rollout")
    p.add_argument("--note", help="why (kept in history)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
