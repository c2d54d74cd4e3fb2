"""The incident snapshot (`beast report`): one JSON document and its Markdown, to paste into
a ticket.

The JSON is the source: what serves (`beast status --json`), the monitoring report (`beast
monitor --json`: health, firing alerts, metrics per window per version, A/B figures per arm,
drift by feature) and the last `HISTORY_ROWS` history entries with their evidence. The
Markdown is rendered from that document alone, numbers rounded for people (three significant
digits), every stored text escaped for a table cell. Both files are written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core import tasks, text
from engine.core.errors import BeastError
from engine.core.figures import narrowing, pct, sig, signed
from engine.core.history_export import atomic_write
from engine.core.records import HistoryEntry, Status, evidence_summary

if TYPE_CHECKING:
    from engine.monitoring.report import MonitorReport

HISTORY_ROWS = 50


def document(
    status: Status, report: MonitorReport, history: Sequence[HistoryEntry], workspace: str
) -> dict[str, Any]:
    """The snapshot as one JSON document (full precision, no NaN)."""
    return {
        "kind": "beast-mode incident report",
        "generated_at": report.generated_at,
        "workspace": workspace,
        "window": report.window,
        "status": status.to_json(),
        "monitor": report.to_json(),
        "history": [e.to_json() for e in history[-HISTORY_ROWS:]],
    }


def write(out_dir: Path, doc: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write `doc` as beast-report-TIME.json and its Markdown beside it (each atomically:
    a temporary file, then a rename); (markdown, json). An unwritable directory is a
    BeastError naming it."""
    stamp = str(doc["generated_at"]).replace("-", "").replace(":", "").split(".")[0] + "Z"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        base = out_dir / f"beast-report-{stamp}"
        n = 1
        while base.with_suffix(".json").exists() or base.with_suffix(".md").exists():
            n += 1  # two reports in one second: neither replaces the other
            base = out_dir / f"beast-report-{stamp}-{n}"
        as_json, as_md = base.with_suffix(".json"), base.with_suffix(".md")
        atomic_write(as_json, text.dumps(doc) + "\n")
        atomic_write(as_md, markdown(doc))
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise BeastError(
            f"cannot write the report into {text.escape(str(out_dir))}: {why}"
        ) from None
    return as_md, as_json


def cell(value: object) -> str:
    """A table cell: stored text escaped (no control characters, newlines as `\\n`), `|`
    escaped so it cannot open a column."""
    if value is None:
        return "-"
    return text.escape(str(value)).replace("|", "\\|")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def markdown(doc: Mapping[str, Any]) -> str:
    """The Markdown of a snapshot `document`, from the document alone."""
    monitor = doc["monitor"]
    out = [
        f"# beast-mode incident report, {cell(doc['generated_at'])}",
        "",
        f"Workspace `{cell(doc['workspace'])}` · window {cell(doc['window'])} · "
        f"health **{cell(monitor['health'])}** · the JSON beside this file is the source.",
    ]
    out += _status(doc["status"])
    out += _alerts(monitor["alerts"])
    out += _metrics(monitor["versions"])
    out += _tests(monitor["experiments"])
    out += _drift(monitor["versions"])
    out += _history(doc["history"])
    return "\n".join(out) + "\n"


def _status(status: Mapping[str, Any]) -> list[str]:
    out = ["", "## Status", ""]
    if not status["deployments"]:
        return [*out, "Nothing deployed."]
    out += _table(
        ["line", "version", "role", "traffic", "test", "since", "by", "artifact", "baseline"],
        [
            [
                d["line"],
                d["version"],
                d["role"],
                f"{d['traffic']:g}%",
                d["experiment"],
                d["since"],
                d["by"],
                "ok" if d["artifact_present"] else "MISSING",
                d["baseline"] or "none yet",
            ]
            for d in status["deployments"]
        ],
    )
    if status["experiments"]:
        out += ["", "### A/B tests", ""]
        out += _table(
            [
                "test",
                "status",
                "control",
                "candidate",
                "traffic",
                "started",
                "ended",
                "verdict",
                "ending",
            ],
            [
                [
                    e["name"],
                    e["status"],
                    e["control"],
                    e["candidate"],
                    f"{e['traffic']:g}%",
                    e["started_at"],
                    e["ended_at"],
                    e["verdict"] if e["status"] != "running" else "running (see A/B figures)",
                    e["ending"],
                ]
                for e in status["experiments"]
            ],
        )
    return out


def _alerts(alerts: Sequence[Mapping[str, Any]]) -> list[str]:
    firing = [a for a in alerts if a["status"] == "firing"]
    out = ["", f"## Firing alerts ({len(firing)})", ""]
    if not firing:
        return [*out, "None firing."]
    return out + _table(
        ["#", "severity", "line/version", "metric", "value", "threshold", "message", "since"],
        [
            [
                a["id"],
                a["severity"],
                f"{a['line']}/{a['version']}",
                a["metric"],
                sig(a["value"]),
                sig(a["threshold"]),
                a["message"],
                a["first_seen"],
            ]
            for a in firing
        ],
    )


