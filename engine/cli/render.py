"""Plain-text rendering of engine records for the CLI (the console draws its own).

Every text that came from a file name or the store is escaped (`engine.core.text.escape`) on its
way out: a cell or a line can neither break the table's lines nor drive the terminal, and
rows written before the edge checks existed print as safely as new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.core import tasks, text
from engine.core.records import DoctorReport, HistoryEntry, Snapshot, Status, percent
from engine.facade import ModelsReport

if TYPE_CHECKING:  # numpy: only `beast monitor` loads the report's module
    from engine.monitoring.report import ExperimentReport, MonitorReport, VersionReport


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    """Left-aligned columns, one line per row whatever the cells hold (each is escaped)."""
    escape = text.escape
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else escape(str(c)) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def status(report: Status) -> str:
    if not report.deployments:
        return "nothing deployed yet (beast deploy PATH --version V)"
    out = []
    for line in report.lines:
        rows = [d for d in report.deployments if d.line == line]
        if not rows:
            continue
        out.append(f"{text.escape(line)}  (revision {report.revisions.get(line, 0)})")
        out.append(
            table(
                ["VERSION", "ROLE", "TRAFFIC", "TEST", "SINCE", "BY", "ARTIFACT", "BASELINE"],
                [
                    [
                        d.version,
                        d.role,
                        f"{percent(d.traffic_bp):g}%",
                        d.experiment or "-",
                        d.since,
                        d.by,
                        "ok" if d.artifact_present else "MISSING",
                        d.baseline or "none yet",
                    ]
                    for d in rows
                ],
            )
        )
    if report.experiments:
        out.append("A/B tests")
        out.append(
            table(
                [
                    "NAME",
                    "STATUS",
                    "CONTROL",
                    "CANDIDATE",
                    "TRAFFIC",
                    "STARTED",
                    "ENDED",
                    "VERDICT",
                ],
                [
                    [
                        e.name,
                        e.status + (" (forced)" if e.forced else ""),
                        e.control,
                        e.candidate,
                        f"{percent(e.traffic_bp):g}%",
                        e.started_at,
                        e.ended_at or "-",
                        e.verdict or "n/a",
                    ]
                    for e in report.experiments
                ],
            )
        )
    out.append(f"health: {report.health}")
    bare = [f"{d.line}/{d.version}" for d in report.deployments if d.baseline is None]
    if bare:
        out.append(
            text.escape(
                f"no baseline yet: {', '.join(bare)} (`beast deploy --version V --reference "
                "FILE` gives one; otherwise its first predictions will)"
            )
        )
    return "\n".join(out)


def _snap(state: Snapshot) -> str:
    if state.production is None:
        return "(nothing)"
    text = state.production
    if state.candidate:
        text += f" + {state.candidate}@{percent(state.candidate_bp):g}%"
    return text


def history_rows(entries: Sequence[HistoryEntry]) -> str:
    if not entries:
        return "no deployment history yet"
    return table(
        ["#", "WHEN", "WHO", "LINE", "ACTION", "FROM", "TO", "TEST", "NOTE"],
        [
            [
                e.id,
                e.at,
                e.actor,
                e.line,
                e.action + (" (forced)" if e.forced else ""),
                _snap(e.from_state),
                _snap(e.to_state),
                e.experiment or "",
                e.note or "",
            ]
            for e in entries
        ],
        indent="",
    )


def models(report: ModelsReport) -> str:
    out = []
    if report.artifacts:
        rows = []
        for a in report.artifacts:
            names = ", ".join(a.versions) or "-"
            roles = [
                report.serving[f"{a.line}/{v}"]
                for v in a.versions
                if f"{a.line}/{v}" in report.serving
            ]
            rows.append(
                [
                    names,
                    a.line or "-",
                    a.status if a.present else f"{a.status} (file missing)",
                    ", ".join(roles) or "-",
                    a.n_features or "-",
                    a.xgboost_version or "-",
                    a.sha256[:12],
                    ", ".join(p.rsplit("/", 1)[-1] for p in a.paths or (a.path,)),
                    a.reason or "",
                ]
            )
        out.append(
            table(
                [
                    "VERSION",
                    "LINE",
                    "STATUS",
                    "SERVING",
                    "FEATURES",
                    "XGBOOST",
                    "SHA256",
                    "FILE",
                    "REASON",
                ],
                rows,
                indent="",
            )
        )
    else:
        out.append("no registered models")
    if report.unregistered:
        out.append("\nnot registered yet (beast register PATH):")
        for path, reason in report.unregistered:
            refused = f"  — would be refused: {reason}" if reason else ""
            out.append(text.escape(f"  {path}{refused}"))
    return "\n".join(out)


def doctor(report: DoctorReport) -> str:
    lines = [f"PROBLEM  {text.escape(p)}" for p in report.problems]
    lines += [f"warning  {text.escape(w)}" for w in report.warnings]
    lines.append("all invariants hold" if report.ok else f"{len(report.problems)} problem(s)")
    return "\n".join(lines)


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


# Each task's metric columns: (JSON key, header, format), engine.core.tasks.METRICS' order.
_METRIC_COLUMNS = {
    tasks.REGRESSION: (
        ("accuracy", "ACCURACY", "{:.3f}"),
        ("mae", "MAE", "{:.2f}"),
        ("rmse", "RMSE", "{:.2f}"),
    ),
    tasks.BINARY: (
        ("auc", "AUC", "{:.3f}"),
        ("accuracy", "ACC", "{:.3f}"),
        ("log_loss", "LOGLOSS", "{:.3f}"),
        ("precision", "PREC", "{:.2f}"),
        ("recall", "RECALL", "{:.2f}"),
        ("brier", "BRIER", "{:.3f}"),
    ),
}


def monitor(report: MonitorReport) -> str:
    """`beast monitor`'s text: one table per task (its own metric columns), each drift
    figure beside its baseline's source, findings, tests and alerts."""
    out = [f"health: {report.health}  (window {report.window}, {report.generated_at})"]
    for task in tasks.TASKS:
        versions = [v for v in report.versions if v.task == task]
        if versions:
            out.append(_version_table(task, versions))
    for v in report.versions:
        for f in v.findings:
            out.append(text.escape(f"  {f.severity.upper():8} {v.version}: {f.message}"))
        if v.drift.features and (v.drift.data or 0) >= 0.1:
            # Feature names come from the model file.
            worst = ", ".join(f"{d.name} {d.psi:.2f}" for d in v.drift.features[:3])
            out.append(text.escape(f"  drift    {v.version}: most drifted features: {worst}"))
        if v.drift.model is not None and v.baseline.detail:
            out.append(text.escape(f"  baseline {v.version}: {v.baseline.detail}"))
    if not report.versions:
        out.append("nothing deployed")
    if report.feedback_unmatched or report.feedback_pending:
        out.append(
            f"feedback: {report.feedback_pending} waiting for their prediction, "
            f"{report.feedback_unmatched} never matched a logged prediction"
        )
    out += [text.escape(_experiment(e)) for e in report.experiments]
    firing = [a for a in report.alerts if a["status"] == "firing"]
    out.append(f"alerts: {len(firing)} firing")
    for a in firing:
        out.append(
            text.escape(
                f"  {a['severity'].upper():8} {a['line']}/{a['version']} {a['message']} "
                f"(since {a['first_seen']})"
            )
        )
    out += [text.escape(f"action: {action}") for action in report.actions]
    return "\n".join(out)


