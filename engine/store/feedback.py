"""The feedback repository: actual values attached to logged predictions, and those waiting.

Feedback that arrives before its prediction's row is logged waits (pending); if no row comes
it is set aside (unmatched). Both are counted by `beast monitor`.
"""

from __future__ import annotations

from typing import Protocol

from engine.core.records import LoggedPrediction


class FeedbackRepo(Protocol):
    """Labels, waiting and unmatched feedback of one transaction."""

    def prediction(self, pid: str) -> LoggedPrediction | None:
        """The logged prediction `pid` (a single row, or a batch's row), or None."""
        ...

    def is_logged(self, pid: str) -> bool:
        """Whether prediction `pid` is in the log."""
        ...

    def set_actual(self, found: LoggedPrediction, actual: float, at_ms: int) -> None:
        """Attach `actual` to a logged prediction that has none."""
        ...

    def quarantine_reason(self, pid: str) -> str | None:
        """Why prediction `pid` was served but set aside unlogged, or None."""
        ...

    def pruned_days(self, issued_ms: int) -> float | None:
        """The retention (days) that pruned predictions issued at `issued_ms`, or None."""
        ...

    def is_unmatched(self, pid: str) -> bool:
        """Whether feedback for `pid` waited in vain and was set aside."""
        ...

    def pending_actual(self, pid: str) -> float | None:
        """The actual waiting for prediction `pid`, or None."""
        ...

    def add_pending(self, pid: str, actual: float, received_ms: int) -> None:
        """Keep `actual` until prediction `pid` is logged."""
        ...

    def pending(self) -> list[tuple[str, float]]:
        """Every waiting (prediction id, actual)."""
        ...

    def drop_pending(self, pid: str) -> None:
        """Stop waiting for `pid` (its feedback is being applied)."""
        ...

    def pending_before(self, received_ms: int) -> list[tuple[str, float, int]]:
        """Waiting (prediction id, actual, received ms) that arrived before `received_ms`."""
        ...

    def set_unmatched(self, items: list[tuple[str, float, int]], expired_ms: int) -> None:
        """Move waiting (prediction id, actual, received ms) to unmatched, `expired_ms`."""
        ...

    def counts(self) -> tuple[int, int]:
        """(feedback waiting, feedback unmatched)."""
        ...
