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

from engine.store.sql.alerts import SqlAlerts
from engine.store.sql.deployments import SqlDeployments
from engine.store.sql.registry import SqlRegistry
from engine.store.sql.rollouts import SqlRollouts
from engine.store.sql.rollups import SqlRollups
from engine.store.sqlite.history import SqliteHistory

if TYPE_CHECKING:
    from engine.store.sql.baselines import SqlBaselines
    from engine.store.sql.feedback import SqlFeedback
    from engine.store.sql.jobs import SqlJobs, SqlRetrainInputs
    from engine.store.sql.replicas import SqlReplicas
    from engine.store.sql.shadows import SqlShadows
    from engine.store.sqlite.artifacts import SqliteArtifactBytes
    from engine.store.sqlite.prediction_log import SqlitePredictionLog
    from engine.store.sqlite.routes import SqliteRoutes


class SqliteTx:
    """engine.store.base.Tx over one connection inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @cached_property
    def registry(self) -> SqlRegistry:
        return SqlRegistry(self.conn)

    @cached_property
    def deployments(self) -> SqlDeployments:
        return SqlDeployments(self.conn)

    @cached_property
    def rollouts(self) -> SqlRollouts:
        return SqlRollouts(self.conn)

    @cached_property
    def history(self) -> SqliteHistory:
        return SqliteHistory(self.conn)

    @cached_property
    def rollups(self) -> SqlRollups:
        return SqlRollups(self.conn)

    @cached_property
    def alerts(self) -> SqlAlerts:
        return SqlAlerts(self.conn)

    @cached_property
    def feedback(self) -> SqlFeedback:
        from engine.store.sql.feedback import SqlFeedback  # on first use: see the top

        return SqlFeedback(self.conn)

    @cached_property
    def baselines(self) -> SqlBaselines:
        # numpy: imported on first use, not with the store (`beast status` cold ≤ 0.4 s)
        from engine.store.sql.baselines import SqlBaselines

        return SqlBaselines(self.conn)

    @cached_property
    def jobs(self) -> SqlJobs:
        from engine.store.sql.jobs import SqlJobs  # on first use: see the top

        return SqlJobs(self.conn)

    @cached_property
    def retrain_inputs(self) -> SqlRetrainInputs:
        from engine.store.sql.jobs import SqlRetrainInputs  # on first use: see the top

        return SqlRetrainInputs(self.conn)

    @cached_property
    def routes(self) -> SqliteRoutes:
        from engine.store.sqlite.routes import SqliteRoutes  # on first use: see the top

        return SqliteRoutes(self.conn)

    @cached_property
    def shadows(self) -> SqlShadows:
        from engine.store.sql.shadows import SqlShadows  # on first use: see the top

        return SqlShadows(self.conn)

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
