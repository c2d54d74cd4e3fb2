"""Deployments in SQL (both backends): `line_state` (one row per line) and `experiments`."""

from __future__ import annotations

from typing import Any

from engine.core.records import Ending, Experiment, ExperimentStatus, LineState, VersionRef
from engine.store.sql.conn import Conn
from engine.store.sql.registry import SqlRegistry
from engine.store.sql.rollouts import COLUMNS as ROLLOUT_COLUMNS
from engine.store.sql.rollouts import rollout_of

_EXPERIMENT_SQL = f"""
    SELECT e.*, c.name AS control_name, k.name AS candidate_name, {ROLLOUT_COLUMNS}
    FROM experiments e JOIN versions c ON c.id = e.control_id
    JOIN versions k ON k.id = e.candidate_id
    LEFT JOIN rollouts r ON r.experiment_id = e.id
"""


def _experiment(row: Any) -> Experiment:
    return Experiment(
        id=row["id"],
        name=row["name"],
        line=row["line"],
        control=row["control_name"],
        candidate=row["candidate_name"],
        traffic_bp=row["traffic_bp"],
        status=row["status"],
        started_at=row["started_at"],
        started_by=row["started_by"],
        ended_at=row["ended_at"],
        ended_by=row["ended_by"],
        end_reason=row["end_reason"],
        forced=bool(row["forced"]),
        verdict=row["verdict"],
        ending=row["ending"],
        rollout=rollout_of(row),
    )


class SqlDeployments:
    """engine.store.deployments.DeploymentRepo over one transaction (SQLite or PostgreSQL)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def state(self, line: str) -> LineState | None:
        conn = self.conn
        row = conn.execute("SELECT * FROM line_state WHERE line = ?", (line,)).fetchone()
        if row is None:
            return None
        versions = SqlRegistry(conn)
        candidate = versions.version_by_id(row["candidate_id"]) if row["candidate_id"] else None
        experiment = None
        if row["experiment_id"] is not None:
            experiment = conn.execute(
                "SELECT name FROM experiments WHERE id = ?", (row["experiment_id"],)
            ).fetchone()[0]
        return LineState(
            line=line,
            production=versions.version_by_id(row["production_id"]),
            production_since=row["production_since"],
            production_by=row["production_by"],
            revision=row["revision"],
            candidate=candidate,
            candidate_bp=row["candidate_bp"],
            candidate_since=row["candidate_since"],
            candidate_by=row["candidate_by"],
            experiment=experiment,
        )

    def experiments(self) -> list[Experiment]:
        rows = self.conn.execute(_EXPERIMENT_SQL + " ORDER BY e.id").fetchall()
        return [_experiment(row) for row in rows]

    def experiment(self, name: str) -> Experiment | None:
        row = self.conn.execute(_EXPERIMENT_SQL + " WHERE e.name = ?", (name,)).fetchone()
        return _experiment(row) if row else None

    def states(self) -> list[LineState]:
        lines = [row[0] for row in self.conn.execute("SELECT line FROM line_state ORDER BY line")]
        return [state for state in map(self.state, lines) if state is not None]

    def any_deployed(self) -> bool:
        return self.conn.execute("SELECT 1 FROM line_state LIMIT 1").fetchone() is not None

    def put_state(self, state: LineState) -> None:
        candidate = state.candidate
        self.conn.execute(
            """
            INSERT INTO line_state (line, production_id, production_since, production_by,
                candidate_id, candidate_bp, candidate_since, candidate_by, experiment_id, revision)
            VALUES (:line, :pid, :psince, :pby, :cid, :cbp, :csince, :cby,
                (SELECT id FROM experiments WHERE name = :test), :rev)
            ON CONFLICT(line) DO UPDATE SET production_id = :pid, production_since = :psince,
                production_by = :pby, candidate_id = :cid, candidate_bp = :cbp,
                candidate_since = :csince, candidate_by = :cby,
                experiment_id = (SELECT id FROM experiments WHERE name = :test), revision = :rev
            """,
            {
                "line": state.line,
                "pid": state.production.id,
                "psince": state.production_since,
                "pby": state.production_by,
                "cid": candidate.id if candidate else None,
                "cbp": state.candidate_bp,
                "csince": state.candidate_since,
                "cby": state.candidate_by,
                "test": state.experiment,
                "rev": state.revision,
            },
        )

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
        self.conn.execute(
            "INSERT INTO experiments (name, line, control_id, candidate_id, traffic_bp,"
            " status, started_at, started_by) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
            (name, control.line, control.id, candidate.id, traffic_bp, at, actor),
        )

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
        self.conn.execute(
            "UPDATE experiments SET status = ?, ended_at = ?, ended_by = ?, end_reason = ?,"
            " forced = ?, verdict = ?, ending = ? WHERE name = ? AND status = 'running'",
            (status, at, actor, reason, int(forced), verdict, ending, name),
        )
