"""Full screens over the main one: the key help and the details of a version."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from console import format as fmt
from engine import HistoryEntry, Lineage, VersionReport, sig


class HelpScreen(ModalScreen[None]):
    """Every key, as currently bound (a remapped key shows its new key)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", id="help-close"),
    ]

    def __init__(self, rows: list[tuple[str, str]], readonly: bool) -> None:
        super().__init__()
        self.rows = rows
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for keys, text in self.rows:
            table.add_row(keys, text)
        note = (
            "read-only: mutations are hidden and refused"
            if self.readonly
            else "capitals change production: each asks first, Cancel is the default"
        )
        with VerticalScroll(id="help"):
            yield Static(Text("beast console · keys", style="bold"))
            yield Static(table)
            yield Static(Text(note, style="italic"))
            yield Static("escape closes")
        yield Footer()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


class DetailsScreen(Screen[None]):
    """One version: lineage, metrics per window, drift by feature, history."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back", id="details-close"),
    ]

    def __init__(
        self,
        key: str,
        lineage: Lineage | None,
        report: VersionReport | None,
        history: list[HistoryEntry],
        problem: str | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self.lineage = lineage
        self.report = report
        self.history = history
        self.problem = problem

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="details"):
            yield Static(fmt.cell(self.key, style="bold"), id="details-title")
            if self.problem:
                yield Static(fmt.cell(self.problem, style="bold red"))
            yield Static(_lineage(self.lineage), classes="details-section")
            yield Static(_metrics(self.report), classes="details-section")
            yield Static(_drift(self.report), classes="details-section")
            yield Static(_history(self.history), classes="details-section")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)


def _section(title: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, expand=False)
    return table


def _lineage(lineage: Lineage | None) -> Table:
    table = _section("Lineage")
    table.add_column("")
    table.add_column("")
    if lineage is None:
        table.add_row("-", "unavailable")
        return table
    a = lineage.artifact
    cell = fmt.cell  # a file's name and its sidecar's facts: anything at all
    table.add_row("file", cell(a.path.rsplit("/", 1)[-1]))
    table.add_row("sha256", a.sha256[:16])
    table.add_row("registered", cell(f"{a.registered_at} by {a.registered_by}"))
    table.add_row("features", cell(f"{a.n_features:,} ({', '.join(a.feature_names or ())[:60]})"))
    table.add_row("names", cell(", ".join(a.versions)))
    for key, value in lineage.facts or (("sidecar", "none"),):
        table.add_row(cell(key), cell(fact(value)))
    return table


def fact(value: str) -> str:
    """A sidecar fact as people read it: a number rounded (`0.821`, `16,000`), else as is."""
    try:
        number = float(value)
    except ValueError:
        return value
    if value.strip().lstrip("+-").isdigit():
        return f"{int(value):,}"
    return sig(number)


def _metrics(report: VersionReport | None) -> Table:
    table = _section("Metrics")
    for name in (
        "window",
        "predictions",
        "labelled",
        "accuracy",
        "mae",
        "p95 ms",
        "errors",
        "health",
    ):
        table.add_column(name)
    if report is None:
        table.add_row("-", "not serving")
        return table
    for window, w in report.windows.items():
        table.add_row(
            window,
            f"{w.predictions:,}",
            f"{w.labelled:,}",
            sig(w.accuracy),
            sig(w.mae),
            sig(w.latency_ms()["p95"]),
            sig(w.error_rate),
            report.health if window == "1h" else "",
        )
    return table


def _drift(report: VersionReport | None) -> Table:
    table = _section("Drift by feature (1h)")
    for name in ("feature", "psi", "ks", "level"):
        table.add_column(name)
    features = report.drift.features if report is not None else ()
    if report is not None:
        model = report.drift.model
        table.add_row(
            "model",
            "-" if model is None else f"{sig(model * 100)}%",
            "",
            "relative to the version's baseline",
        )
        table.add_row("score", sig(report.drift.score_psi), "", "")
    for f in features:
        table.add_row(fmt.cell(f.name), sig(f.psi), sig(f.ks), f.level)
    if report is None or (not features and report.drift.data is None):
        table.add_row("-", "-", "-", "not enough data")
    return table


def _history(entries: list[HistoryEntry]) -> Table:
    table = _section("History")
    for name in ("#", "at", "by", "action", "from → to"):
        table.add_column(name)
    for e in entries[-15:]:
        table.add_row(
            str(e.id),
            fmt.cell(e.at[:19].replace("T", " ")),
            fmt.cell(e.actor),
            e.action + (" (forced)" if e.forced else ""),
            fmt.cell(
                f"{e.from_state.production or '-'} → {e.to_state.production or '-'}"
                + (f" +{e.to_state.candidate}" if e.to_state.candidate else "")
            ),
        )
    if not entries:
        table.add_row("-", "", "", "no history for this version", "")
    return table
