"""The rollups repository: a version's predictions summed per minute, and per hour once old.

A minute lives in exactly one place — its minute row, or its hour's row once compacted — so
sums over both are the raw log's sums (engine.monitoring.rollups reads them as windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # numpy: only where rollups are read or written
    from engine.core.rollups import Delta, LabelDelta, RollupKey, StackedRollups


class RollupRepo(Protocol):
    """Minute and hour rollups of one transaction."""

    def stacked(
        self, version_id: int, *, since_minute: int | None = None, experiment: str | None = None
    ) -> StackedRollups:
        """A version's minutes and compacted hours from `since_minute` (the hour holding it
        included), by time; only one A/B test's rows when `experiment` is given."""
        ...

    def add_minutes(self, deltas: Mapping[RollupKey, Delta]) -> None:
        """Add each delta to its (version id, test, minute) row, creating rows as needed."""
        ...

    def add_label(self, version_id: int, experiment: str, minute: int, label: LabelDelta) -> None:
        """Count one labelled prediction of `minute` (in its hour's row once compacted): what
        `label` adds, its class histogram key included."""
        ...

    def has_minutes_before(self, minute: int) -> bool:
        """Whether a minute row older than `minute` is left (compaction has work)."""
        ...

    def compact_before(self, minute: int) -> int:
        """Fold the minute rows older than `minute` (a whole hour) into their hours' rows;
        how many minute rows were folded."""
        ...

    def successes(self, version_id: int) -> int:
        """The version's successful predictions (minutes and hours)."""
        ...

    def any_logged(self, version_ids: list[int]) -> bool:
        """Whether any of these versions has a logged prediction."""
        ...
