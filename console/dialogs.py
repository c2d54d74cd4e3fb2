"""Modal dialogs: the confirm dialog every mutation passes, and the deploy form.

Cancel is focused when a dialog opens, so a stray `enter` cancels. `y` confirms, `n` or
`escape` cancels. The title names the workspace, so the operator knows where they act.

With type-to-confirm on (`[console] type_to_confirm`, `beast console --type-to-confirm`), a
change of production asks for the new production version's name instead: the name field has
the focus, so stray keys land there; only `enter` on the exact name (or OK, enabled by it)
confirms, `escape` cancels, and `y` is just a letter.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from console import format as fmt
from console.proposals import DeployRequest, Proposal
from engine import BeastError, check_name


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a mutation: what changes, from → to, traffic, verdict, last alerts."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Confirm", id="confirm-yes"),
        Binding("n", "answer(False)", "Cancel", id="confirm-no"),
        Binding("escape", "answer(False)", "Cancel", show=False, id="confirm-escape"),
    ]

    def __init__(
        self, proposal: Proposal, workspace: str, *, type_to_confirm: bool = False
    ) -> None:
        super().__init__()
        self.proposal = proposal
        self.workspace = workspace
        # The name to type, when this change needs one (None: `y` is enough).
        self.required = proposal.new_production if type_to_confirm else None

    def compose(self) -> ComposeResult:
        p = self.proposal
        with Vertical(id="dialog"):
            yield Label(fmt.cell(f"{p.title} · {self.workspace}", style="bold"), id="dialog-title")
            # Each line names versions, tests and alert messages from the store: escaped.
            changes = "\n".join(f"  {fmt.safe(line)}" for line in p.changes)
            yield Static(Text(changes), id="dialog-changes")
            yield Static(Text("\n".join(fmt.safe(line) for line in p.context)), id="dialog-context")
            if self.required is not None:
                yield Label(
                    fmt.cell(f"production changes: type {self.required} and enter to confirm"),
                    id="confirm-prompt",
                )
                yield Input(placeholder=self.required, id="confirm-name")
            with Horizontal(id="dialog-buttons"):
                cancel = "Cancel (esc)" if self.required is not None else "Cancel (n)"
                yield Button(cancel, id="cancel", variant="primary")
                ok = f"OK: {p.action}" + ("" if self.required is not None else " (y)")
                yield Button(ok, id="ok", variant="error", disabled=self.required is not None)

    def on_mount(self) -> None:
        if self.required is not None:
            self.query_one("#confirm-name", Input).focus()
        else:
            self.query_one("#cancel", Button).focus()

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
            prompt = self.query_one("#confirm-prompt", Label)
            prompt.update(fmt.cell(f"type {self.required} exactly, or esc to cancel", style="bold"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "ok" and self._typed())

    def action_answer(self, yes: bool) -> None:
        if yes and not self._typed():
            return  # a `y` that reached the dialog is not the name
        self.dismiss(yes)


class DeployForm(ModalScreen[DeployRequest | None]):
    """Which registered version, and as production or as an A/B candidate at a share."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="form-cancel"),
    ]

    def __init__(self, line: str, versions: list[str], chosen: str | None) -> None:
        super().__init__()
        self.line = line
        self.versions = versions
        self.chosen = chosen if chosen in versions else (versions[0] if versions else None)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(fmt.cell(f"Deploy a version of {self.line}", style="bold"))
            yield Select(
                [(fmt.cell(v), v) for v in self.versions],
                value=self.chosen if self.chosen is not None else Select.BLANK,
                allow_blank=False,
                id="form-version",
            )
            yield Select(
                [("as A/B candidate", "ab"), ("as production (100%)", "production")],
                value="ab",
                allow_blank=False,
                id="form-mode",
            )
            yield Input("10", placeholder="candidate share, 1–99 %", id="form-share")
            yield Input(
                f"ab-{self.chosen}" if self.chosen else "",
                placeholder="A/B test name",
                id="form-test",
            )
            yield Label("", id="form-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary")
                yield Button("Next", id="next", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#form-share", Input).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "form-version" and isinstance(event.value, str):
            self.query_one("#form-test", Input).value = f"ab-{event.value}"
        ab = self.query_one("#form-mode", Select).value == "ab"
        self.query_one("#form-share", Input).display = ab
        self.query_one("#form-test", Input).display = ab

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
            self.query_one("#form-error", Label).update(fmt.cell(exc, style="bold red"))
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
