"""The command palette's own commands ("Deploy: rollback…"), filtered like the footer."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from console.app import BeastConsole

# (palette text, action string as bound to a key, help)
COMMANDS = (
    ("Deploy: rollback…", "mutate('rollback')", "production back to the version before"),
    ("Deploy: promote A/B test…", "mutate('promote')", "the candidate becomes production"),
    ("Deploy: abort A/B test…", "mutate('abort')", "the candidate goes to 0%"),
    ("Deploy: deploy a registered version…", "mutate('deploy')", "production or A/B candidate"),
    ("Retrain: start a retraining job…", "mutate('retrain')", "a background worker process"),
    ("View: details of the selected version", "details", "lineage, metrics, drift, history"),
    ("View: history of changes", "history", "newest first; enter shows the evidence"),
    ("View: refresh now", "refresh", "read the engine again"),
    ("View: pause / resume live refresh", "pause", "freeze the panes"),
    ("View: filter", "filter", "show matching rows only"),
    ("View: help", "help", "every key"),
)


class ConsoleCommands(Provider):
    """Every console action that applies now; read-only hides the mutating ones."""

    @property
    def console(self) -> BeastConsole:
        # Only BeastConsole lists this provider (its COMMANDS); importing console.app here
        # would be a cycle, as the app imports this module.
        return cast("BeastConsole", self.app)

    def _available(self) -> list[tuple[str, str, str]]:
        return [c for c in COMMANDS if self.console.action_applies(c[1])]

    async def discover(self) -> Hits:
        for text, action, help_text in self._available():
            yield DiscoveryHit(text, partial(self.console.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, action, help_text in self._available():
            score = matcher.match(text)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(text),
                    partial(self.console.run_action, action),
                    help=help_text,
                )
