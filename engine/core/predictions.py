"""The prediction log's records: what the router hands the log, and what the log reads back.

They cross the storage seam (engine.store.prediction_log), so they live here, below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from engine.core import ids

if TYPE_CHECKING:
    import numpy as np  # at run time only the arrays' owners import numpy (cold start)

DAY_MS = 86_400_000  # retention days in the log's milliseconds
ARMS = {"production": 0, "candidate": 1}  # an arm as the log stores it
ARM_NAMES = tuple(ARMS)


class Record(NamedTuple):
    """One logged prediction, as the router hands it over (the store keys it by its id,
    keeps the arm as 0 or 1 and the test by its id; the line is the version's)."""

    pid: str
    at_ms: int
    line: str
    version_id: int
    arm: str
    experiment: str
    key: str | None
    features: bytes | None  # the float32 row
    score: float | None
    latency_us: int
    error: str | None


class Chunk(NamedTuple):
    """A served batch's predictions, column by column (one time, one line, one test).

    Row i's prediction id is `prefix` followed by i in five hex digits (`ids.batch_ids`).
    """

    prefix: str
    at_ms: int
    line: str
    version_ids: np.ndarray  # int64, one per row
    arms: list[str]
    experiment: str
    keys: list[str | None] | None
    features: np.ndarray  # float32 (rows, width), C-contiguous
    scores: np.ndarray  # float64, NaN where the row failed
    latency_us: int  # per row (the batch's time shared out)
    errors: list[str | None] | None  # None: no row failed

    @property
    def rows(self) -> int:
        return len(self.version_ids)

    def pids(self) -> list[str]:
        return ids.batch_ids(self.prefix, self.rows)


class LoggedRow(NamedTuple):
    """One logged prediction, single or a batch's row, as `logged_rows` reads it back."""

    pid: str
    at_ms: int
    line: str
    version_id: int
    arm: str
    experiment: str
    key: str | None
    features: bytes | None
    score: float | None
    latency_us: int
    error: str | None
    actual: float | None


@dataclass(frozen=True)
class SplitUnits:
    """The units an A/B test's split assigned to one arm since a time: each distinct routing
    key once (a key keeps its arm, so the key is what was randomized), each request without
    a key once (its arm was drawn for it alone)."""

    keys: int
    unkeyed: int

    @property
    def units(self) -> int:
        return self.keys + self.unkeyed


@dataclass(frozen=True)
class Pruned:
    """One retention step: what it removed, and whether more is already due."""

    singles: int = 0  # single prediction rows deleted
    batch_rows: int = 0  # rows of the batches deleted
    moved: int = 0  # labelled batch rows kept as single rows when their batch went
    more: bool = False  # a step stopped at its bound: the next one is due now

    @property
    def rows(self) -> int:
        return self.singles + self.batch_rows - self.moved
