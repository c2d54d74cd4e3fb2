"""The shadows repository: versions scored beside production without serving, and their
scores of logged predictions (keyed by the predictions' ids)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from engine.core.records import Shadow

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ShadowScores:
    """One shadow's scores of logged predictions, as columns (the scorer's hot loop builds
    no object per row)."""

    shadow_id: int
    control_id: int  # the production version that answered these requests
    pids: list[str]  # the predictions' ids, a batch row's included
    batch: np.ndarray  # bool: a row of a logged batch (its id's prefix names the batch)
    control: np.ndarray  # float64: production's scores of the same requests
    scores: np.ndarray  # float64: the shadow's, NaN where it failed (`errors` says why)
    errors: list[str | None]
    latency_us: int  # per row: the scoring call's time shared


class ShadowRepo(Protocol):
    """Shadows (one running per line) and their scores."""

    def running(self, line: str | None = None) -> list[Shadow]:
        """The running shadows (of `line`, or of every line), with what each has scored."""
        ...

    def get(self, shadow_id: int) -> Shadow:
        """A shadow, running or ended."""
        ...

    def start(self, line: str, version_id: int, share_bp: int, *, at: str, actor: str) -> int:
        """A new running shadow on `line` (the schema refuses a second one); its id."""
        ...

    def end(self, shadow_id: int, *, at: str, actor: str) -> None:
        """End a running shadow (its scores stay)."""
        ...

    def add_scores(self, scores: Sequence[ShadowScores]) -> None:
        """Keep shadow scores (a score already kept for the same id is left as it is)."""
        ...

    def add_dropped(self, shadow_id: int, count: int) -> None:
        """Count requests the shadow's scorer skipped."""
        ...

    def scores(self, shadow_id: int) -> dict[str, float | None]:
        """Every score a shadow kept, by prediction id (None: failed)."""
        ...

    def pairs(self, shadow_id: int, control_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shadow scores, production's scores, actuals) of the labelled requests both scored,
        of those production version `control_id` answered."""
        ...
