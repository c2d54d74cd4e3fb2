"""The five panes. Each draws a `ConsoleData`; tables are updated by row key, never cleared."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Static

from console import format as fmt
from console.data import ConsoleData, VersionRow
from console.series import VersionSeries
from console.sparkline import MetricSpark, Scale, band, by_cell, interval_rows
from engine import Config, ExperimentReport, VersionReport, sig

Cells = tuple[Any, ...]


class SyncTable(DataTable[Any]):
    """A DataTable kept in step with a list of keyed rows: update, add, remove, reorder.

    The cursor follows its row key, so a refresh never moves what the operator points at.
    Columns size to their content, growing and shrinking as cells change; the `flex` column
    (free text: an alert's message, a job's result) is cut with `…` to the room the others
    leave, and only when the table is narrower than its content.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False, id="down"),
        Binding("k", "cursor_up", "Up", show=False, id="up"),
    ]

    def __init__(
        self, columns: Sequence[tuple[str, str]], *, flex: str | None = None, **kw: Any
    ) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kw)
        self._columns = columns
        self._flex = flex
        self._wanted: list[tuple[str, Cells]] = []

    def on_mount(self) -> None:
        for key, label in self._columns:
            self.add_column(label, key=key)

    def on_resize(self) -> None:
        if self._wanted:
            self.sync(self._wanted)

    @property
    def cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return None if row_key.value is None else str(row_key.value)

    def sync(self, rows: Sequence[tuple[str, Cells]]) -> None:
        """Make the table show `rows` (key, cells) in that order, keeping the cursor's row."""
        self._wanted = list(rows)
        rows = self._fit(rows)
        keep = self.cursor_key
        wanted = dict(rows)
        for gone in [k for k in list(self.rows) if k.value not in wanted]:
            self.remove_row(gone)
        column_keys = [key for key, _ in self._columns]
        for key, cells in rows:
            if key in self.rows:
                old = self.get_row(key)
                for column, value, before in zip(column_keys, cells, old, strict=True):
                    if value != before:
                        # The column follows its widest cell: `running` after `queued`
                        # must not read `runnin`.
                        self.update_cell(key, column, value, update_width=True)
            else:
                self.add_row(*cells, key=key)
        order = {_plain(cells[0]): i for i, (_, cells) in enumerate(rows)}
        if [k.value for k in self._row_order()] != [key for key, _ in rows]:
            self._sort_by(order)
        if keep is not None and keep in self.rows:
            index = self.get_row_index(keep)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    def _fit(self, rows: Sequence[tuple[str, Cells]]) -> list[tuple[str, Cells]]:
        """The rows with the flex column's cells cut to the room left, when there is less
        room than text (an unmeasured table, before its first layout, cuts nothing)."""
        width = self.scrollable_content_region.width
        if self._flex is None or width <= 0 or not rows:
            return list(rows)
        keys = [key for key, _ in self._columns]
        at = keys.index(self._flex)
        pad = 2 * self.cell_padding
        widths = [
            max(cell_len(label), *(cell_len(_plain(cells[i])) for _, cells in rows)) + pad
            for i, (_, label) in enumerate(self._columns)
        ]
        room = max(8, width - (sum(widths) - widths[at]) - pad)
        if widths[at] - pad <= room:
            return list(rows)
        return [
            (key, (*cells[:at], _cut(cells[at], room), *cells[at + 1 :])) for key, cells in rows
        ]

    def _row_order(self) -> list[Any]:
        return sorted(self.rows, key=self.get_row_index)

    def _sort_by(self, order: dict[str, int]) -> None:
        # The first column holds each row's key text (unique), so it can carry the order.
        first = self._columns[0][0]
        self.sort(first, key=lambda cell: order.get(_plain(cell), len(order)))


def _cut(cell: Any, width: int) -> Any:
    text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return text


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


