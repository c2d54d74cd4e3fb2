"""The History view (`H`): every change, newest first, and the evidence behind each.

A change records with its history row the figures it was decided on (`HistoryEntry.evidence`:
health, the alerts firing, the A/B verdict with n and p, drift by feature). Its keys belong to
the engine and may grow, so it is drawn generically: a nested object as indented `key: value`
lines, a list of objects as a table, numbers for people (`console.format.sig`, counts whole).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from console import format as fmt
from engine import HistoryEntry, sig

NO_EVIDENCE = "no evidence recorded (decided before evidence was kept, or on nothing measured)"
COLUMNS = ("#", "when", "who", "line", "action", "from → to", "test", "ev", "note")


def scalar(value: object) -> str:
    """One value of the evidence as people read it: numbers rounded, text escaped."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return sig(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{fmt.safe(k)} {scalar(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(scalar(v) for v in value)
    return fmt.safe(value)


def evidence_view(evidence: Mapping[str, Any] | None) -> RenderableType:
    """The evidence of one change, or why there is none."""
    if evidence is None:
        return Text(NO_EVIDENCE, style="italic")
    if not evidence:
        return Text("evidence: (empty)", style="italic")
    return Group(*_block(evidence, 0))


def _block(value: Mapping[str, Any], depth: int) -> list[RenderableType]:
    out: list[RenderableType] = []
    pad = "  " * depth
    for key, item in value.items():
        label = f"{pad}{fmt.safe(key)}:"
        style = "bold" if depth == 0 else ""
        if isinstance(item, Mapping):
            out.append(Text(label, style=style))
            out += _block(item, depth + 1) or [Text(f"{pad}  (none)")]
        elif isinstance(item, list | tuple) and _is_rows(item):
            out.append(Text(label, style=style))
            out.append(Padding(_table(item), (0, 0, 0, 2 * depth + 2)))
        elif isinstance(item, list | tuple) and item and all(isinstance(i, Mapping) for i in item):
            out.append(Text(label, style=style))  # objects holding objects: a block each
            for n, part in enumerate(item, 1):
                name = part.get("version") or part.get("name") or n
                out.append(Text(f"{pad}  - {fmt.safe(name)}", style="bold"))
                out += _block(part, depth + 2)
        elif isinstance(item, list | tuple) and len(scalar(item)) > 60:
            out.append(Text(label, style=style))
            out += [Text(f"{pad}  {scalar(v)}") for v in item]
        else:
            line = Text(label, style=style)
            line.append(f" {scalar(item) if item != [] else '(none)'}", style="")
            out.append(line)
    return out


def _is_rows(items: Sequence[object]) -> bool:
    """Objects of plain values (alerts, features): rows of one table."""
    return bool(items) and all(
        isinstance(i, Mapping)
        and not any(isinstance(v, Mapping | list | tuple) for v in i.values())
        for i in items
    )


def _table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """A list of objects (alerts, features) as rows, one column per key seen."""
    rows = list(rows)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    table = Table(box=None, padding=(0, 2, 0, 0), show_edge=False, header_style="bold dim")
    for key in keys:
        table.add_column(fmt.safe(key))
    for row in rows:
        table.add_row(*(scalar(row.get(k)) for k in keys))
    return table


def when(entry: HistoryEntry) -> str:
    """The minute of a change (UTC), as the action log and the details show times."""
    return entry.at[:16].replace("T", " ")


def action_of(entry: HistoryEntry) -> str:
    return entry.action + (" (forced)" if entry.forced else "")


def transition(entry: HistoryEntry) -> str:
    """`v2.0 → v1.0`, with the candidate and its share when one serves after."""
    before, after = entry.from_state, entry.to_state
    text = f"{before.production or '-'} → {after.production or '-'}"
    if after.candidate:
        text += f" +{after.candidate} {fmt.percent(after.candidate_bp)}"
    return text


class HistoryScreen(ModalScreen[None]):
    """Every change of every line, newest first; `enter` opens the evidence of one."""

    DEFAULT_CSS = """
    HistoryScreen { background: $background; }
    HistoryScreen #history-title { padding: 0 1; text-style: bold; }
    HistoryScreen DataTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "evidence", "Evidence", priority=True, id="history-evidence"),
        Binding("escape,q", "close", "Close", id="history-close"),
        Binding("j", "move(1)", "Down", show=False, id="history-down"),
        Binding("k", "move(-1)", "Up", show=False, id="history-up"),
    ]

    def __init__(self, entries: Sequence[HistoryEntry]) -> None:
        super().__init__()
        self.entries = sorted(entries, key=lambda e: e.id, reverse=True)

    def compose(self) -> ComposeResult:
        count = len(self.entries)
        lines = sorted({e.line for e in self.entries})
        # One line: named once in the title, so 80 columns keep the test and the note.
        single = lines[0] if len(lines) == 1 else None
        title = Text("History" + (f" of {fmt.safe(single)}" if single else ""), style="bold")
        title.append(f" · {count:,} change{'s' if count != 1 else ''}, newest first")
        yield Static(title, id="history-title")
        table: DataTable[str | Text] = DataTable(id="history-table", cursor_type="row")
        table.add_columns(*(c for c in COLUMNS if not (single and c == "line")))
        for e in self.entries:
            cells: list[str | Text] = [
                str(e.id),
                when(e),
                fmt.cell(e.actor),
                fmt.cell(e.line),
                action_of(e),
                fmt.cell(transition(e)),
                fmt.cell(e.experiment or "-"),
                "yes" if e.evidence is not None else "-",
                fmt.cell(e.note or ""),
            ]
            if single:
                del cells[3]
            table.add_row(*cells, key=str(e.id))
        if not self.entries:
            table.add_row("-", "", "", "no changes yet", *[""] * (len(COLUMNS) - 4))
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def selected(self) -> HistoryEntry | None:
        """The entry under the cursor."""
        table = self.query_one(DataTable)
        if not self.entries or table.cursor_row >= len(self.entries):
            return None
        return self.entries[table.cursor_row]

    def action_evidence(self) -> None:
        entry = self.selected()
        if entry is not None:
            self.app.push_screen(EvidenceScreen(entry))

    def action_move(self, step: int) -> None:
        """`j` / `k` as in the panes."""
        table = self.query_one(DataTable)
        table.action_cursor_down() if step > 0 else table.action_cursor_up()

    def action_close(self) -> None:
        self.dismiss(None)


class EvidenceScreen(ModalScreen[None]):
    """One change and the figures it was decided on."""

    DEFAULT_CSS = """
    EvidenceScreen { background: $background; }
    EvidenceScreen #evidence { padding: 0 1; }
    EvidenceScreen .evidence-head { margin-bottom: 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back", id="evidence-close"),
    ]

    def __init__(self, entry: HistoryEntry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        e = self.entry
        head = Text(f"#{e.id} {action_of(e)} on ", style="bold")
        head.append(fmt.safe(e.line), style="bold")
        facts = [
            ("when", when(e)),
            ("who", e.actor),
            ("from → to", transition(e)),
            ("test", e.experiment or "-"),
            ("note", e.note or "-"),
        ]
        for key, value in facts:
            head.append(f"\n{key}: ", style="dim")
            head.append(fmt.safe(value))
        with VerticalScroll(id="evidence"):
            yield Static(head, classes="evidence-head")
            yield Static(Text("Evidence", style="bold underline"))
            yield Static(evidence_view(e.evidence), id="evidence-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#evidence", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
