"""`beast retrain` and `beast jobs`: the retraining half of the CLI (seed: `retrain:auto`).

`beast retrain --check` reports each trigger with its figure and each data file with the rows
it would contribute (or why it is skipped, naming its columns); `beast retrain` starts a job
when a trigger fires (`--force`: regardless), then follows it with a progress bar on a
terminal (plain lines otherwise) until it finishes; `--detach` returns at once. Training runs
in a background worker process either way: interrupting the command leaves it running.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import TYPE_CHECKING, Any, TextIO

from engine.cli.render import table
from engine.core import text
from engine.core.errors import BeastError
from engine.core.records import Job
from engine.facade import Engine

if TYPE_CHECKING:
    from engine.retrain.triggers import TriggerReport

BAR_WIDTH = 24
WAIT_MARGIN_S = 30.0


def _print_json(document: Any) -> None:
    sys.stdout.write(text.dumps(document) + "\n")


def _figure(value: float | str | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def data_check(engine: Engine, line: str) -> tuple[dict[str, Any], list[str]]:
    """What `data/` would give a job on `line` now: the JSON of `--check`'s `data` (its label
    and time columns and each file, or `error` when the line has no feature names) and one
    line per file for the text output."""
    try:
        label, time, files = engine.retrain_data(line)
    except BeastError as exc:
        return {"error": str(exc), "files": []}, []
    doc = {"label": label, "time": time, "files": [f.to_json() for f in files]}
    return doc, [f.note() for f in files]


def render_data(found: dict[str, Any], notes: list[str]) -> str:
    if "error" in found:
        return text.escape(f"data: {found['error']}")
    head = f"data/ (label column {found['label']}, time column {found['time']}):"
    body = [f"  {note}" for note in notes] or ["  no data files"]
    return "\n".join(text.escape(line) for line in (head, *body))


def render_check(report: TriggerReport) -> str:
    rows = [
        [t.name, _figure(t.figure), _figure(t.threshold), "yes" if t.fires else "no", t.detail]
        for t in report.triggers
    ]
    verdict = "retraining is due" if report.fires else "no trigger fires"
    running = f"; job {report.active_job} is running" if report.active_job else ""
    return (
        text.escape(
            f"{report.line}: {verdict}{running} (last training {report.last_training or 'never'})"
        )
        + "\n"
        + table(["TRIGGER", "FIGURE", "THRESHOLD", "FIRES", "DETAIL"], rows, indent="  ")
    )


class Progress:
    """A one-line bar on a terminal; one plain line per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, job: Job) -> None:
        message = text.escape(job.message)  # written by the worker: may quote a data file
        if not self.tty:
            self.stream.write(f"job {job.id} {job.status} {job.progress:4.0%} {message}\n")
            self.stream.flush()
            return
        filled = round(job.progress * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        shown = f"[{bar}] {job.progress:4.0%} {message}"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r" + shown[:width].ljust(width))
        if job.finished:
            self.stream.write("\n")
        self.stream.flush()


def render_job(job: Job) -> str:
    """One line on a job's outcome (escaped: the worker's words may quote a file)."""
    if job.status == "succeeded" and job.version is None:  # its input was the last one's
        said = f"job {job.id} succeeded: {job.line}: registered nothing: {job.reason}"
    elif job.status == "succeeded":
        state = "deployed" if job.deployed else "registered"
        said = f"job {job.id} succeeded: {job.line}/{job.version} {state}; {job.reason}"
    elif job.status == "failed":
        said = f"job {job.id} failed: {job.error}"
    else:
        said = f"job {job.id} {job.status} ({job.progress:.0%}: {job.message})"
    return text.escape(said)


def cmd_retrain(engine: Engine, args: argparse.Namespace) -> int:
    report = engine.retrain_check(args.model)
    if args.check:
        found, notes = data_check(engine, report.line)
        if args.json:
            _print_json({**report.to_json(), "data": found})
        else:
            print(render_check(report))
            print(render_data(found, notes))
        return 0
    if not report.fires and not args.force and report.active_job is None:
        if args.json:
            _print_json({"started": False, "check": report.to_json()})
        else:
            print(render_check(report))
            print("nothing to do: pass --force to retrain anyway")
        return 0
    job = engine.start_retrain(
        report.line, force=args.force, deploy=args.deploy, trigger=_trigger_name(args, report)
    )
    joined = job.id == report.active_job
    out = sys.stderr if args.json else sys.stdout
    if not args.json:
        verb = "joined the running" if joined else "started"
        print(text.escape(f"{verb} job {job.id} on {job.line} (trigger: {job.trigger})"), file=out)
    if args.detach:
        if args.json:
            _print_json(job.to_json())
        else:
            print(f"following: beast jobs {job.id}")
        return 0
    settings = engine.config.retrain
    limit = settings.timeout_s + 2 * settings.lease_s + WAIT_MARGIN_S
    try:
        job = engine.wait_job(job.id, limit, on_progress=Progress(out))
    except KeyboardInterrupt:
        print(f"\njob {job.id} goes on in the background: beast jobs {job.id}", file=sys.stderr)
        return 130
    if args.json:
        _print_json(job.to_json())
    else:
        print(render_job(job))
    if job.status == "failed":
        if args.json:
            print(text.escape(f"beast: job {job.id} failed: {job.error}"), file=sys.stderr)
        return 1
    return 0


def _trigger_name(args: argparse.Namespace, report: TriggerReport) -> str:
    firing = "+".join(t.name for t in report.triggers if t.fires)
    if args.force:
        return "manual (forced)"
    return f"manual: {firing}" if firing else "manual"


def cmd_jobs(engine: Engine, args: argparse.Namespace) -> int:
    engine.reap_jobs()  # a worker that died shows as failed, not running forever
    if args.job_id is not None:
        job = engine.job(args.job_id)
        log = engine.job_log(job.id, times=True)
        if args.json:
            _print_json(dict(job.to_json(), log=log))
        else:
            print(render_job(job))
            print("\n".join(f"  {text.escape(line)}" for line in log))
        return 0
    found = engine.jobs(args.limit, args.model)
    if args.json:
        _print_json([j.to_json() for j in found])
        return 0
    if not found:
        print("no retraining jobs yet")
        return 0
    print(
        table(
            ["ID", "LINE", "STATUS", "PROGRESS", "TRIGGER", "VERSION", "DEPLOYED", "CREATED"],
            [
                [
                    j.id,
                    j.line,
                    j.status,
                    f"{j.progress:.0%}",
                    j.trigger,
                    j.version or (j.message if j.status == "succeeded" else "-"),
                    "yes" if j.deployed else "no",
                    j.created_at,
                ]
                for j in found
            ],
            indent="",
        )
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_parsers(add: Any) -> None:
    """Register `retrain` and `jobs` on the main parser's `add` helper."""
    p = add(
        "retrain",
        cmd_retrain,
        "retrain in a background worker when a trigger fires (time, new data, health)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="only report each trigger and what each data file would contribute, and exit",
    )
    p.add_argument("--force", action="store_true", help="retrain even if no trigger fires")
    p.add_argument(
        "--deploy",
        action="store_true",
        help="deploy the result as an A/B candidate if it beats production",
    )
    p.add_argument("--model", help="model line (default: the only one)")
    p.add_argument("--detach", action="store_true", help="start the job and return at once")
    p.add_argument("--json", action="store_true", help="print the job record (or the check)")

    p = add("jobs", cmd_jobs, "recent retraining jobs, or one job with its log")
    p.add_argument("job_id", nargs="?", type=_positive_int, metavar="ID")
    p.add_argument("--model", help="only this model line")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N")
    p.add_argument("--json", action="store_true")