class Pane(Vertical):
    """A titled, focusable-through-its-child, maximizable pane."""

    ALLOW_MAXIMIZE = True

    def __init__(self, number: int, title: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.number = number
        self.base_title = title
        self.border_title = f"{number} {title}"

    def retitle(self, suffix: str = "") -> None:
        # A Text, not a str: a title is markup otherwise, and a suffix may quote a name.
        self.border_title = Text(f"{self.number} {self.base_title}{suffix}")

    @property
    def focus_target(self) -> Any:
        return self.query_one(".pane-focus")


# -- 1 Deployments -----------------------------------------------------------------------------


class DeploymentsPane(Pane):
    def compose(self) -> ComposeResult:
        yield DeploymentTable(
            [
                ("version", "version"),
                ("role", "role"),
                ("traffic", "%"),
                ("health", "health"),
                ("since", "since"),
            ],
            id="deployments-table",
            classes="pane-focus",
        )

    def draw(self, data: ConsoleData, *, ascii_only: bool, needle: str) -> None:
        many = len(data.status.lines) > 1
        rows = []
        for row in data.versions:
            words = f"{row.key} {' '.join(row.aliases)} {row.role} {row.experiment or ''}"
            if needle and needle not in words.lower():
                continue
            report = data.version_report(row.key)
            health = (
                fmt.health_text(report.health, ascii_only=ascii_only)
                if report is not None
                else Text("-" if row.role == "registered" else "?")
            )
            rows.append(
                (
                    row.key,
                    (
                        fmt.cell(f"{row.line}/{row.label}" if many else row.label),
                        _role(row),
                        fmt.percent(row.traffic_bp) if row.role != "registered" else "-",
                        health,
                        fmt.since(row.since, data.fetched_at) if row.role != "registered" else "-",
                    ),
                )
            )
        self.query_one(DeploymentTable).sync(rows)
        self.retitle(f" (filter: {needle})" if needle else "")


def _role(row: VersionRow) -> Text:
    if row.role == "production":
        return Text("production", style="bold")
    if row.role == "candidate":
        return Text("candidate")
    return Text("registered", style="dim")


class DeploymentTable(SyncTable):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Details", id="details"),
    ]


# -- 2 Metrics ---------------------------------------------------------------------------------

_ROWS = (
    ("primary", "acc"),  # a binary line's: auc, acc (engine.core.tasks.PRIMARY first)
    ("second", "mae"),
    ("p95", "p95"),
    ("errors", "err"),
    ("traffic", "n/m"),
    ("drift", "drift"),
)


class MetricsPane(Pane):
    can_focus = True

    def compose(self) -> ComposeResult:
        yield Static("no version selected", id="metrics-empty", classes="pane-focus-label")
        for metric, label in _ROWS:
            with Horizontal(classes="metric-row", id=f"metric-{metric}"):
                yield Label(label, classes="metric-name")
                yield MetricSpark(classes="metric-spark", id=f"spark-{metric}")
                yield Label("-", classes="metric-value", id=f"value-{metric}")

    @property
    def focus_target(self) -> Any:
        return self

    def draw(
        self,
        row: VersionRow | None,
        report: VersionReport | None,
        series: VersionSeries | None,
        config: Config,
        *,
        ascii_only: bool = False,
    ) -> None:
        self.query_one("#metrics-empty", Static).display = row is None or report is None
        if row is None:
            self.retitle()
            return
        self.retitle(f": {fmt.safe(row.version)}")
        if report is None:
            self.query_one("#metrics-empty", Static).update(fmt.cell(f"{row.version}: not serving"))
        values = _metric_values(report, config)
        binary = report is not None and report.task == "binary"
        self.query_one("#metric-primary .metric-name", Label).update("auc" if binary else "acc")
        self.query_one("#metric-second .metric-name", Label).update("acc" if binary else "mae")
        for metric, _ in _ROWS:
            data = series.values(metric) if series is not None else ()
            scale = _scale(metric, data, config, binary=binary)
            self.query_one(f"#spark-{metric}", MetricSpark).show(data, scale, ascii_only=ascii_only)
            self.query_one(f"#value-{metric}", Label).update(values[metric])


