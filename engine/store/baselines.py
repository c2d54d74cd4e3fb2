"""The baselines repository: each artifact's drift reference and validation figures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from engine.core.records import Baseline, FirstPredictionSource

if TYPE_CHECKING:  # numpy: only where references are built
    import numpy as np


class BaselineRepo(Protocol):
    """Baselines of one transaction."""

    def add(self, artifact_id: int, baseline: Baseline, at: str) -> None:
        """Keep `baseline` as the artifact's, unless it has one already (the first stays)."""
        ...

    def replace(self, artifact_id: int, baseline: Baseline, at: str) -> None:
        """Make `baseline` the artifact's, replacing whatever it had (an explicit reference
        file outranks training's sidecar and the first predictions)."""
        ...

    def binned(self, artifact_id: int) -> bool:
        """Whether rows of the artifact's versions were counted into its reference's drift
        bins already (the rollups keep those counts by the reference's edges)."""
        ...

    def sources(self, version_ids: list[int]) -> dict[int, str]:
        """The baseline source of each version that has a baseline (cheap: no numpy)."""
        ...

    def for_version(self, version_id: int) -> Baseline | None:
        """The baseline of the version's artifact, or None."""
        ...

    def has_reference(self, version_id: int) -> bool:
        """Whether the version's artifact has a drift reference."""
        ...

    def set_reference(self, artifact_id: int, reference: dict[str, Any], at: str) -> None:
        """Give the artifact a drift reference (from first predictions) unless it has one."""
        ...

    def first_prediction_source(self, version_id: int) -> FirstPredictionSource | None:
        """The version's artifact and its line's feature names and width, or None."""
        ...

    def first_rows(
        self, version_id: int, width: int, limit: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The version's first `limit` successful logged rows (features as float32 of
        `width`, scores), by time; None while there are fewer."""
        ...

    def rows_by_minute(
        self, version_id: int, width: int
    ) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
        """Every successful logged row of the version so far (features as float32 of `width`,
        scores), by (A/B test name or "", minute)."""
        ...
