"""The history repository: the append-only record of every deployment change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from engine.core.records import Action, HistoryEntry, Snapshot


class HistoryRepo(Protocol):
    """History rows of one transaction. Rows are never updated or deleted (the schema refuses)."""

    def entries(self, line: str | None = None) -> list[HistoryEntry]:
        """Rows (of `line`, or all), oldest first: ids give the order, not timestamps."""
        ...

    def last(self, line: str) -> HistoryEntry | None:
        """The newest row of `line`, or None before its first change."""
        ...

    def append(
        self,
        *,
        line: str,
        at: str,
        actor: str,
        action: Action,
        version: str | None,
        experiment: str | None,
        from_state: Snapshot,
        to_state: Snapshot,
        undoes: tuple[int, ...] = (),
        note: str | None = None,
        forced: bool = False,
        evidence: Mapping[str, Any] | None = None,
    ) -> HistoryEntry:
        """Add one row inside this transaction; return it as stored (with its id). `evidence`:
        the figures the change was decided on (JSON-able, no NaN)."""
        ...

    def export_text(self) -> str:
        """Every row as the seed's deployments/history.json: a JSON array, a row per line."""
        ...
