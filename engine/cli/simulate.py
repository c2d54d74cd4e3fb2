"""`beast simulate`: demo traffic (engine/demo/simulate.py), in-process or against `beast engine`.

Kept apart from engine/cli/main.py so that `beast status` never imports numpy or XGBoost.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from engine.core import text
from engine.core.errors import BeastError
from engine.facade import Engine


def cmd_simulate(engine: Engine, args: argparse.Namespace) -> int:
    # numpy and http.client: only `beast simulate` pays them, not every `beast` command
    from engine.demo import simulate
    from engine.demo import transport as sim_transport

    options = simulate.SimOptions(
        rate=args.rate,
        duration_s=args.duration,
        label_delay_s=args.label_delay,
        drift_per_minute=args.drift_per_minute,
        max_drift=args.max_drift,
        backlog=args.backlog,
        seed=args.seed,
        spike_every_s=args.spike_every,
        spike_s=args.spike_seconds,
        evaluate_every_s=0.0 if args.url else args.evaluate_every,
    )
    deployed = {d.line for d in engine.status().deployments}
    options = simulate.with_lines(options, deployed)
    try:
        options.check()
    except ValueError as exc:
        raise BeastError(str(exc)) from None
    transport: sim_transport.Transport
    evaluate = None
    if args.url:
        transport = sim_transport.Http(args.url)
        where = f"the engine at {args.url}"
    else:
        transport = sim_transport.InProcess(engine)
        evaluate = _evaluator(engine)
        where = f"{engine.workspace.root} (in-process)"
    stop = threading.Event()
    _stop_on_signals(stop)
    say = _progress(args)
    say(
        f"demo traffic → {where}: {options.rate:g} req/s for {options.duration_s:g} s, "
        f"labels after {options.label_delay_s:g} s, drift +{options.drift_per_minute:g}/min "
        f"(max {options.max_drift:g}), seed {options.seed}"
    )
    try:
        report = simulate.Simulation(
            transport, options, stop=stop, evaluate=evaluate, progress=say
        ).run()
    finally:
        transport.close()
    if args.json:
        sys.stdout.write(text.dumps(report.to_json()) + "\n")
    else:
        answers = ", ".join(f"{n} {k}" for k, n in sorted(report.label_answers.items()))
        print(
            f"demo traffic done: {report.predictions} predictions ({report.failed} failed), "
            f"{report.labels_sent} labels ({answers or 'none'}), {report.spikes} latency spikes, "
            f"drift {report.drift:.2f} after {report.elapsed_s:.0f} s"
        )
    return 1 if report.predictions == 0 else 0


def _evaluator(engine: Engine) -> Any:
    def evaluate() -> list[str]:
        found = engine.evaluate()  # as `beast engine` evaluates: rollouts too
        return [
            f"{a['severity']} {a['version']}: {a['message']}"
            for a in found.alerts
            if a["status"] == "firing"
        ]

    return evaluate


def _progress(args: argparse.Namespace) -> Any:
    def say(line: str) -> None:
        if not args.quiet:
            # Progress goes to stderr: with --json, stdout holds one document only.
            # Escaped: a line may quote an alert's message or the engine's answer.
            print(text.escape(line), file=sys.stderr if args.json else sys.stdout, flush=True)

    return say


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT end the run cleanly: the log is flushed, the report printed."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def add_parsers(add: Any) -> None:
    """Register `beast simulate` on the main parser's `add` helper.

    The defaults repeat `simulate.SimOptions`'s (a test holds them equal): importing it here
    would load numpy for every `beast` command.
    """
    p = add(
        "simulate",
        cmd_simulate,
        "send demo traffic: keyed predictions, delayed labels, creeping drift, latency spikes",
    )
    p.add_argument(
        "--url",
        metavar="URL",
        help="drive a running `beast engine` over HTTP (e.g. http://127.0.0.1:8787); "
        "default: in-process on the workspace",
    )
    p.add_argument("--rate", type=float, default=50.0, metavar="R", help="requests/s (50)")
    p.add_argument(
        "--duration", type=float, default=600.0, metavar="S", help="stop after S seconds (600)"
    )
    p.add_argument(
        "--label-delay",
        type=float,
        default=10.0,
        metavar="S",
        help="ground truth arrives S seconds (±20%%) after the prediction (10)",
    )
    p.add_argument(
        "--drift-per-minute",
        type=float,
        default=0.5,
        metavar="X",
        help="drift added per minute, 0–1 scale of sample_data.generate (0.5)",
    )
    p.add_argument("--max-drift", type=float, default=0.5, metavar="X", help="drift cap (0.5)")
    p.add_argument(
        "--backlog",
        type=int,
        default=1000,
        metavar="N",
        help="rows scored in one batch at the start, so monitoring has more than a handful "
        "of rows per arm (1000; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--spike-every",
        type=float,
        default=40.0,
        metavar="S",
        help="a latency spike every S seconds, the first after 20 s (40; 0: none): real load, "
        "three clients reading the monitoring report back to back",
    )
    p.add_argument(
        "--spike-seconds", type=float, default=4.0, metavar="S", help="length of a spike (4)"
    )
    p.add_argument(
        "--evaluate-every",
        type=float,
        default=10.0,
        metavar="S",
        help="in-process only: run the monitoring evaluation every S seconds (10; 0: never)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")
