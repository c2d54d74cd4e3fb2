"""Plain-text rendering of engine records for the CLI (the console draws its own).

Every text that came from a file name or the store is escaped (`engine.core.text.escape`) on its
way out: a cell or a line can neither break the table's lines nor drive the terminal, and
rows written before the edge checks existed print as safely as new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.core import tasks, text
from engine.core.figures import narrowing, pct, sig, signed
from engine.core.records import (
    DoctorReport,
    Experiment,
    HistoryEntry,
    Snapshot,
    Status,
    percent,
)
from engine.facade import ModelsReport
from engine.store.replicas import Replica

if TYPE_CHECKING:  # numpy: only `beast monitor` loads the report's module
    from engine.monitoring.report import ExperimentReport, MonitorReport, VersionReport
    from engine.monitoring.shadow_report import ShadowReport


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


def leader(replica: Replica) -> str:
    """The engine replica that runs alerts, auto-pull and retraining, in one line."""
    where = f" at {replica.address}" if replica.address else ""
    return text.escape(f"leader: {replica.id}{where} (since {replica.leader_since})")


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
        out += [
            f"  shadow {text.escape(s.version)}: scored on {percent(s.share_bp):g}% of "
            f"production's requests, never served ({s.scored} scored, {s.dropped} skipped; "
            f"since {s.started_at} by {text.escape(s.started_by)})"
            for s in report.shadows
            if s.line == line
        ]
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
                    "ENDING",
                ],
                [
                    [
                        e.name,
                        e.status + (" (forced)" if e.forced else ""),
                        e.control,
                        e.candidate,
                        _traffic_cell(e),
                        e.started_at,
                        e.ended_at or "-",
                        _verdict_cell(e),
                        e.ending or "-",
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


def _traffic_cell(e: Experiment) -> str:
    """The candidate's share; with a rollout its steps, the current one bracketed, and the
    rollout's state when it is not running: `10% 10→[50]→100 paused`."""
    share = f"{percent(e.traffic_bp):g}%"
    r = e.rollout
    if r is None:
        return share
    steps = "→".join(
        f"[{percent(bp):g}]" if i == r.step else f"{percent(bp):g}" for i, bp in enumerate(r.steps)
    )
    return f"{share} {steps}" + ("" if r.state == "running" else f" {r.state}")


def _verdict_cell(e: Experiment) -> str:
    """An ended test's verdict as it ended; a running one's is `beast monitor`'s to compute
    (status stays cold-fast: no numpy), and pre-0010 endings were never kept."""
    if e.status == "running":
        return "running (see beast monitor)"
    return e.verdict or "not kept"


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
        ["#", "WHEN", "WHO", "LINE", "ACTION", "FROM", "TO", "TEST", "NOTE", "EVIDENCE"],
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
                e.evidence_summary(),
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
                    report.scorers.get(a.sha256, ("-", ""))[0],
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
                    "SCORER",
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
        why = [
            f"  {', '.join(a.versions) or a.sha256[:12]}: {report.scorers[a.sha256][0]} — "
            f"{report.scorers[a.sha256][1]}"
            for a in report.artifacts
            if a.sha256 in report.scorers
        ]
        if why:
            out.append("\nsingle rows scored by (batches: XGBoost):")
            out.extend(text.escape(line) for line in why)
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


# Each task's metric columns: (JSON key, header), engine.core.tasks.METRICS' order.
_METRIC_COLUMNS = {
    tasks.REGRESSION: (("accuracy", "ACCURACY"), ("mae", "MAE"), ("rmse", "RMSE")),
    tasks.BINARY: (
        ("auc", "AUC"),
        ("accuracy", "ACC"),
        ("log_loss", "LOGLOSS"),
        ("precision", "PREC"),
        ("recall", "RECALL"),
        ("brier", "BRIER"),
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
        if v.waiting is not None and v.window.predictions:
            out.append(text.escape(f"  waiting  {v.version}: {v.waiting}"))
        for f in v.findings:
            out.append(text.escape(f"  {f.severity.upper():8} {v.version}: {f.message}"))
        if v.drift.features and (v.drift.data or 0) >= 0.1:
            # Feature names come from the model file.
            worst = ", ".join(f"{d.name} {sig(d.psi)}" for d in v.drift.features[:3])
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
    out += [experiment(e) for e in report.experiments]
    out += [_shadow(s) for s in report.shadows]
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


def _shadow(found: ShadowReport) -> str:
    v, s = found.verdict, found.shadow
    valid = "" if found.valid else " (not valid: the line's prediction changes the outcome)"
    return text.escape(
        f"shadow {s.line}/{s.version} beside production {found.production}: "
        f"{percent(s.share_bp):g}% of requests, {s.scored:,} scored, {s.dropped:,} skipped, "
        f"{found.comparison.n:,} labelled pairs; paired verdict {v.outcome} on {v.metric} "
        f"(diff {sig(v.diff)}, interval {sig(v.lo)} to {sig(v.hi)}, p {sig(v.p)}){valid}"
    )


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
                f"{v.window.predictions:,}",
                f"{v.window.labelled:,}",
                *(sig(found[key]) for key, _ in columns),
                sig(v.window.latency_ms()["p95"]),
                sig(v.window.error_rate),
                pct(v.drift.model),
                v.baseline.source or "-",
                sig(v.drift.data),
                v.health,
            ]
        )
    headers = [
        "LINE",
        "VERSION",
        "ROLE",
        "TRAFFIC",
        "PRED",
        "LABELLED",
        *(header for _, header in columns),
        "P95 MS",
        "ERRORS",
        "DRIFT",
        "BASELINE",
        "PSI",
        "HEALTH",
    ]
    return table(headers, rows, indent="")


def experiment(e: ExperimentReport) -> str:
    """A test's verdict, then per arm its predictions and labelled predictions (PRED,
    LABELLED: the test's own, since it started) and the metrics the verdict compares."""
    verdict = e.verdict
    binary = e.task == tasks.BINARY
    keys = (("auc", "AUC"),) if binary else (("accuracy", "ACCURACY"), ("mae", "MAE"))
    rows = [
        [
            arm,
            version,
            f"{window.predictions:,}",
            f"{window.labelled:,}",
            *(sig(window.metrics(e.task)[key]) for key, _ in keys),
        ]
        for arm, version, window in (
            ("control", e.experiment.control, e.control),
            ("candidate", e.experiment.candidate, e.candidate),
        )
    ]
    head = f"A/B {e.experiment.name}: {verdict.outcome} ({verdict.reason})"
    figures = (
        f"  {verdict.metric} diff {signed(verdict.diff)} "
        f"[{signed(verdict.lo)}, {signed(verdict.hi)}] (margin ±{verdict.margin:g}), "
        f"always-valid p {sig(verdict.p)}"
    )
    return "\n".join(
        [
            text.escape(head),
            table(["ARM", "VERSION", "PRED", "LABELLED", *(h for _, h in keys)], rows),
            figures,
            *_narrowing(e),
        ]
    )


def _narrowing(e: ExperimentReport) -> list[str]:
    """How the interval narrowed over the minutes `e.interval` holds (none under two)."""
    if len(e.interval) < 2:
        return []
    first, last = e.interval[0], e.interval[-1]
    ends = ((p.minute, p.lo, p.hi) for p in (first, last))
    return [f"  {narrowing(next(ends), next(ends), len(e.interval))}"]
