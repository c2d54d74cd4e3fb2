"""`beast monitor`, `beast predict` and `beast feedback`: the serving half of the CLI.

Kept apart from engine/cli/main.py so that `beast status` never imports numpy: these commands
load it (and XGBoost, for predict) only when they run.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import sys
from pathlib import Path
from typing import Any

from engine.cli import render
from engine.core import text
from engine.core.errors import BeastError
from engine.facade import Engine


def _print_json(document: Any) -> None:
    sys.stdout.write(text.dumps(document) + "\n")


def cmd_monitor(engine: Engine, args: argparse.Namespace) -> int:
    if args.readonly:
        report = engine.report(window=args.window, model=args.model)
    else:
        from engine.monitoring import report as monitoring  # numpy: `beast status` never pays it

        report = monitoring.evaluate(engine, window=args.window)
    if args.json:
        _print_json(report.to_json())
        return 0
    print(render.monitor(report))
    return 0


def _rows_from_csv(path: Path) -> list[dict[str, float]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = []
        for i, raw in enumerate(reader, start=2):
            row: dict[str, float] = {}
            for name, text in raw.items():
                if name is None:
                    raise BeastError(f"{path}:{i}: more values than header columns")
                try:
                    row[name] = float(text)
                except (TypeError, ValueError):
                    raise BeastError(f"{path}:{i}: {name} = {text!r} is not a number") from None
            rows.append(row)
    return rows


def cmd_predict(engine: Engine, args: argparse.Namespace) -> int:
    # numpy (and the router's model loading): only `beast predict` pays them, not `beast status`
    from engine.serving.prediction_log import PredictionLog
    from engine.serving.router import Router

    if (args.features is None) == (args.csv is None):
        raise BeastError("give the features as JSON (an object or a list) or --csv FILE")
    if args.features is not None:
        try:
            parsed = json.loads(args.features, parse_constant=_no_constants)
        except ValueError as exc:
            raise BeastError(f"features are not valid JSON: {exc}") from None
        batch = (
            parsed
            if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict | list)
            else None
        )
    else:
        batch = _rows_from_csv(Path(args.csv))
        parsed = None
    # The whole file is queued (its rows are in memory already) and written at close, from
    # this thread, in the log's bounded transactions. A writer thread committing while this
    # one built the results held the write lock up to 0.4 s longer (the interpreter lock),
    # and a server's queue would drop what is past its 500,000 rows. No garbage collection
    # meanwhile: a full pass over a big file's rows inside a transaction held it 0.26 s more.
    rows = len(batch) if batch is not None else 1
    log = PredictionLog(
        engine.workspace.db_path,
        tolerance=engine.config.thresholds.tolerance_points,
        max_queue=rows,
    )
    router = Router(engine, log=log)
    gc.disable()
    try:
        if batch is not None:
            results = router.predict_batch(batch, model=args.model)
        else:
            results = [router.predict(parsed, key=args.key, model=args.model)]
    finally:
        router.close()
        log.close()
        gc.enable()
    if args.json:
        docs = [p.to_json() for p in results]
        _print_json(docs if batch is not None else docs[0])
    else:
        for p in results:
            score = "error: " + (p.error or "") if p.score is None else f"{p.score:.3f}"
            test = f" {p.experiment}" if p.experiment else ""
            shown = (
                f"{p.prediction_id}  {score}  {p.version} ({p.arm}{test})  {p.latency_ms:.2f} ms"
            )
            print(text.escape(shown))
    lost = log.stats()
    if lost.dropped:
        print(
            f"beast: {lost.dropped} of {rows} predictions were not logged ({lost.last_drop}): "
            "feedback on them will not be matched",
            file=sys.stderr,
        )
        return 1
    return 1 if any(p.error for p in results) else 0


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a number here")


def _feedback_items(path: Path) -> list[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        items = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    doc = json.loads(line, parse_constant=_no_constants)
                    items.append((str(doc["prediction_id"]), doc["actual"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise BeastError(
                        f"{path}:{i}: expected {{prediction_id, actual}}: {exc}"
                    ) from None
        return items
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"prediction_id", "actual"} <= set(reader.fieldnames):
        raise BeastError(f"{path}: needs a header with prediction_id and actual")
    out = []
    for i, row in enumerate(reader, start=2):
        try:
            out.append((row["prediction_id"], float(row["actual"])))
        except ValueError:
            raise BeastError(f"{path}:{i}: actual {row['actual']!r} is not a number") from None
    return out


def cmd_feedback(engine: Engine, args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.prediction_id is not None:
            raise BeastError("give PREDICTION_ID ACTUAL or --file, not both")
        items = _feedback_items(Path(args.file))
    elif args.prediction_id is not None and args.actual is not None:
        items = [(args.prediction_id, args.actual)]
    else:
        raise BeastError("give PREDICTION_ID ACTUAL, or --file FILE (CSV or JSONL)")
    outcomes = engine.feedback_many(items)
    results = [
        {"prediction_id": o.prediction_id, "status": o.status}
        | ({"reason": o.message} if o.message else {})
        for o in outcomes
    ]
    refused = [r for r in results if r["status"] in ("conflict", "not found", "invalid")]
    if args.json:
        _print_json(results if args.file else results[0])
    else:
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        for r in refused[:10]:
            print(text.escape(f"beast: {r['prediction_id']}: {r['reason']}"), file=sys.stderr)
    return 1 if refused else 0


def add_parsers(add: Any) -> None:
    """Register the serving commands on the main parser's `add` helper."""
    p = add("monitor", cmd_monitor, "health, metrics, drift, alerts and A/B verdicts per version")
    p.add_argument("--window", default="1h", choices=["1h", "24h", "deploy"])
    p.add_argument("--model", help="only this model line")
    p.add_argument(
        "--readonly",
        action="store_true",
        help="only report: do not sync alerts or pull a critical candidate",
    )
    p.add_argument("--json", action="store_true")

    p = add("predict", cmd_predict, "score features with what serves (logged like any prediction)")
    p.add_argument(
        "features", nargs="?", help='JSON: {"name": value, …}, [values], or a list of rows'
    )
    p.add_argument("--csv", metavar="FILE", help="a CSV with a header of feature names")
    p.add_argument("--key", help="sticky key for the A/B split")
    p.add_argument("--model", help="model line")
    p.add_argument("--json", action="store_true")

    p = add(
        "feedback", cmd_feedback, "record the actual value for a prediction (or a file of them)"
    )
    p.add_argument("prediction_id", nargs="?", metavar="PREDICTION_ID")
    p.add_argument("actual", nargs="?", type=float, metavar="ACTUAL")
    p.add_argument("--file", metavar="FILE", help="CSV (prediction_id,actual) or JSONL")
    p.add_argument("--json", action="store_true")
