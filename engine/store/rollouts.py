"""The rollouts repository: a test's progressive rollout (its steps, the one serving, its state)."""

from __future__ import annotations

from typing import Protocol

from engine.core.records import Rollout


class RolloutRepo(Protocol):
    """Progressive rollouts of one transaction, one per A/B test (read with the test itself:
    `Experiment.rollout`)."""

    def put(self, experiment: str, rollout: Rollout) -> None:
        """Make `rollout` the rollout of the test named `experiment` (created or replaced)."""
        ...

    def move_share(self, experiment: str, traffic_bp: int) -> None:
        """The running test `experiment`'s candidate share is `traffic_bp` now (a step)."""
        ...
