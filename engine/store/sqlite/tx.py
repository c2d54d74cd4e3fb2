"""`SqliteTx`: one SQLite transaction's repositories, bound to its connection.

Repositories are made on first use and live as long as the transaction: a transaction that
touches one domain builds one small object. The modules of the repositories `beast status`
does not use are imported on first use too (a lookup in sys.modules after the first): every
module on its path costs its cold start (≤ 0.4 s).
"""

from __future__ import annotations

import sqlite3
from functools import cached_property
from typing import TYPE_CHECKING

from engine.store.sqlite.alerts import SqliteAlerts
from engine.store.sqlite.deployments import SqliteDeployments
from engine.store.sqlite.history import SqliteHistory
from engine.store.sqlite.registry import SqliteRegistry
from engine.store.sqlite.rollups import SqliteRollups

if TYPE_CHECKING:
    from engine.store.sql.replicas import SqlReplicas
    from engine.store.sqlite.artifacts import SqliteArtifactBytes
    from engine.store.sqlite.baselines import SqliteBaselines
    from engine.store.sqlite.feedback import SqliteFeedback
    from engine.store.sqlite.jobs import SqliteJobs, SqliteRetrainInputs
    from engine.store.sqlite.prediction_log import SqlitePredictionLog
    from engine.store.sqlite.routes import SqliteRoutes


class SqliteTx:
    """engine.store.base.Tx over one connection inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @cached_property
    def registry(self) -> SqliteRegistry:
        return SqliteRegistry(self.conn)

    @cached_property
    def deployments(self) -> SqliteDeployments:
        return SqliteDeployments(self.conn)

    @cached_property
    def history(self) -> SqliteHistory:
        return SqliteHistory(self.conn)

    @cached_property
    def rollups(self) -> SqliteRollups:
        return SqliteRollups(self.conn)

    @cached_property
    def alerts(self) -> SqliteAlerts:
        return SqliteAlerts(self.conn)

    @cached_property
    def feedback(self) -> SqliteFeedback:
        from engine.store.sqlite.feedback import SqliteFeedback  # on first use: see the top

        return SqliteFeedback(self.conn)

    @cached_property
    def baselines(self) -> SqliteBaselines:
        # numpy: imported on first use, not with the store (`beast status` cold ≤ 0.4 s)
        from engine.store.sqlite.baselines import SqliteBaselines

        return SqliteBaselines(self.conn)

    @cached_property
    def jobs(self) -> SqliteJobs:
        from engine.store.sqlite.jobs import SqliteJobs  # on first use: see the top

        return SqliteJobs(self.conn)

    @cached_property
    def retrain_inputs(self) -> SqliteRetrainInputs:
        from engine.store.sqlite.jobs import SqliteRetrainInputs  # on first use: see the top

        return SqliteRetrainInputs(self.conn)

    @cached_property
    def routes(self) -> SqliteRoutes:
        from engine.store.sqlite.routes import SqliteRoutes  # on first use: see the top

        return SqliteRoutes(self.conn)

    @cached_property
    def predictions(self) -> SqlitePredictionLog:
        # numpy (the batch blobs): imported on first use, not with the store (`beast status`)
        from engine.store.sqlite.prediction_log import SqlitePredictionLog

        return SqlitePredictionLog(self.conn)

    @cached_property
    def replicas(self) -> SqlReplicas:
        from engine.store.sql.replicas import SqlReplicas  # on first use: see the top

        return SqlReplicas(self.conn)

    @cached_property
    def artifact_bytes(self) -> SqliteArtifactBytes:
        from engine.store.sqlite.artifacts import SqliteArtifactBytes  # on first use

        return SqliteArtifactBytes()