def _metrics(versions: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["", "## Metrics per window"]
    if not versions:
        return [*out, "", "Nothing deployed."]
    for v in versions:
        keys = tasks.METRICS.get(v["task"], ())
        out += [
            "",
            f"### {cell(v['line'])} {cell(v['version'])} ({cell(v['role'])}, "
            f"{v['traffic']:g}%): {cell(v['health'])}",
            "",
        ]
        out += _table(
            ["window", "predictions", "labelled", "errors", "error rate", *keys, "p95 ms"],
            [
                [
                    name,
                    f"{w['predictions']:,}",
                    f"{w['labelled']:,}",
                    f"{w['errors']:,}",
                    sig(w["error_rate"]),
                    *(sig(w.get(key)) for key in keys),
                    sig(w["latency_ms"]["p95"]),
                ]
                for name, w in v["windows"].items()
            ],
        )
        if v["findings"]:
            out.append("")
        out += [f"- {f['severity']}: {cell(f['message'])}" for f in v["findings"]]
    return out


def _tests(experiments: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["", "## A/B tests"]
    if not experiments:
        return [*out, "", "No test running."]
    for e in experiments:
        detail = e["verdict_detail"]
        metric = detail["metric"]
        keys = [k for k in tasks.METRICS.get(e["task"], ()) if k in (metric, "mae")]
        out += ["", f"### {cell(e['name'])}: {cell(e['verdict'])}", "", cell(detail["reason"]), ""]
        out += _table(
            ["arm", "version", "predictions", "labelled", *keys],
            [
                [
                    arm,
                    e[arm],
                    f"{e['arms'][arm]['predictions']:,}",
                    f"{e['arms'][arm]['labelled']:,}",
                    *(sig(e["arms"][arm].get(key)) for key in keys),
                ]
                for arm in ("control", "candidate")
            ],
        )
        out += [
            "",
            f"{cell(metric)}: diff {signed(detail.get('diff'))} "
            f"[{signed(detail.get('lo'))}, {signed(detail.get('hi'))}], "
            f"always-valid p {sig(detail.get('p'))}, margin ±{sig(detail.get('margin'))}",
        ]
        points = e.get("interval") or []
        if len(points) >= 2:
            ends = ((p["minute"], p["lo"], p["hi"]) for p in (points[0], points[-1]))
            out += ["", narrowing(next(ends), next(ends), len(points))]
    return out


def _drift(versions: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["", "## Drift by feature"]
    if not versions:
        return [*out, "", "Nothing deployed."]
    for v in versions:
        d = v["drift"]
        out += [
            "",
            f"### {cell(v['line'])} {cell(v['version'])}: model drift {pct(d['model'])}, "
            f"worst PSI {sig(d['data'])}, score PSI {sig(d['score_psi'])}",
            "",
        ]
        if not d["features"]:
            out.append("No feature drift measured (no reference, or too few values).")
            continue
        out += _table(
            ["feature", "PSI", "KS", "level"],
            [[f["name"], sig(f["psi"]), sig(f["ks"]), f["level"]] for f in d["features"]],
        )
    return out


def _snap(state: Mapping[str, Any]) -> str:
    if state.get("production") is None:
        return "(nothing)"
    shown = str(state["production"])
    if state.get("candidate"):
        shown += f" + {state['candidate']}@{state['candidate_bp'] / 100:g}%"
    return shown


def _history(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["", f"## History (last {HISTORY_ROWS})", ""]
    if not entries:
        return [*out, "No changes yet."]
    out += _table(
        ["#", "when", "who", "line", "action", "from", "to", "test", "note", "evidence"],
        [
            [
                e["id"],
                e["at"],
                e["actor"],
                e["line"],
                e["action"] + (" (forced)" if e["forced"] else ""),
                _snap(e["from_state"]),
                _snap(e["to_state"]),
                e["experiment"],
                e["note"],
                evidence_summary(e["evidence"]) or None,
            ]
            for e in entries
        ],
    )
    for e in entries:
        if e["evidence"]:
            out += _evidence(e["id"], e["evidence"])
    return out


def _evidence(entry_id: int, evidence: Mapping[str, Any]) -> list[str]:
    """What a change was decided on: each version's figures, the alerts, the test."""
    out = [
        "",
        f"### Evidence of #{entry_id} (window {cell(evidence.get('window'))}, "
        f"{cell(evidence.get('generated_at'))}): health {cell(evidence.get('health'))}",
        "",
    ]
    for v in evidence.get("versions") or []:
        drifted = ", ".join(
            f"{cell(f['name'])} PSI {sig(f['psi'])}"
            for f in (v.get("drift") or {}).get("features", [])[:3]
        )
        out.append(
            f"- {cell(v['version'])} ({cell(v['role'])}): {cell(v['health'])}; "
            f"{v['predictions']:,} predictions, {v['labelled']:,} labelled; "
            f"{cell(v['metric'])} {sig(v['value'])}" + (f"; drift: {drifted}" if drifted else "")
        )
        out += [f"  - {cell(f['severity'])}: {cell(f['message'])}" for f in v.get("findings", [])]
    for a in evidence.get("alerts") or []:
        out.append(
            f"- alert #{a['id']} {cell(a['severity'])} {cell(a['version'])}: {cell(a['message'])}"
        )
    test = evidence.get("test")
    if test:
        arms = test["arms"]
        per_arm = "; ".join(
            f"{arm} {cell(arms[arm]['version'])}: {arms[arm]['predictions']:,} predictions, "
            f"{arms[arm]['labelled']:,} labelled"
            for arm in ("control", "candidate")
        )
        # Evidence kept before the verdicts were always valid has no interval, and its p was
        # a fixed-horizon test's: said as such.
        figures = (
            f"[{signed(test['lo'])}, {signed(test['hi'])}], always-valid p {sig(test['p'])}"
            if "lo" in test
            else f"fixed-horizon p {sig(test.get('p'))}"
        )
        out.append(
            f"- test {cell(test['name'])}: {cell(test['verdict'])} ({cell(test['metric'])} "
            f"diff {signed(test.get('diff'))} {figures}); {per_arm}"
        )
    return out