def _scale(metric: str, values: tuple[float | None, ...], config: Config, *, binary: bool) -> Scale:
    """Each sparkline's band: its alert threshold in view, a ratio's ceiling at 1."""
    t = config.thresholds
    if metric == "primary":
        least = t.auc_min if binary else t.accuracy_min
        return band(values, threshold=least, ceiling=1.0)
    if metric == "second" and binary:
        return band(values, ceiling=1.0)
    if metric == "p95":
        return band(values, threshold=t.latency_max_ms, higher_is_better=False)
    if metric == "errors":
        return band(values, threshold=t.error_rate_max, higher_is_better=False)
    if metric == "drift":
        return band(values, threshold=t.drift_threshold, higher_is_better=False)
    return band(values, higher_is_better=False)  # MAE, traffic: from 0 to their highest


def _metric_values(report: VersionReport | None, config: Config) -> dict[str, str]:
    t = config.thresholds
    if report is None:
        return {metric: "-" for metric, _ in _ROWS}
    w = report.window
    p95 = w.latency_ms()["p95"]
    drift = report.drift
    psi = f" psi {sig(drift.data)}" if drift.data is not None else ""
    # A drift figure names its baseline's source (reference file, training, first labels).
    source = _SOURCES.get(report.baseline.source or "", "") if drift.model is not None else ""
    if report.task == "binary":
        value, low, tail = w.auc, t.auc_min, f" ll {sig(w.log_loss)}"
        second = f"{sig(w.accuracy)} p {sig(w.precision)} r {sig(w.recall)} br {sig(w.brier)}"
    else:
        value, low, tail = w.accuracy, t.accuracy_min, ""
        tolerance = config.line(report.line).tolerance_points
        second = f"{sig(w.mae)} pts (±{fmt.setting(tolerance)} ok)"
    if report.waiting is None:
        primary = f"{sig(value)} (min {fmt.setting(low)}){tail}"
    else:  # not judged yet: how many labels it waits for
        primary = f"{sig(value)} (wait: {w.labelled:,}/{config.monitoring.min_labelled:,} lab)"
    model = drift.model
    return {
        "primary": primary,
        "second": second,
        "p95": f"{sig(p95)} ms (max {fmt.setting(t.latency_max_ms)})",
        "errors": f"{sig(w.error_rate)} (max {fmt.setting(t.error_rate_max)})",
        "traffic": f"{sig(w.predictions)} pred, {sig(w.labelled)} lab,"
        f" {fmt.percent(report.traffic_bp)}",
        "drift": f"{_pct(model)} (max {fmt.setting(t.drift_threshold * 100)}%){source}{psi}",
    }


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{sig(ratio * 100)}%"


_SOURCES = {"reference": " ref", "training": " train", "first_labelled": " 1st"}


# -- 3 Alerts ----------------------------------------------------------------------------------


class AlertsPane(Pane):
    def compose(self) -> ComposeResult:
        yield SyncTable(
            [
                ("id", "#"),
                ("severity", "sev"),
                ("status", "status"),
                ("version", "version"),
                ("message", "alert"),
                ("age", "age"),
            ],
            flex="message",
            id="alerts-table",
            classes="pane-focus",
        )

    def draw(self, data: ConsoleData, *, ascii_only: bool, needle: str) -> None:
        alerts = data.report.alerts if data.report is not None else ()
        rows = []
        for alert in alerts:
            text = f"{alert['version']} {alert['message']} {alert['status']}".lower()
            if needle and needle not in text:
                continue
            resolved = alert["status"] != "firing"
            rows.append(
                (
                    f"#{alert['id']}",
                    (
                        f"#{alert['id']}",
                        fmt.severity_text(alert["severity"], ascii_only=ascii_only),
                        Text(alert["status"], style="dim" if resolved else "bold"),
                        fmt.cell(alert["version"]),
                        fmt.cell(alert["message"]),
                        fmt.since(
                            alert["resolved_at"] if resolved else alert["first_seen"],
                            data.fetched_at,
                        ),
                    ),
                )
            )
        self.query_one(SyncTable).sync(rows)
        firing = sum(1 for a in alerts if a["status"] == "firing")
        self.retitle(f" ({firing} firing)" if firing else "")


# -- 4 A/B -------------------------------------------------------------------------------------


