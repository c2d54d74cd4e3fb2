"""The prediction log repository: every logged prediction, single or in a batch.

What the batched writer (engine.serving.prediction_log) asks of the store, one flush, one
quarantined row or one retention step at a time; and what retraining, feedback and the tests
read back. How the rows are laid out (keys, blobs, batches as one record) is the backend's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from engine.core.config import LogSettings
from engine.core.predictions import Chunk, LoggedRow, Pruned, Record, SplitUnits

if TYPE_CHECKING:
    import numpy as np


class PredictionLogRepo(Protocol):
    """The prediction log of one transaction."""

    def experiment_ids(self, names: Iterable[str]) -> dict[str, int | None]:
        """Name → id of the A/B tests named ('' is no test: None); unknown names left out."""
        ...

    def mark_first_rows(self, version_ids: Iterable[int], from_ms: int) -> None:
        """Note where the rows of versions not seen before begin (from `from_ms`, and the
        batches logged from now on): their drift reference is built from them. Kept once."""
        ...

    def append(
        self,
        chunks: Sequence[Chunk],
        records: Sequence[Record],
        experiments: Mapping[str, int | None],
    ) -> None:
        """Add a flush's rows: batches as they came, single records (`experiments`: the
        tests' ids, as `experiment_ids` reads them). A row the store refuses raises."""
        ...

    def row_fault(self, exc: BaseException) -> bool:
        """Whether a failed flush failed because of what a row holds (a value the store
        refuses: retry without it) rather than the store itself (every row would fail)."""
        ...

    def quarantine(self, pid: str, rows: int, at_ms: int, reason: str, now_ms: int) -> None:
        """Set aside a prediction id (a batch's prefix for its `rows`) that cannot be
        written, with the reason feedback for it is refused (kept once)."""
        ...

    def upkeep(self) -> AbstractContextManager[None]:
        """A part of this transaction whose failure undoes only itself (the rest commits)."""
        ...

    def prune(self, settings: LogSettings, at_ms: int, budget: int) -> Pruned:
        """One bounded step of retention: remove raw rows issued more than
        `settings.retention_days` before `at_ms`, looking at about `budget` rows at most,
        and remember how far it got. Kept: labelled rows until `labelled_retention_days`,
        the successful rows of a version whose drift reference is still to be built."""
        ...

    def labelled_rows(self, line: str, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A line's labelled, successful predictions of `width` features: (features as a
        float32 matrix, actuals, at_ms), oldest first."""
        ...

    def served_rows(
        self, version_id: int, width: int, since_ms: int, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The labelled, successful predictions `version_id` served from `since_ms` on (the
        most recent `limit`): (features as a float32 (n, width) matrix, the logged scores,
        actuals, at_ms), oldest first."""
        ...

    def split_units(self, experiment: str, since_ms: int) -> tuple[SplitUnits, SplitUnits]:
        """The units test `experiment` assigned from `since_ms` on, per arm (production,
        candidate): its distinct keys and its requests without one, single and batch rows
        (a key seen in both counted once)."""
        ...

    def labelled_since(self, experiment: str, since_ms: int) -> tuple[int, int]:
        """Per arm (production, candidate): the predictions test `experiment` served from
        `since_ms` on (to the millisecond) that are labelled by now."""
        ...

    def count(self) -> int:
        """How many predictions the log holds: single ones plus every batch's rows."""
        ...

    def logged_rows(self, line: str | None = None) -> Iterator[LoggedRow]:
        """Every logged prediction (of `line`, or all), singles first (by id: by time), then
        batches' rows (in the order they were logged)."""
        ...
