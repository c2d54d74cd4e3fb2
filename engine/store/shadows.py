"""The shadows repository: versions scored beside production without serving, and their
scores of logged predictions (keyed by the predictions' ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from engine.core.records import Shadow

if TYPE_CHECKING:
    import numpy as np


class ShadowScore(NamedTuple):
    """One shadow score of one logged prediction (`pid`: its id, a batch row's included)."""

    shadow_id: int
    pid: str
    batch: bool  # a row of a logged batch (its id's prefix names the batch)
    control_id: int  # the production version that answered the request
    control: float  # production's score of the same request
    score: float | None  # None: the shadow failed on it (`error` says why)
    error: str | None
    latency_us: int


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

    def add_scores(self, scores: Sequence[ShadowScore]) -> None:
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