class ABPane(Pane):
    """Per arm: predictions (`pred`) and labelled predictions (`lab`), the metrics and p95,
    all from the `ExperimentReport` whose evidence the lines below draw: one source."""

    def compose(self) -> ComposeResult:
        yield SyncTable(
            [
                ("arm", "arm"),
                ("version", "version"),
                ("pred", "pred"),
                ("lab", "lab"),
                ("first", "acc"),
                ("second", "mae"),
                ("p95", "p95 ms"),
            ],
            id="ab-table",
            classes="pane-focus",
        )
        yield ABEvidence(id="ab-verdict")

    def draw(self, data: ConsoleData, *, ascii_only: bool = False) -> None:
        tests = data.report.experiments if data.report is not None else ()
        rows = []
        for test in tests:
            exp = test.experiment
            for arm, version, window in (
                ("control", exp.control, test.control),
                ("candidate", exp.candidate, test.candidate),
            ):
                share = exp.traffic_bp if arm == "candidate" else 10_000 - exp.traffic_bp
                if test.task == "binary":  # the cells name their metric: auc, log loss
                    first, second = f"auc {sig(window.auc)}", f"ll {sig(window.log_loss)}"
                else:
                    first, second = sig(window.accuracy), sig(window.mae)
                rows.append(
                    (
                        f"{exp.name}:{arm}",
                        (
                            fmt.cell(f"{exp.name}:{arm}"),
                            fmt.cell(f"{version} {fmt.percent(share)}"),
                            sig(window.predictions),
                            sig(window.labelled),
                            first,
                            second,
                            sig(window.latency_ms()["p95"]),
                        ),
                    )
                )
        self.query_one(SyncTable).sync(rows)
        self.query_one(ABEvidence).show(tuple(tests), ascii_only=ascii_only)
        self.retitle(f" {fmt.safe(tests[0].experiment.name)}" if len(tests) == 1 else "")


class ABEvidence(Static):
    """Each running test's evidence (`evidence`), redrawn in place when what it shows
    changes (a poll with the same figures draws nothing) or its width does."""

    # A line too long for the pane is cut with `…` at its edge, never wrapped: the pane's
    # height stays the number of lines, and the figures come first on each line.
    DEFAULT_CSS = "ABEvidence { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__("no running A/B test", **kw)
        self.tests: tuple[ExperimentReport, ...] = ()
        self.ascii_only = False
        self._drawn: tuple[object, ...] = ()

    def show(self, tests: tuple[ExperimentReport, ...], *, ascii_only: bool = False) -> None:
        self.tests, self.ascii_only = tests, ascii_only
        text = self._text()
        if (text.plain, tuple(text.spans)) != self._drawn:
            self.refresh(layout=True)

    def render(self) -> Text:
        # Drawn here, to the width it is rendered at: a resize re-renders it. Drawn from
        # `show` and `on_resize` instead, the maximized pane (`z`) kept, about half the time,
        # the evidence drawn to the narrower pane before it (no Resize reached it).
        text = self._text()
        self._drawn = (text.plain, tuple(text.spans))
        return text

    def _text(self) -> Text:
        width = self.content_region.width
        lines = [
            line for t in self.tests for line in evidence(t, width, ascii_only=self.ascii_only)
        ]
        return Text("\n").join(lines) if lines else Text("no running A/B test")


def evidence(test: ExperimentReport, width: int, *, ascii_only: bool = False) -> list[Text]:
    """A test's evidence, a line each, cut to `width`: the always-valid verdict (outcome,
    the primary metric's difference, its interval and the margin, p), what it was judged
    on and why; the interval's bounds minute by minute around −margin; the sample-ratio
    check; the rollout's steps with the current one marked. A part without data is left
    out (a plain test has no rollout)."""
    v, name = test.verdict, test.experiment.name
    short = "auc" if v.metric == "auc" else "acc"
    n = f"lab {sig(test.control.labelled)} / {sig(test.candidate.labelled)}"
    lines = [
        fmt.cell(f"{name}: {v.outcome} · p={fmt.p_value(v.p)} · {n}"),
        Text.assemble(
            f"{short} {sig(v.diff)} [{sig(v.lo)}, {sig(v.hi)}] · margin ±{fmt.setting(v.margin)}",
            fmt.cell(f" · {v.reason}", style="dim"),
        ),
        *_interval(test, width, ascii_only=ascii_only),
        *_srm(test),
        *_rollout(test, ascii_only=ascii_only),
    ]
    return lines


