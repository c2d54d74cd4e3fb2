"""`PostgresTx`: one PostgreSQL transaction's repositories, bound to its connection.

Most repositories are the shared ones (engine/store/sql/), given a `PgConn` that takes their
SQL; a domain whose SQL differs has its module here. Made on first use, as SqliteTx's are.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import psycopg

from engine.store.postgres.artifacts import PgArtifactBytes
from engine.store.postgres.conn import PgConn
from engine.store.postgres.history import PostgresHistory
from engine.store.sql.alerts import SqlAlerts
from engine.store.sql.deployments import SqlDeployments
from engine.store.sql.registry import SqlRegistry
from engine.store.sql.replicas import SqlReplicas
from engine.store.sql.rollouts import SqlRollouts
from engine.store.sql.routes import SqlRoutes

if TYPE_CHECKING:
    from engine.store.postgres.feedback import PostgresFeedback
    from engine.store.postgres.prediction_log import PostgresPredictionLog
    from engine.store.postgres.rollups import PostgresRollups
    from engine.store.sql.baselines import SqlBaselines
    from engine.store.sql.jobs import SqlJobs, SqlRetrainInputs
    from engine.store.sql.shadows import SqlShadows


class PostgresTx:
    """engine.store.base.Tx over one psycopg connection inside one transaction."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.conn = PgConn(raw)

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
    def history(self) -> PostgresHistory:
        return PostgresHistory(self.conn)

    @cached_property
    def routes(self) -> SqlRoutes:
        return SqlRoutes(self.conn)

    @cached_property
    def alerts(self) -> SqlAlerts:
        return SqlAlerts(self.conn)

    # -- the prediction log, rollups, feedback and baselines (i16-h2) -------------------

    @cached_property
    def shadows(self) -> SqlShadows:
        from engine.store.sql.shadows import SqlShadows  # on first use, as the others

        return SqlShadows(self.conn)

    @cached_property
    def predictions(self) -> PostgresPredictionLog:
        # numpy (the batch blobs): imported on first use, as SqliteTx's
        from engine.store.postgres.prediction_log import PostgresPredictionLog

        return PostgresPredictionLog(self.conn)

    @cached_property
    def rollups(self) -> PostgresRollups:
        from engine.store.postgres.rollups import PostgresRollups

        return PostgresRollups(self.conn)

    @cached_property
    def feedback(self) -> PostgresFeedback:
        from engine.store.postgres.feedback import PostgresFeedback

        return PostgresFeedback(self.conn)

    @cached_property
    def baselines(self) -> SqlBaselines:
        from engine.store.sql.baselines import SqlBaselines  # numpy on first use

        return SqlBaselines(self.conn)

    @cached_property
    def replicas(self) -> SqlReplicas:
        return SqlReplicas(self.conn)

    @cached_property
    def artifact_bytes(self) -> PgArtifactBytes:
        return PgArtifactBytes(self.conn)

    @cached_property
    def jobs(self) -> SqlJobs:
        from engine.store.sql.jobs import SqlJobs  # on first use, as SqliteTx's

        return SqlJobs(self.conn)

    @cached_property
    def retrain_inputs(self) -> SqlRetrainInputs:
        from engine.store.sql.jobs import SqlRetrainInputs  # on first use, as SqliteTx's

        return SqlRetrainInputs(self.conn)