def _version_table(task: str, versions: list[VersionReport]) -> str:
    columns = _METRIC_COLUMNS[task]
    rows = []
    for v in versions:
        found = v.window.metrics(task)
        rows.append(
            [
                v.line,
                v.version,
                v.role,
                f"{v.traffic_bp / 100:g}%",
                v.window.predictions,
                v.window.labelled,
                *(_fmt(found[key], pattern) for key, _, pattern in columns),
                _fmt(v.window.latency_ms()["p95"], "{:.2f}"),
                _fmt(v.window.error_rate),
                _fmt(v.drift.model, "{:+.1%}"),
                v.baseline.source or "-",
                _fmt(v.drift.data, "{:.2f}"),
                v.health,
            ]
        )
    headers = [
        "LINE",
        "VERSION",
        "ROLE",
        "TRAFFIC",
        "N",
        "LABELLED",
        *(header for _, header, _ in columns),
        "P95 MS",
        "ERRORS",
        "DRIFT",
        "BASELINE",
        "PSI",
        "HEALTH",
    ]
    return table(headers, rows, indent="")


def _experiment(e: ExperimentReport) -> str:
    c, k, verdict = e.control, e.candidate, e.verdict
    if e.task == tasks.BINARY:
        arms = (
            f"{e.experiment.control} n={c.labelled} auc={_fmt(c.auc)} vs "
            f"{e.experiment.candidate} n={k.labelled} auc={_fmt(k.auc)}"
        )
    else:
        arms = (
            f"{e.experiment.control} n={c.labelled} acc={_fmt(c.accuracy)} "
            f"mae={_fmt(c.mae, '{:.2f}')} vs {e.experiment.candidate} n={k.labelled} "
            f"acc={_fmt(k.accuracy)} mae={_fmt(k.mae, '{:.2f}')}"
        )
    return f"A/B {e.experiment.name}: {arms} → {verdict.outcome} ({verdict.reason})"