def _interval(test: ExperimentReport, width: int, *, ascii_only: bool) -> list[Text]:
    """`hi ▇▆▅▅▄ -0.305` over `lo ▁▂▂▃▃ -0.545 · −margin at ▅`: the bounds narrowing."""
    points = sorted(test.interval, key=lambda p: p.minute)
    if not points:
        return []
    last, margin = points[-1], test.verdict.margin
    his, los = f" {sig(last.hi)}", f" {sig(last.lo)} · -margin at "
    room = max(0, width - 3 - max(len(his), len(los) + 1))
    cells = by_cell([p.minute for p in points], room)
    hi = [None if i is None else points[i].hi for i in cells]
    lo = [None if i is None else points[i].lo for i in cells]
    upper, lower, mark = interval_rows(lo, hi, margin, room, ascii_only=ascii_only)
    return [
        Text.assemble("hi ", upper, his),
        Text.assemble("lo ", lower, los, mark),
    ]


def _srm(test: ExperimentReport) -> list[Text]:
    """Nothing before the split was checked; `srm ok p=…`, or the mismatch in red (yellow
    once acknowledged: it no longer blocks promotion)."""
    srm = test.srm
    if srm is None:
        return []
    if not srm.mismatch:
        return [Text(f"srm ok p={fmt.p_value(srm.p)}")]
    state = "acknowledged" if srm.acknowledged else "unacknowledged"
    return [
        Text(
            f"SRM p={fmt.p_value(srm.p)} ({state}) · {srm.noun[:4]} {sig(srm.control)} /"
            f" {sig(srm.candidate)}, expected {fmt.percent(round(srm.share * 10_000))} candidate",
            style="yellow" if srm.acknowledged else "bold red",
        )
    ]


_ROLLOUT_STYLE = {"paused": "yellow", "rolled back": "bold red", "aborted": "dim"}


def _rollout(test: ExperimentReport, *, ascii_only: bool) -> list[Text]:
    """`rollout 5% → [25%] → 50% → 100% · running`: the current step in brackets."""
    rollout = test.experiment.rollout
    if rollout is None:
        return []
    arrow = " -> " if ascii_only else " → "
    steps = [fmt.percent(bp) for bp in rollout.steps]
    if 0 <= rollout.step < len(steps):
        steps[rollout.step] = f"[{steps[rollout.step]}]"
    state = Text(rollout.state, style=_ROLLOUT_STYLE.get(rollout.state, "bold"))
    return [Text.assemble(f"rollout {arrow.join(steps)} · ", state)]


# -- 5 Jobs ------------------------------------------------------------------------------------


class JobsPane(Pane):
    def compose(self) -> ComposeResult:
        yield SyncTable(
            [
                ("id", "#"),
                ("trigger", "trigger"),
                ("status", "status"),
                ("progress", "progress"),
                ("result", "result"),
            ],
            flex="result",
            id="jobs-table",
            classes="pane-focus",
        )

    def draw(self, data: ConsoleData) -> None:
        if data.jobs is None:
            self.query_one(SyncTable).sync(
                [("unavailable", ("-", "retraining jobs unavailable", "", "", ""))]
            )
            return
        rows = [
            (
                f"#{job.id}",
                (
                    f"#{job.id}",
                    fmt.cell(job.trigger),
                    job.status,
                    f"{sig(job.progress * 100)}%",
                    fmt.cell(
                        _job_result(job.status, job.version, job.deployed, job.reason, job.error)
                        or job.message
                    ),
                ),
            )
            for job in data.jobs
        ]
        self.query_one(SyncTable).sync(rows)


def _job_result(
    status: str, version: str | None, deployed: bool, reason: str | None, error: str | None
) -> str:
    if status == "failed":
        return f"failed: {error or reason or '?'}"
    if status == "succeeded":
        made = f"{version} registered" if version else "no new version"
        tail = ", deployed" if deployed else ""
        return f"{made}{tail}" + (f" ({reason})" if reason else "")
    return ""
