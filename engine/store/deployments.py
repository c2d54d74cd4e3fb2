"""The deployments repository: what serves on each line, and the A/B tests."""

from __future__ import annotations

from typing import Protocol

from engine.core.records import Ending, Experiment, ExperimentStatus, LineState, VersionRef


class DeploymentRepo(Protocol):
    """Line states and A/B tests of one transaction."""

    def state(self, line: str) -> LineState | None:
        """What serves on `line` (production, the candidate and its share), or None."""
        ...

    def states(self) -> list[LineState]:
        """What serves on every line with a deployment, by line name."""
        ...

    def any_deployed(self) -> bool:
        """Whether any line has a production."""
        ...

    def experiments(self) -> list[Experiment]:
        """Every A/B test, running or ended, oldest first."""
        ...

    def experiment(self, name: str) -> Experiment | None:
        """The A/B test named `name`, or None."""
        ...

    def put_state(self, state: LineState) -> None:
        """Make `state` what serves on its line (its `experiment` names a running test)."""
        ...

    def start_experiment(
        self,
        name: str,
        *,
        control: VersionRef,
        candidate: VersionRef,
        traffic_bp: int,
        at: str,
        actor: str,
    ) -> None:
        """Start the A/B test `name` on the arms' line (one running test per line)."""
        ...

    def end_experiment(
        self,
        name: str,
        *,
        status: ExperimentStatus,
        at: str,
        actor: str,
        reason: str,
        forced: bool,
        verdict: str | None = None,
        ending: Ending | None = None,
    ) -> None:
        """End the running test `name` (promoted or aborted), keeping the verdict it ended
        with and how it ended; a test not running is left."""
        ...
