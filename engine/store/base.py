"""The storage seam: what the engine asks of a state store, whatever database is behind it.

The engine speaks to its state through two protocols. A `Store` opens transactions; a `Tx`
is one transaction's view of the state, domain by domain — `tx.registry`, `tx.history`,
`tx.jobs`… — each a repository whose methods take and return records (engine.core.records),
never rows, cursors or connections. Every statement of SQL lives behind a repository, in the
package of one backend (engine/store/sqlite/; a second backend is a sibling package that
implements the same protocols), as MLflow keeps one abstract store per domain with its
SQLAlchemy implementation beside it.

A transaction is all or nothing: `write()` commits when its block ends and rolls back when it
raises; `read()` is one consistent snapshot, released at once. Refusals come out as the
engine's own errors (`StateBusy`, `StoreError`), never as a driver's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

# Annotations only: the repositories' modules load with their backend's, not with every
# `beast` command (the cold start of `beast status`).
if TYPE_CHECKING:
    from engine.store.alerts import AlertRepo
    from engine.store.baselines import BaselineRepo
    from engine.store.deployments import DeploymentRepo
    from engine.store.feedback import FeedbackRepo
    from engine.store.history import HistoryRepo
    from engine.store.jobs import JobRepo, RetrainInputRepo
    from engine.store.prediction_log import PredictionLogRepo
    from engine.store.registry import RegistryRepo
    from engine.store.replicas import ArtifactBytesRepo, ChangeFeed, Leadership, ReplicaRepo
    from engine.store.rollouts import RolloutRepo
    from engine.store.rollups import RollupRepo
    from engine.store.routes import RouteRepo
    from engine.store.shadows import ShadowRepo


class Tx(Protocol):
    """One transaction's view of the state: a repository per domain.

    Each repository is a Protocol in engine/store/<domain>.py, implemented by every backend
    (engine/store/sqlite/<domain>.py).
    """

    @property
    def registry(self) -> RegistryRepo:
        """Model lines, artifacts and version names."""
        ...

    @property
    def deployments(self) -> DeploymentRepo:
        """What serves on each line, and the A/B tests."""
        ...

    @property
    def rollouts(self) -> RolloutRepo:
        """Progressive rollouts of the A/B tests."""
        ...

    @property
    def history(self) -> HistoryRepo:
        """The deployment history (append-only)."""
        ...

    @property
    def rollups(self) -> RollupRepo:
        """Predictions summed per version, A/B test and minute (hours once old)."""
        ...

    @property
    def alerts(self) -> AlertRepo:
        """Alerts, firing and resolved."""
        ...

    @property
    def feedback(self) -> FeedbackRepo:
        """Actual values of logged predictions, and feedback waiting for its prediction."""
        ...

    @property
    def baselines(self) -> BaselineRepo:
        """Each artifact's drift reference and validation figures."""
        ...

    @property
    def jobs(self) -> JobRepo:
        """Retraining jobs, their logs and leases."""
        ...

    @property
    def retrain_inputs(self) -> RetrainInputRepo:
        """What retraining reads of the other domains (its triggers, its training data)."""
        ...

    @property
    def routes(self) -> RouteRepo:
        """What the router serves on each deployed line."""
        ...

    @property
    def shadows(self) -> ShadowRepo:
        """Versions scored beside production without serving, and their scores."""
        ...

    @property
    def predictions(self) -> PredictionLogRepo:
        """The prediction log: every logged prediction, single or in a batch."""
        ...

    @property
    def replicas(self) -> ReplicaRepo:
        """The engine processes serving this state, and which of them leads."""
        ...

    @property
    def artifact_bytes(self) -> ArtifactBytesRepo:
        """Registered model files' bytes by sha256, for replicas that never saw the file."""
        ...


class Store(Protocol):
    """A workspace's state store: transactions, and the upkeep of the store itself."""

    busy_s: float  # how long a transaction waits for another writer before StateBusy

    @property
    def location(self) -> str:
        """Where the store lives, for messages: a file's path (a URL without its password)."""
        ...

    def read(self) -> AbstractContextManager[Tx]:
        """A short read transaction: one consistent snapshot."""
        ...

    def write(self) -> AbstractContextManager[Tx]:
        """One write transaction: all of it commits, or none of it."""
        ...

    def peek(self) -> AbstractContextManager[Tx]:
        """Repositories outside a transaction: each read is its own snapshot (a lone cheap read)."""
        ...

    def close(self) -> None:
        """Release the connection (a later call opens a new one)."""
        ...

    def migrate(self) -> list[str]:
        """Apply pending migrations (exactly one process does, when many race); their names."""
        ...

    def integrity_check(self) -> list[str]:
        """What the database finds damaged in its own storage ([] when whole): doctor's first
        question, asked before any other read (on a damaged store they would read garbage)."""
        ...

    def foreign_key_errors(self) -> list[str]:
        """Rows whose references point nowhere, as readable lines ([] when none)."""
        ...

    def file_problem(self) -> str | None:
        """Why the store this process has open is no longer the workspace's, or None."""
        ...

    def leadership(self) -> Leadership:
        """A claim on the leadership among the replicas of this store (engine.store.replicas),
        for one process to hold while it runs; `release` it when done."""
        ...

    def changes(self) -> ChangeFeed:
        """A feed of other processes' changes, for one thread to wait on; `close` it when done."""
        ...
