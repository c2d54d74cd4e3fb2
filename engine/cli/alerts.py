"""`beast alerts [--json]` and `beast alerts ack ID [--note TEXT]`: the alerts, and saying
that one was seen.

Kept apart from engine/cli/main.py like the other command groups. Listing reads the alerts
as the last evaluation left them (the engine's timer, or `beast monitor`); acknowledging an
`srm` alert is what lets its test be promoted (engine.monitoring.srm).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli import render
from engine.core import text
from engine.core.errors import BeastError
from engine.core.records import Alert
from engine.facade import Engine


def cmd_alerts(engine: Engine, args: argparse.Namespace) -> int:
    if args.action == "ack":
        if args.alert_id is None:
            raise BeastError("alerts ack needs the alert's ID (see `beast alerts`)")
        alert = engine.acknowledge_alert(args.alert_id, note=args.note)
        if args.json:
            sys.stdout.write(text.dumps(alert.to_json()) + "\n")
        else:
            print(
                text.escape(
                    f"alert {alert.id} acknowledged by {alert.acknowledged_by} "
                    f"at {alert.acknowledged_at}: {alert.message}"
                )
            )
        return 0
    if args.alert_id is not None or args.note is not None:
        raise BeastError("an alert ID and --note go with `beast alerts ack ID`")
    found = engine.alerts(args.limit)
    if args.json:
        sys.stdout.write(text.dumps([a.to_json() for a in found]) + "\n")
        return 0
    if not found:
        print("no alerts")
        return 0
    print(
        render.table(
            ("ID", "STATUS", "SEVERITY", "LINE/VERSION", "METRIC", "ACK", "MESSAGE"),
            [_row(a) for a in found],
        )
    )
    return 0


def _row(a: Alert) -> list[object]:
    status = "firing" if a.resolved_at is None else "resolved"
    ack = "-" if a.acknowledged_at is None else f"{a.acknowledged_by} {a.acknowledged_at}"
    return [a.id, status, a.severity, f"{a.line}/{a.version}", a.metric, ack, a.message]


def _positive(value: str) -> int:
    try:
        found = int(value)
    except ValueError:
        found = 0
    if found < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {value!r}")
    return found


def add_parsers(add: Any) -> None:
    """Register `alerts` on the main parser's `add` helper."""
    p = add(
        "alerts",
        cmd_alerts,
        "firing and recent alerts; `beast alerts ack ID` records that one was seen",
    )
    p.add_argument("action", nargs="?", choices=("ack",), help="ack: acknowledge alert ID")
    p.add_argument("alert_id", nargs="?", type=_positive, metavar="ID")
    p.add_argument("--note", help="with ack: why (kept with the alert)")
    p.add_argument(
        "--limit",
        type=_positive,
        default=20,
        metavar="N",
        help="resolved alerts shown (default 20)",
    )
    p.add_argument("--json", action="store_true")
