"""`BeastConsole`: the full-screen ops console. Draws `ConsoleData`, asks before it changes.

Live without harm: one poll at a time in a thread worker, the next scheduled when it ends;
tables updated by row key; every engine call (reads and mutations) off the event loop.
Safety: mutations are capitals behind a confirm dialog with Cancel focused; read-only mode
is one check (`mutation_allowed`) for keys, footer and palette, and the gateway refuses too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, ParamSpec

from rich.text import Text
from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Input, Log, Static

from console import format as fmt
from console import proposals, styles
from console.commands import ConsoleCommands
from console.data import ConsoleData, fetch
from console.dialogs import ConfirmScreen, DeployForm
from console.gateway import Gateway
from console.history import HistoryScreen
from console.keybar import KeyBar, Shown
from console.nudge import Nudge
from console.panes import (
    ABPane,
    AlertsPane,
    DeploymentsPane,
    DeploymentTable,
    JobsPane,
    MetricsPane,
    Pane,
)
from console.proposals import DeployRequest, Proposal, Refused
from console.screens import DetailsScreen, HelpScreen
from console.series import SeriesBook
from engine import BeastError, StateChanged

MUTATIONS = ("rollback", "promote", "abort", "retrain", "deploy")
Clock = Callable[[], float]
P = ParamSpec("P")


def _while_mounted(draw: Callable[P, None]) -> Callable[P, None]:
    """Skip a draw when the panes are gone: a clock tick or a poll's result can land while
    the app is tearing its screen down at exit. A draw never raises into the event loop."""

    @functools.wraps(draw)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        with contextlib.suppress(NoMatches):
            draw(*args, **kwargs)

    return guarded


class BeastConsole(App[None]):
    """The console over one workspace."""

    class Nudged(Message):
        """The deployments or models changed on disk (posted from the nudge's thread)."""

        def __init__(self, failure: str | None = None) -> None:
            super().__init__()
            self.failure = failure  # why watching stopped, or None for a change

    CSS = styles.CSS
    TITLE = "beast console"
    # Textual declares this an instance attribute; a class-level list is how it is meant to be set.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    # A maximized pane keeps the header (engine, health, RO) and every key above and below it.
    ALLOW_IN_MAXIMIZED_VIEW = "#header, KeyBar"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", id="help"),
        *(
            Binding(str(n), f"focus_pane({n})", f"Pane {n}", show=False, id=f"pane-{n}")
            for n in range(1, 6)
        ),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("z", "maximize_pane", "Zoom", id="maximize"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("ctrl+r", "refresh", "Refresh", id="refresh"),
        Binding("H", "history", "History", id="history"),
        Binding("R", "mutate('rollback')", "Rollback", id="rollback"),
        Binding("P", "mutate('promote')", "Promote", id="promote"),
        Binding("A", "mutate('abort')", "Abort", id="abort"),
        Binding("T", "mutate('retrain')", "Retrain", id="retrain"),
        Binding("D", "mutate('deploy')", "Deploy", id="deploy"),
        Binding("I", "incident_report", "Report", id="report"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(
        self,
        gateway: Gateway,
        *,
        clock: Clock = time.time,
        host: str | None = None,
        workspace_label: str | None = None,
        interval_s: float = 2.0,
        window: str = "1h",
        keymap: dict[str, str] | None = None,
        type_to_confirm: bool = False,
    ) -> None:
        super().__init__()
        self.gateway = gateway
        self.clock = clock
        self.host = host or socket.gethostname()
        self.workspace_label = workspace_label or _label(gateway.workspace.root)
        self.interval_s = interval_s
        self.window = window
        self.data: ConsoleData | None = None
        self.paused = False
        self.needle = ""
        self.selected: str | None = None
        self.series = SeriesBook()
        self.ascii_only = False
        self._keymap = keymap or {}
        self._polling = False
        self._poll_again = False
        self._timer: Timer | None = None
        ws = gateway.workspace
        self._nudge = Nudge(
            (ws.deployments_dir, ws.models_dir),
            # post_message is thread-safe and never waits for the event loop, which may be
            # tearing down and joining this very thread.
            lambda: self.post_message(self.Nudged()),
            lambda why: self.post_message(self.Nudged(why)),
        )
        self._applicable: tuple[bool, ...] = ()
        self._problems: set[str] = set()
        self._config = gateway.config
        # On when asked for here or by the workspace (config.toml [console]).
        self.type_to_confirm = type_to_confirm or self._config.console.type_to_confirm
        # "Which environment am I in?": the workspace's own name for itself, always shown.
        self.environment = self._config.console.environment.strip().upper()

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with Container(id="grid"):
            yield DeploymentsPane(1, "Deployments", id="pane-1")
            yield MetricsPane(2, "Metrics", id="pane-2")
            yield AlertsPane(3, "Alerts", id="pane-3")
            yield ABPane(4, "A/B", id="pane-4")
            yield JobsPane(5, "Jobs", id="pane-5")
            yield Log(max_lines=200, id="actions", auto_scroll=True)
        yield Input(placeholder="filter rows (enter keeps it, escape clears)", id="filter")
        yield KeyBar(shown=self._key_shown, acting=_acting, id="keys")

    @property
    def main_screen(self) -> Screen[Any]:
        """The panes' screen. `App.query_one` searches the screen on top (a dialog, the help)
        and would not find the panes while one is open; timers and polls go on meanwhile.
        At exit the stack empties before the last timer stops: `NoMatches`, which every draw
        (`_while_mounted`) takes as "the panes are gone"."""
        stack = self.screen_stack
        if not stack:
            raise NoMatches("the main screen is gone (the app is exiting)")
        return stack[0]

    def on_mount(self) -> None:
        self.ascii_only = self.no_color or os.environ.get("TERM", "") in ("dumb", "linux")
        self.main_screen.query_one("#actions", Log).border_title = "action log"
        if self._keymap:
            self.set_keymap(self._keymap)
        self._draw_header()
        self.set_interval(1.0, self.on_clock_tick)
        self.main_screen.query_one(DeploymentTable).focus()
        self.request_poll()
        self._nudge.start()

    def on_unmount(self) -> None:
        self._nudge.stop()

    def on_beast_console_nudged(self, message: Nudged) -> None:
        """Poll now, unless paused; or say once why the nudges stopped."""
        if message.failure is not None:
            self.log_action(message.failure)
        elif not self.paused:
            self.request_poll()

    # -- polling ----------------------------------------------------------------------------

    def request_poll(self) -> None:
        """Poll now, or right after the poll in flight (polls never overlap)."""
        if self._polling:
            self._poll_again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._polling = True
        self._poll()

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _poll(self) -> None:
        try:
            data = fetch(self.gateway, self.clock(), window=self.window)
        except Exception as exc:  # any failure is drawn and the next poll still comes
            self._from_thread(self._poll_failed, f"{type(exc).__name__}: {exc}")
            return
        self._from_thread(self._apply, data)

    def _from_thread(self, call: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the app is closing: nothing to draw on
            self.call_from_thread(call, *args)

    def _apply(self, data: ConsoleData) -> None:
        self._polling = False
        self.data = data
        if data.report is not None:
            at = fmt.epoch_of(data.report.generated_at)
            self.series.feed(data.report.versions, None if at is None else int(at // 60))
        self._draw()
        for problem in set(data.problems) - self._problems:  # once, not on every poll
            self.log_action(problem)
        self._problems = set(data.problems)
        self._schedule_next()

    def _poll_failed(self, message: str) -> None:
        self._polling = False
        self.log_action(f"refresh failed: {message}")
        self._schedule_next()

    def _schedule_next(self) -> None:
        if self._poll_again:
            self._poll_again = False
            self.request_poll()
        elif not self.paused and self.is_running:
            self._timer = self.set_timer(self.interval_s, self.request_poll)

    # -- drawing ----------------------------------------------------------------------------

    @_while_mounted
    def _draw(self) -> None:
        data = self.data
        if data is None:
            return
        main, ascii_only, needle = self.main_screen, self.ascii_only, self.needle
        with self.batch_update():
            main.query_one(DeploymentsPane).draw(data, ascii_only=ascii_only, needle=needle)
            if self.selected is None or data.row(self.selected) is None:
                self.selected = main.query_one(DeploymentTable).cursor_key
            self._draw_metrics()
            main.query_one(AlertsPane).draw(data, ascii_only=ascii_only, needle=needle)
            main.query_one(ABPane).draw(data, ascii_only=ascii_only)
            main.query_one(JobsPane).draw(data)
            self._draw_header()
        applicable = tuple(self.mutation_allowed(kind) for kind in MUTATIONS)
        if applicable != self._applicable:
            self._applicable = applicable
            main.query_one(KeyBar).redraw()

    @_while_mounted
    def _draw_metrics(self) -> None:
        data = self.data
        key = self.selected
        row = data.row(key) if data is not None and key is not None else None
        report = data.version_report(key) if data is not None and key is not None else None
        series = self.series.get(key) if key is not None else None
        self.main_screen.query_one(MetricsPane).draw(
            row, report, series, self._config, ascii_only=self.ascii_only
        )

    def on_resize(self) -> None:
        self._draw_header()

    def on_clock_tick(self) -> None:
        """Every second: the header's "updated Ns ago" moves on (nothing is read)."""
        self._draw_header()

    @_while_mounted
    def _draw_header(self) -> None:
        self.main_screen.query_one("#header", Static).update(self.header_text())

    def header_text(self, width: int | None = None) -> Text:
        """RO · PAUSED · workspace · engine state · health · updated Ns ago · host, on ONE
        line of `width` columns (the terminal's by default).

        The richest form that fits: the host goes first, then "updated Ns ago" shortens to
        "Ns ago", the workspace label to its last part, the engine's pid, the brand, the
        workspace and the age; the environment, RO, PAUSED, the engine state and the health
        always stay (they come first, so even a cut line keeps them).
        """
        width = width or self.size.width or 80
        text = Text()
        for level in _HEADER_LEVELS:
            text = self._header(*level)
            if text.cell_len <= width:
                return text
        text.truncate(width, overflow="ellipsis")
        return text

    def _header(self, brand: bool, ws: str, pid: bool, age: str, host: bool) -> Text:
        data = self.data
        text = Text(" beast " if brand else "", style="bold", no_wrap=True, overflow="ellipsis")
        if self.environment:
            text.append(
                f" {fmt.safe(self.environment)} ", style=_environment_style(self.environment)
            )
            text.append(" ")
        if self.gateway.readonly:
            text.append(" RO read-only ", style="bold reverse")
            text.append(" ")
        if self.paused:
            text.append(" PAUSED ", style="bold reverse")
            text.append(" ")
        if ws:
            label = self.workspace_label if ws == "full" else _short(self.workspace_label)
            text.append(f"· ws {fmt.safe(label)} · ")
        text.append_text(self._engine_state(data, pid=pid))
        if data is None:
            text.append(" · loading…")
        else:
            text.append(" · health ")
            text.append_text(fmt.health_text(data.health, ascii_only=self.ascii_only))
            ago = fmt.age(self.clock() - data.fetched_at)
            if age:
                text.append(f" · updated {ago} ago" if age == "long" else f" · {ago} ago")
        if host:
            text.append(f" · {fmt.safe(self.host)}")
        return text

    def _engine_state(self, data: ConsoleData | None, *, pid: bool = True) -> Text:
        found = data.engine_pid if data is not None else "unknown"
        if isinstance(found, int):
            on = "*" if self.ascii_only else "●"
            return Text(f"engine {on} running" + (f" (pid {found})" if pid else ""), style="green")
        if found is None:
            off = "o" if self.ascii_only else "○"
            return Text(f"engine {off} not running", style="yellow")
        return Text("engine ? unavailable", style="dim")

    @_while_mounted
    def log_action(self, line: str) -> None:
        """One line in the action log, stamped with the console's clock (UTC); escaped, as
        it may quote an engine refusal or a poll's problem that names a file or a version."""
        stamp = time.strftime("%H:%M:%S", time.gmtime(self.clock()))
        self.main_screen.query_one("#actions", Log).write_line(f"{stamp} {fmt.safe(line)}")

    # -- selection, focus, filter ------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "deployments-table" and event.row_key.value is not None:
            self.selected = str(event.row_key.value)
            self._draw_metrics()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "deployments-table":
            self.action_details()

    def action_focus_pane(self, number: int) -> None:
        pane = self.main_screen.query_one(f"#pane-{number}", Pane)
        pane.focus_target.focus()

    def action_maximize_pane(self) -> None:
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
            return
        focused = screen.focused
        chain = (focused, *focused.ancestors) if focused is not None else ()
        pane = next((a for a in chain if isinstance(a, Pane)), None)
        if pane is None:
            self.notify("z: focus a pane first (1–5)", severity="warning", markup=False)
            return
        screen.maximize(pane, container=False)

    def action_filter(self) -> None:
        box = self.main_screen.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.needle = event.value.strip().lower()
            self._draw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self._close_filter(keep=True)

    def on_key(self, event: events.Key) -> None:
        box = self.main_screen.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            event.stop()
            self._close_filter(keep=False)

    def _close_filter(self, *, keep: bool) -> None:
        box = self.main_screen.query_one("#filter", Input)
        if not keep:
            box.value = ""
            self.needle = ""
            self._draw()
        box.display = bool(self.needle)
        self.main_screen.query_one(DeploymentTable).focus()

    # -- simple actions ---------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.key_rows(), self.gateway.readonly))

    def key_rows(self) -> list[tuple[str, str]]:
        """(key, what it does) of every binding, with remapped keys as they are now."""
        rows = []
        keymap = self._keymap
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)  # every key, applicable now or not
            key = keymap.get(binding.id or "", binding.key)
            rows.append((key.replace("question_mark", "?").replace("slash", "/"), _what(binding)))
        rows[1:1] = [("ctrl+p", "command palette"), ("tab", "next pane"), ("j / k", "down / up")]
        rows.append(("enter", "details of the selected version"))
        return rows

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.log_action("live refresh paused" if self.paused else "live refresh resumed")
        if self.paused and self._timer is not None:
            self._timer.stop()
            self._timer = None
        elif not self.paused:
            self.request_poll()
        self._draw_header()

    def action_refresh(self) -> None:
        self.request_poll()

    def action_details(self) -> None:
        key = self.main_screen.query_one(DeploymentTable).cursor_key or self.selected
        if key is None:
            self.notify("no version selected", severity="warning")
            return
        self._load_details(key)

    @work(thread=True, group="details", exit_on_error=False)
    def _load_details(self, key: str) -> None:
        line, version = key.split("/", 1)
        lineage, problem = None, None
        try:
            lineage = self.gateway.lineage(line, version)
            history = [
                e
                for e in self.gateway.history(line)
                if version
                in (e.version, e.from_state.production, e.to_state.production, e.to_state.candidate)
            ]
        except BeastError as exc:
            problem, history = str(exc), []
        report = self.data.version_report(key) if self.data is not None else None
        self._from_thread(self.push_screen, DetailsScreen(key, lineage, report, history, problem))

    # -- mutations --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Every key answers: a mutation that does not apply runs `action_mutate`, which says
        # why in a notice; hiding or disabling it here would swallow the key in silence.
        return True

    def _key_shown(self, binding: Binding) -> Shown:
        """How the footer draws a key: a mutation is hidden in read-only mode (pressed, it
        still says why) and dimmed while it does not apply."""
        if not binding.action.startswith("mutate("):
            return "on"
        if self.gateway.readonly:
            return "hidden"
        return "on" if self.action_applies(binding.action) else "dim"

    def action_applies(self, action: str) -> bool:
        """For the palette: an action string as bound to a key, applicable now?"""
        if action.startswith("mutate("):
            return self.mutation_allowed(action[len("mutate('") : -2])
        return True

    def mutation_allowed(self, kind: str) -> bool:
        """The one gate of every mutation: never in read-only mode; only when it applies."""
        return kind in MUTATIONS and self.why_not(kind) is None

    def why_not(self, kind: str) -> str | None:
        """Why the mutation `kind` does not apply now, as the notice its key shows (`P: no
        A/B test is running`), or None when it does."""
        key = self._key_of(kind)
        if self.gateway.readonly:
            return f"read-only console: {kind} refused"
        data, line = self.data, self._line()
        if data is None:
            return f"{key}: nothing to act on yet (the first refresh is still running)"
        if line is None:
            return f"{key}: select a version of the line to act on"
        if kind in ("promote", "abort") and proposals.running_test(data, line) is None:
            return f"{key}: no A/B test is running" + self._on(line)
        if kind == "rollback":
            target = data.rollback_to.get(line, "refused: unknown")
            if data.production(line) is None:
                return f"{key}: nothing is deployed" + self._on(line)
            if target.startswith("refused: "):
                return f"{key}: no rollback target ({target.removeprefix('refused: ')})"
        if kind == "deploy" and not self._free_versions(line):
            return f"{key}: no free version to deploy (every registered one is serving)"
        return None

    def _on(self, line: str) -> str:
        many = self.data is not None and len(self.data.status.lines) > 1
        return f" on {line}" if many else ""

    def _key_of(self, kind: str) -> str:
        """The key bound to an action now (remapped keys as remapped)."""
        binding = next(b for b in self.BINDINGS if isinstance(b, Binding) and b.id == kind)
        return self._keymap.get(kind, binding.key)

    def _free_versions(self, line: str) -> list[str]:
        """Registered versions of `line` that serve nothing (one per artifact)."""
        if self.data is None:
            return []
        serving = {d.version for d in self.data.status.deployments if d.line == line}
        return [
            v.version for v in self.data.versions if v.line == line and v.version not in serving
        ]

    def action_mutate(self, kind: str) -> None:
        why = self.why_not(kind) if kind in MUTATIONS else f"{kind}: no such action"
        if why is not None or self.data is None:
            self._report(why or f"{kind}: nothing to act on yet", "warning")
            return
        line = self._line()
        assert line is not None  # why_not said it applies
        if kind == "deploy":
            self._open_deploy_form(line)
            return
        try:
            proposal = proposals.PROPOSERS[kind](self.data, line)
        except Refused as exc:
            self._report(f"{kind} refused: {exc}", "warning")
            return
        self._confirm(proposal)

    def _line(self) -> str | None:
        if self.selected is not None:
            return self.selected.split("/", 1)[0]
        lines = self.data.status.lines if self.data is not None else ()
        return lines[0] if len(lines) == 1 else None

    def _open_deploy_form(self, line: str) -> None:
        versions = self._free_versions(line)
        chosen = self.selected.split("/", 1)[1] if self.selected else None

        def submitted(request: DeployRequest | None) -> None:
            if request is None or self.data is None:
                self.log_action("deploy: cancelled")
                return
            try:
                self._confirm(proposals.deploy(self.data, request))
            except Refused as exc:
                self._report(f"deploy refused: {exc}", "warning")

        self.push_screen(DeployForm(line, versions, chosen), submitted)

    def _confirm(self, proposal: Proposal) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.log_action(f"{proposal.action}: confirmed, running…")
                self._run(proposal)
            else:
                self._report(f"{proposal.action}: cancelled, nothing changed", "information")

        where = " · ".join(filter(None, (self.workspace_label, self.environment)))
        dialog = ConfirmScreen(proposal, where, type_to_confirm=self.type_to_confirm)
        self.push_screen(dialog, answered)

    @work(thread=True, group="act", exit_on_error=False)
    def _run(self, proposal: Proposal) -> None:
        try:
            result = proposal.run(self.gateway)
        except StateChanged as exc:
            outcome, severity = f"{proposal.action}: state changed, retry ({exc})", "error"
        except BeastError as exc:
            outcome, severity = f"{proposal.action} refused: {exc}", "error"
        else:
            outcome, severity = _outcome(proposal.action, result), "information"
        self._from_thread(self._finished, outcome, severity)

    def _finished(self, outcome: str, severity: str) -> None:
        self._report(outcome, severity)
        self.request_poll()

    def _report(self, line: str, severity: str) -> None:
        self.notify(fmt.safe(line), severity=severity, markup=False)  # type: ignore[arg-type]
        self.log_action(line)

    # -- history and the incident report ----------------------------------------------------

    def action_history(self) -> None:
        """The History view: every change, newest first; `enter` shows its evidence."""
        if self.data is None:
            self.notify("history: nothing read yet", severity="warning")
            return
        self.push_screen(HistoryScreen(self.data.history))

    def action_incident_report(self) -> None:
        """`beast report` from here: the incident snapshot (Markdown + JSON) written into the
        directory the console was started in, for the console's window. It only reads, so a
        read-only console writes it too."""
        self.log_action("report: writing the incident snapshot…")
        self._write_report()

    @work(thread=True, group="report", exit_on_error=False)
    def _write_report(self) -> None:
        try:
            # The working directory, read now: it may have been removed since the start.
            markdown, _ = self.gateway.incident_report(Path.cwd(), window=self.window)
        except (BeastError, OSError) as exc:
            outcome, severity = f"report refused: {exc}", "error"
        else:
            outcome, severity = f"report written: {markdown} (and its .json)", "information"
        self._from_thread(self._report, outcome, severity)


def _outcome(action: str, result: Any) -> str:
    message = getattr(result, "message", None)
    if action == "retrain":
        job_id = getattr(result, "id", "?")
        return f"retrain: job #{job_id} started ({getattr(result, 'status', 'queued')})"
    changed = getattr(result, "changed", True)
    return f"{action}: {message}" + ("" if changed else " (nothing changed)")


def _acting(binding: Binding) -> bool:
    """The footer's second group: the keys that change something, write something, or quit."""
    return binding.action.startswith("mutate(") or binding.action in ("incident_report", "quit")


def _what(binding: Binding) -> str:
    words = {
        "focus_pane": "focus pane " + binding.action[-2:-1],
        "mutate('rollback')": "roll back production (asks first)",
        "mutate('promote')": "promote the A/B candidate (asks first)",
        "mutate('abort')": "abort the A/B test (asks first)",
        "mutate('retrain')": "start a retraining job (asks first)",
        "mutate('deploy')": "deploy a registered version (form, then asks)",
        "maximize_pane": "maximize / restore the focused pane",
        "pause": "pause / resume live refresh",
        "refresh": "refresh now",
        "filter": "filter rows",
        "help": "this help",
        "history": "history of changes; enter shows the evidence behind one",
        "incident_report": "write an incident report here (Markdown + JSON, as beast report)",
        "quit": "quit",
    }
    action = binding.action
    head = action.split("(")[0] if action.startswith("focus_pane") else action
    return words.get(head, binding.description)


# The header's forms, richest first: (brand, workspace "full" | "short" | "", engine pid,
# age "long" | "short" | "", host). `header_text` takes the first that fits on one line.
_HEADER_LEVELS: tuple[tuple[bool, str, bool, str, bool], ...] = (
    (True, "full", True, "long", True),
    (True, "full", True, "long", False),
    (True, "full", True, "short", False),
    (True, "short", True, "short", False),
    (True, "short", False, "short", False),
    (False, "short", False, "short", False),
    (False, "", False, "short", False),
    (False, "", False, "", False),
)


def _short(label: str, most: int = 16) -> str:
    """A workspace label's last part, cut to `most` columns: `~/work/acme/.beast-mode` is
    `.beast-mode`."""
    tail = label.rstrip("/").rsplit("/", 1)[-1] or label
    return tail if len(tail) <= most else tail[: most - 1] + "…"


def _environment_style(name: str) -> str:
    """Production red, staging yellow, anything else reversed (the words stay without colour)."""
    if "PROD" in name:
        return "bold white on red"
    if "STAG" in name:
        return "bold black on yellow"
    return "bold reverse"


def _label(root: Path) -> str:
    """The workspace as the operator would type it: relative to here, or with ~."""
    try:
        return str(root.resolve().relative_to(Path.cwd()))
    except ValueError:
        home = str(Path.home())
        text = str(root)
        return "~" + text[len(home) :] if text.startswith(home) else text
