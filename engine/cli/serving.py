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
from typing import TYPE_CHECKING, Any

from engine.cli import render
from engine.core import text
from engine.core.errors import BeastError
from engine.facade import Engine

if TYPE_CHECKING:
    from engine.serving.features import Schema


def _print_json(document: Any) -> None:
    sys.stdout.write(text.dumps(document) + "\n")


def cmd_monitor(engine: Engine, args: argparse.Namespace) -> int:
    if args.readonly:
        report = engine.report(window=args.window, model=args.model)
    else:
        report = engine.monitoring.evaluate(window=args.window)
    if args.json:
        _print_json(report.to_json())
        return 0
    print(render.monitor(report))
    return 0


def cmd_report(engine: Engine, args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().absolute()
    markdown, document = engine.incident_report(out, window=args.window)
    if args.json:
        _print_json({"markdown": str(markdown), "json": str(document)})
    else:
        print(text.escape(str(markdown)))
        print(text.escape(str(document)))
    return 0


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV's header and its rows as text (blank lines skipped); BeastError naming the line
    of a row whose width differs from the header's."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise BeastError(f"{path}: empty file: needs a header of feature names")
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise BeastError(
                    f"{path}:{reader.line_num}: {len(row)} values for {len(header)} header columns"
                )
            rows.append(row)
    return header, rows


def _csv_batch(
    path: Path, header: list[str], rows: list[list[str]], line: str, schema: Schema
) -> tuple[list[list[float]], list[str]]:
    """The rows' feature values in the model's order, and the header's other columns (not
    features of `line`: ignored). Missing feature columns are an error naming them."""
    from engine.serving import features  # numpy: as in cmd_predict

    try:
        columns = features.table_columns(schema, header)
    except features.InvalidFeatures as exc:
        raise BeastError(f"{path}: {exc}") from None
    if columns.missing:
        raise BeastError(f"{path}: missing feature columns of {line}: {', '.join(columns.missing)}")
    batch = []
    for i, row in enumerate(rows, start=2):
        values = []
        for at in columns.positions:
            try:
                values.append(float(row[at]))
            except ValueError:
                raise BeastError(
                    f"{path}:{i}: {header[at]} = {row[at]!r} is not a number"
                ) from None
        batch.append(values)
    return batch, list(columns.other)


def _ignored(engine: Engine, line: str, other: list[str]) -> str:
    """`beast predict --csv`'s note on the columns it did not score."""
    declared = engine.config.line(line)
    roles = {declared.label: "label", declared.time: "time"}
    named = [f"{c} ({roles[c]})" if c in roles else c for c in other]
    count = f"{len(other)} column{'s' if len(other) != 1 else ''}"
    return f"beast: ignored {count} that are no feature of {line}: {', '.join(named)}"


def cmd_predict(engine: Engine, args: argparse.Namespace) -> int:
    # numpy (and the router's model loading): only `beast predict` pays them, not `beast status`
    from engine.serving.prediction_log import PredictionLog
    from engine.serving.router import Router

    if (args.features is None) == (args.csv is None):
        raise BeastError("give the features as JSON (an object or a list) or --csv FILE")
    table: tuple[list[str], list[list[str]]] | None = None
    batch: Any = None
    if args.features is not None:
        try:
            parsed = json.loads(args.features, parse_constant=_no_constants)
        except ValueError as exc:
            raise BeastError(f"features are not valid JSON: {exc}") from None
        if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict | list):
            batch = parsed
    else:
        table = _read_csv(Path(args.csv))
        parsed = None
    # The whole file is queued (its rows are in memory already) and written at close, from
    # this thread, in the log's bounded transactions. A writer thread committing while this
    # one built the results held the write lock up to 0.4 s longer (the interpreter lock),
    # and a server's queue would drop what is past its 500,000 rows. No garbage collection
    # meanwhile: a full pass over a big file's rows inside a transaction held it 0.26 s more.
    rows = len(table[1]) if table is not None else len(batch) if batch is not None else 1
    log = PredictionLog(
        engine.workspace.db_path,
        tolerance=engine.config.thresholds.tolerance_points,
        max_queue=max(rows, 1),
    )
    router = Router(engine, log=log)
    gc.disable()
    try:
        if table is not None:
            route = router.route(args.model)
            batch, other = _csv_batch(Path(args.csv), *table, route.line, route.schema)
            if other:
                print(text.escape(_ignored(engine, route.line, other)), file=sys.stderr)
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
            out.append((row["prediction_id"], actual_value(row["actual"])))
        except ValueError:
            raise BeastError(
                f"{path}:{i}: actual {row['actual']!r} is not a number (or true/false)"
            ) from None
    return out


def actual_value(written: str) -> float | bool:
    """An actual as written on the command line or in a CSV: a number, or true/false (a
    binary line's label; the line's contract decides whether it is accepted)."""
    lowered = written.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return float(written)


def _actual_argument(written: str) -> float | bool:
    try:
        return actual_value(written)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"actual {written!r} is not a number (or true/false)"
        ) from None


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

    p = add(
        "report",
        cmd_report,
        "incident snapshot: one Markdown file and its JSON (status, alerts, metrics, A/B, "
        "drift, the last 50 changes with their evidence)",
    )
    p.add_argument(
        "--out", default=".", metavar="DIR", help="where to write (default: this directory)"
    )
    p.add_argument("--window", default="1h", choices=["1h", "24h", "deploy"])
    p.add_argument("--json", action="store_true", help="print the two paths as JSON")

    p = add("predict", cmd_predict, "score features with what serves (logged like any prediction)")
    p.add_argument(
        "features", nargs="?", help='JSON: {"name": value, …}, [values], or a list of rows'
    )
    p.add_argument(
        "--csv",
        metavar="FILE",
        help="a CSV with a header naming the features (other columns, such as the label and "
        "time of a training file, are ignored and named on stderr)",
    )
    p.add_argument("--key", help="sticky key for the A/B split")
    p.add_argument("--model", help="model line")
    p.add_argument("--json", action="store_true")

    p = add(
        "feedback", cmd_feedback, "record the actual value for a prediction (or a file of them)"
    )
    p.add_argument("prediction_id", nargs="?", metavar="PREDICTION_ID")
    p.add_argument("actual", nargs="?", type=_actual_argument, metavar="ACTUAL")
    p.add_argument("--file", metavar="FILE", help="CSV (prediction_id,actual) or JSONL")
    p.add_argument("--json", action="store_true")
