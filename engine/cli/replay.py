"""`beast replay VERSION`, and what `beast deploy` checks before any change: the deployment
checklist (its preflight, `--strict`) and `--require-replay`.

Kept apart from engine/cli/main.py so that `beast status` never imports numpy or XGBoost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.core import text
from engine.core.errors import BeastError
from engine.core.figures import sig, signed
from engine.core.records import Change
from engine.facade import Engine

if TYPE_CHECKING:
    from engine.deploy.preflight import Preflight
    from engine.monitoring.replay import Replay


def cmd_replay(engine: Engine, args: argparse.Namespace) -> int:
    found = engine.replay(args.version, model=args.model, window=args.window)
    if args.json:
        sys.stdout.write(text.dumps(found.to_json()) + "\n")
    else:
        print(render_replay(found))
    return 0


def render_replay(r: Replay) -> str:
    """A replay for people: both models' metrics, the verdict with its interval, the slices."""
    v = r.verdict
    capped = f" (capped: the most recent {r.limit:,})" if r.capped else ""
    out = [
        f"replay of {r.version} on {r.line}: {r.n:,} labelled requests production "
        f"{r.production} served since {r.since}{capped}",
        f"  {'metric':<12}{r.production:>12}{r.version:>12}{'delta':>10}",
    ]
    for key, delta in r.deltas().items():
        out.append(
            f"  {key:<12}{sig(r.comparison.control[key]):>12}"
            f"{sig(r.comparison.candidate[key]):>12}{signed(delta):>10}"
        )
    out.append(
        f"  verdict: {v.outcome} — {v.metric} {signed(v.diff)} [{signed(v.lo)}, {signed(v.hi)}]"
        f" p={sig(v.p)}, margin ±{v.margin:g} (paired, n={r.n:,})"
    )
    if r.slices:
        out.append(f"  where it loses most ({v.metric}, by feature quartile):")
        for s in r.slices:
            out.append(
                f"    {s.feature} Q{s.quartile} [{sig(s.lo)}, {sig(s.hi)}]  n={s.n:,}  "
                f"{sig(s.production)} → {sig(s.candidate)} ({signed(s.diff)})"
            )
    else:
        out.append("  no feature quartile where it loses")
    return "\n".join(text.escape(line) for line in out)


def render_preflight(p: Preflight) -> str:
    """The checklist for people, one item a line: [x] or [ ], its name, its figure."""
    width = max(len(i.name) for i in p.items)
    out = [f"preflight {p.line} {p.version}:"]
    out += [f"  [{'x' if i.checked else ' '}] {i.name:<{width}}  {i.figure}" for i in p.items]
    return "\n".join(text.escape(line) for line in out)


@dataclass(frozen=True)
class Checked:
    """What `beast deploy` checked before its change: the checklist and the replay, if any."""

    preflight: Preflight
    replay: Replay | None


def preflight(engine: Engine, args: argparse.Namespace) -> Checked:
    """Before a deploy changes anything: run the replay `--require-replay` asks for, print
    the checklist (text), and refuse — one line, nothing changed — when the replay is not
    non-inferior with enough pairs, or (strict) while an item is unchecked."""
    replayed = None
    path, version, model, reference = args.path, args.version, args.model, args.reference
    if args.require_replay:
        target, _ = engine.preflight(path, version=version, model=model, reference=reference)
        replayed = engine.replay(target.name, model=target.line, window=args.replay_window)
        # Registered now (with its reference): the checklist reads the version, not the
        # file again — a second registration re-hashed the file and re-scored the reference.
        path, version, model, reference = None, target.name, target.line, None
    _, checked = engine.preflight(
        path,
        version=version,
        model=model,
        # A rollout starts at its first step: that is the share the checklist judges.
        traffic=args.rollout[0] if args.rollout else args.traffic,
        ab_test=args.ab_test,
        reference=reference,
        replayed=replayed,
    )
    if not args.json:
        print(render_preflight(checked), flush=True)
    if replayed is not None and not replayed.enough:
        v = replayed.verdict
        raise BeastError(
            f"refused (--require-replay): replay of {replayed.version} on {replayed.n} requests"
            f" is {v.outcome}, {v.metric} {signed(v.diff)} [{signed(v.lo)}, {signed(v.hi)}]"
            f" (needs non-inferior within {v.margin:g}); nothing changed on {replayed.line}"
        )
    if (args.strict or engine.config.deploy.deploy_strict) and not checked.ok:
        raise BeastError(checked.refusal())
    return Checked(checked, replayed)


def report(change: Change, args: argparse.Namespace, checked: Checked) -> int:
    """A deploy's result; its JSON carries the checklist ("preflight") and any "replay"."""
    if args.json:
        doc: dict[str, Any] = dict(change.to_json(), preflight=checked.preflight.to_json())
        if checked.replay is not None:
            doc["replay"] = checked.replay.to_json()
        sys.stdout.write(text.dumps(doc) + "\n")
    else:
        print(text.escape(change.message))
    return 0


def add_deploy_options(p: argparse.ArgumentParser) -> None:
    """`beast deploy`'s flags of this module."""
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse while a checklist item is unchecked (also [deploy] strict = true)",
    )
    p.add_argument(
        "--require-replay",
        action="store_true",
        help="replay the version first; refuse unless it is non-inferior to production",
    )
    p.add_argument(
        "--replay-window", default="7d", metavar="SPAN", help="with --require-replay (default 7d)"
    )


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "replay",
        cmd_replay,
        "score a registered version on production's logged, labelled requests (paired verdict)",
    )
    p.add_argument("version", metavar="VERSION")
    p.add_argument("--model", help="model line (default: the one that has VERSION)")
    p.add_argument("--window", default="7d", metavar="SPAN", help="30m, 24h, 7d (default 7d)")
    p.add_argument("--json", action="store_true")
