"""The alerts repository: one row per (line, version, metric) while it fires, kept once resolved."""

from __future__ import annotations

from typing import Protocol

from engine.core.records import Alert


class AlertRepo(Protocol):
    """Alerts of one transaction."""

    def firing(self) -> list[Alert]:
        """Every alert that fires now."""
        ...

    def firing_one(self, line: str, version: str, metric: str) -> Alert | None:
        """The firing alert of (line, version, metric), or None."""
        ...

    def get(self, alert_id: int) -> Alert | None:
        """Alert `alert_id`, firing or resolved, or None."""
        ...

    def since(self, line: str, version: str, metric: str, first_seen: str) -> list[Alert]:
        """The alerts of (line, version, metric), firing or resolved, first seen at or after
        `first_seen` (an ISO time), oldest first."""
        ...

    def acknowledge(self, alert_id: int, *, at: str, by: str, note: str | None = None) -> None:
        """`by` saw alert `alert_id` `at` (and says why, `note`): kept with it; the first
        acknowledgment stays."""
        ...

    def recent(self, resolved: int) -> list[Alert]:
        """Every firing alert and the `resolved` newest resolved ones (in no set order)."""
        ...

    def fire(
        self,
        *,
        line: str,
        version: str,
        metric: str,
        severity: str,
        value: float,
        threshold: float,
        message: str,
        at: str,
    ) -> None:
        """A new firing alert, first and last seen `at`."""
        ...

    def refresh(
        self,
        alert_id: int,
        *,
        message: str,
        at: str,
        severity: str | None = None,
        value: float | None = None,
        threshold: float | None = None,
    ) -> None:
        """A firing alert seen again `at`: its message, and its figures where given."""
        ...

    def resolve(self, alert_id: int, at: str) -> None:
        """The alert stopped firing `at`."""
        ...

    def worst_firing(self, serving: list[tuple[str, str]]) -> str | None:
        """The worst severity firing on these (line, version) pairs, or None."""
        ...
