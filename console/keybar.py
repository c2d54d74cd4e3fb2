"""`KeyBar`: the console's footer, every key that applies, in words, on one or two lines.

Textual's Footer is one line that scrolls: at 80 columns it ended at `R Rollbac▏^p palette`
and P, A, T, D and q never showed. Fourteen keys with a word each need about 130 columns,
so below that the bar takes two lines, one per group: the keys that look (help, filter,
zoom, pause, refresh, details, palette) and the keys that act (the mutations and quit). A
word per key, not a bare letter: `?` still lists every key with a sentence each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static

Shown = Literal["on", "dim", "hidden"]
SEPARATOR = "  "


class KeyBar(Static):
    """The footer of the main screen: the screen's active bindings, wrapped by group.

    `shown(binding)` says how a key is drawn: "on", "dim" (it answers with a notice saying
    why it does not apply now) or "hidden"; `acting(binding)` puts a key in the second group.
    """

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: auto;
        max-height: 3;
        background: $footer-background;
        color: $footer-description-foreground;
    }
    """

    def __init__(
        self,
        *,
        shown: Callable[[Binding], Shown],
        acting: Callable[[Binding], bool],
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self._shown = shown
        self._acting = acting
        self.items: tuple[tuple[str, str, Shown, bool], ...] = ()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, lambda _screen: self.redraw())
        self.call_after_refresh(self.redraw)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Read the screen's bindings again and draw them for the width there is now."""
        self.items = tuple(self._collect())
        self.update(self.text(self.size.width or self.app.size.width))

    def _collect(self) -> Iterable[tuple[str, str, Shown, bool]]:
        seen: set[str] = set()
        palette: tuple[str, str, Shown, bool] | None = None
        for active in self.screen.active_bindings.values():
            binding = active.binding
            key = self.app.get_key_display(binding)
            if binding.action in ("command_palette", "app.command_palette"):
                palette = (key, binding.description, "on", False)
                continue
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            shown = self._shown(binding) if active.enabled else "dim"
            if shown != "hidden":
                yield key, binding.description, shown, self._acting(binding)
        if palette is not None:
            yield palette

    def text(self, width: int) -> Text:
        """The bar as it reads at `width` columns: one line when it all fits, else a line
        per group (a group wider than the screen wraps between keys, never inside one)."""
        looking = [i for i in self.items if not i[3]]
        acting = [i for i in self.items if i[3]]
        if _width(self.items) <= width:
            lines = [list(self.items)]
        else:
            lines = [*_wrap(looking, width), *_wrap(acting, width)]
        out = Text(no_wrap=True, overflow="ellipsis")
        for n, line in enumerate(lines):
            if n:
                out.append("\n")
            for m, (key, word, shown, _) in enumerate(line):
                if m:
                    out.append(SEPARATOR)
                dim = " dim" if shown == "dim" else ""
                out.append(key, style=f"bold{dim}")
                out.append(f" {word}", style=dim.strip())
        return out


def _item_width(item: tuple[str, str, Shown, bool]) -> int:
    return cell_len(item[0]) + 1 + cell_len(item[1])


def _width(items: Iterable[tuple[str, str, Shown, bool]]) -> int:
    widths = [_item_width(i) for i in items]
    return sum(widths) + len(SEPARATOR) * max(0, len(widths) - 1)


def _wrap(
    items: list[tuple[str, str, Shown, bool]], width: int
) -> list[list[tuple[str, str, Shown, bool]]]:
    lines: list[list[tuple[str, str, Shown, bool]]] = []
    for item in items:
        if lines and _width([*lines[-1], item]) <= width:
            lines[-1].append(item)
        else:
            lines.append([item])
    return lines
