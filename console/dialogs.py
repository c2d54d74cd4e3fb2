"""Modal dialogs: the confirm dialog every mutation passes, and the deploy form.

Cancel is focused when a dialog opens, so a stray `enter` cancels. `y` confirms, `n` or
`escape` cancels. The title names the workspace, so the operator knows where they act.

With type-to-confirm on (`[console] type_to_confirm`, `beast console --type-to-confirm`), a
change of production asks for the new production version's name instead: the name field has
the focus, so stray keys land there; only `enter` on the exact name (or OK, enabled by it)
confirms, `escape` cancels, and `y` is just a letter.

Every confirm dialog lists the alerts firing now and shows the `beast …` command that makes
the same change from a shell (with the `--expect` of what the dialog shows); `c` copies it
with OSC 52 (`App.copy_to_clipboard`), which reaches the operator's clipboard over SSH.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Label, Select, Static

from console import format as fmt
from console.proposals import DeployRequest, Proposal, command_line
from engine import BeastError, check_name

if TYPE_CHECKING:
    from console.app import BeastConsole


def _console(screen: Screen[Any]) -> BeastConsole:
    # Only BeastConsole opens these dialogs; importing console.app here would be a cycle.
    return cast("BeastConsole", screen.app)


def _lines(lines: tuple[str, ...]) -> Text:
    # Each line names versions, tests and alert messages from the store: escaped.
    return Text("\n".join(fmt.safe(line) for line in lines))


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a mutation: what changes, from → to, traffic, verdict, alerts firing now,
    and the shell command that does the same."""

    DEFAULT_CSS = """
    ConfirmScreen #dialog { max-height: 100%; }
    ConfirmScreen #dialog-body { height: auto; scrollbar-size-vertical: 1; }
    ConfirmScreen #dialog-alerts { margin-bottom: 1; }
    ConfirmScreen #dialog-command { margin-top: 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Confirm", id="confirm-yes"),
        Binding("n", "answer(False)", "Cancel", show=False, id="confirm-no"),
        Binding("escape", "cancel", "Cancel", id="confirm-escape"),
        Binding("c", "copy_command", "Copy command", id="copy-command"),
    ]

    def __init__(
        self, proposal: Proposal, workspace: str, *, type_to_confirm: bool = False
    ) -> None:
        super().__init__()
        self.proposal = proposal
        self.workspace = workspace
        # The name to type, when this change needs one (None: `y` is enough).
        self.required = proposal.new_production if type_to_confirm else None

    @property
    def command(self) -> str:
        """The `beast …` command that makes this change from a shell, on this workspace."""
        return command_line(self.proposal.argv, _console(self).gateway.workspace.root)

    def compose(self) -> ComposeResult:
        p = self.proposal
        with Vertical(id="dialog"):
            yield Static(fmt.cell(f"{p.title} · {self.workspace}", style="bold"), id="dialog-title")
            # Scrolls when the terminal is short (80×24): changes, then the alerts firing now,
            # then the figures; the command and the buttons below it always show.
            with VerticalScroll(id="dialog-body"):
                changes = "\n".join(f"  {fmt.safe(line)}" for line in p.changes)
                yield Static(Text(changes), id="dialog-changes")
                yield Static(_lines(p.alerts), id="dialog-alerts")
                yield Static(_lines(p.context), id="dialog-context")
            copies = "c copies it" + (" (tab out of the name field first)" if self.required else "")
            command = Text(f"from a shell ({copies}):\n", style="dim")
            command.append(fmt.safe(self.command), style="bold")
            yield Static(command, id="dialog-command")
            if self.required is not None:
                yield Static(
                    fmt.cell(f"production changes: type {self.required} and enter to confirm"),
                    id="confirm-prompt",
                )
                yield Input(placeholder=self.required, id="confirm-name")
            with Horizontal(id="dialog-buttons"):
                cancel = "Cancel (esc)" if self.required is not None else "Cancel (n)"
                yield Button(cancel, id="cancel", variant="primary")
                ok = f"OK: {p.action}" + ("" if self.required is not None else " (y)")
                yield Button(ok, id="ok", variant="error", disabled=self.required is not None)
        yield Footer()

    def on_mount(self) -> None:
        if self.required is not None:
            self.query_one("#confirm-name", Input).focus()
        else:
            self.query_one("#cancel", Button).focus()
        self.call_after_refresh(self._fit)

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._fit)

    def _fit(self) -> None:
        """Give the scrolling body the rows the title, command and buttons leave."""
        dialog = self.query_one("#dialog", Vertical)
        others = sum(
            w.outer_size.height + w.styles.margin.height
            for w in dialog.children
            if w.id != "dialog-body"
        )
        chrome = 1 + dialog.styles.gutter.height  # the footer, the dialog's border
        room = self.size.height - chrome - others
        self.query_one("#dialog-body", VerticalScroll).styles.max_height = max(3, room)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Typed: `y` and `n` are letters of the name, never an answer (nor in the footer).
        return not (action == "answer" and self.required is not None)

    def _typed(self) -> bool:
        return self.required is None or (
            self.query_one("#confirm-name", Input).value.strip() == self.required
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#ok", Button).disabled = not self._typed()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self._typed():
            self.dismiss(True)
        else:
            prompt = self.query_one("#confirm-prompt", Static)
            prompt.update(fmt.cell(f"type {self.required} exactly, or esc to cancel", style="bold"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "ok" and self._typed())

    def action_answer(self, yes: bool) -> None:
        if yes and not self._typed():
            return  # a `y` that reached the dialog is not the name
        self.dismiss(yes)

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_copy_command(self) -> None:
        """Put the shell command on the clipboard (OSC 52) and say so."""
        command = self.command
        self.app.copy_to_clipboard(command)
        self.app.notify(f"copied: {fmt.safe(command)}", markup=False)


# (id, label, hint): the deploy form's fields, top to bottom.
FIELDS = (
    ("version", "Version", "registered, not serving now"),
    ("mode", "Role", "production takes 100% at once"),
    ("share", "Traffic %", "the candidate's share, 1–99"),
    ("test", "Test name", "promote/abort by this name"),
)


class DeployForm(ModalScreen[DeployRequest | None]):
    """Which registered version, and as production or as an A/B candidate at a share."""

    DEFAULT_CSS = """
    DeployForm #dialog { max-height: 100%; }
    DeployForm .form-row { height: auto; }
    DeployForm .form-label { width: 11; padding-top: 1; text-style: bold; }
    DeployForm .form-field { width: 26; }
    DeployForm .form-hint { width: 1fr; padding: 1 0 0 1; color: $text-muted; }
    DeployForm #form-note { color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="form-cancel"),
    ]

    def __init__(self, line: str, versions: list[str], chosen: str | None) -> None:
        super().__init__()
        self.line = line
        self.versions = versions
        self.chosen = chosen if chosen in versions else (versions[0] if versions else None)

    def compose(self) -> ComposeResult:
        console = _console(self)
        where = " · ".join(filter(None, (console.workspace_label, console.environment)))
        widgets: dict[str, Widget] = {
            "version": Select(
                [(fmt.cell(v), v) for v in self.versions],
                value=self.chosen if self.chosen is not None else Select.BLANK,
                allow_blank=False,
                id="form-version",
            ),
            "mode": Select(
                [("A/B candidate", "ab"), ("production", "production")],
                value="ab",
                allow_blank=False,
                id="form-mode",
            ),
            "share": Input("10", placeholder="1–99", id="form-share"),
            "test": Input(
                f"ab-{self.chosen}" if self.chosen else "", placeholder="A/B test", id="form-test"
            ),
        }
        with Vertical(id="dialog"):
            yield Static(fmt.cell(f"Deploy on {self.line} · {where}", style="bold"))
            for key, label, hint in FIELDS:
                with Horizontal(id=f"row-{key}", classes="form-row"):
                    yield Label(label, classes="form-label")
                    widget = widgets[key]
                    widget.add_class("form-field")
                    yield widget
                    yield Static(hint, classes="form-hint")
            yield Static(
                "tab moves between fields; Next shows what changes and asks", id="form-note"
            )
            yield Static("", id="form-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button("Next", id="next", variant="warning")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "form-version" and isinstance(event.value, str):
            self.query_one("#form-test", Input).value = f"ab-{event.value}"
        ab = self.query_one("#form-mode", Select).value == "ab"
        self.query_one("#row-share").display = ab
        self.query_one("#row-test").display = ab

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        try:
            request = self._request()
        except (BeastError, ValueError) as exc:
            self.query_one("#form-error", Static).update(fmt.cell(exc, style="bold red"))
            return
        self.dismiss(request)

    def _request(self) -> DeployRequest:
        version = self.query_one("#form-version", Select).value
        if not isinstance(version, str):
            raise ValueError("choose a version")
        if self.query_one("#form-mode", Select).value == "production":
            return DeployRequest(self.line, version)
        share_text = self.query_one("#form-share", Input).value.strip()
        if not share_text.isdigit() or not 1 <= int(share_text) <= 99:
            raise ValueError(f"the share must be a whole percent 1–99, not {share_text!r}")
        test = check_name("A/B test", self.query_one("#form-test", Input).value.strip())
        return DeployRequest(self.line, version, int(share_text), test)
