"""The deployments repository: what serves on each line, and the A/B tests."""

from __future__ import annotations

from typing import Protocol

from engine.core.records import Experiment, LineState


class DeploymentRepo(Protocol):
    """Line states and A/B tests of one transaction."""

    def state(self, line: str) -> LineState | None:
        """What serves on `line` (production, the candidate and its share), or None."""
        ...

    def experiments(self) -> list[Experiment]:
        """Every A/B test, running or ended, oldest first."""
        ...

    def experiment(self, name: str) -> Experiment | None:
        """The A/B test named `name`, or None."""
        ...
