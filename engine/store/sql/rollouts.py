"""Rollouts in SQL (both backends): `rollouts`, one row per test with a progressive rollout."""

from __future__ import annotations

import json
from typing import Any

from engine.core.records import Rollout
from engine.store.sql.conn import Conn

# The columns a read of experiments joins (LEFT JOIN rollouts r ON r.experiment_id = e.id).
COLUMNS = (
    "r.steps AS rollout_steps, r.step AS rollout_step, r.state AS rollout_state,"
    " r.step_since AS rollout_step_since, r.updated_at AS rollout_updated_at"
)


def rollout_of(row: Any) -> Rollout | None:
    """The rollout in a row read with `COLUMNS`, or None for a plain test."""
    if row["rollout_steps"] is None:
        return None
    return Rollout(
        steps=tuple(int(bp) for bp in json.loads(row["rollout_steps"])),
        step=int(row["rollout_step"]),
        state=row["rollout_state"],
        step_since=row["rollout_step_since"],
        updated_at=row["rollout_updated_at"],
    )


class SqlRollouts:
    """engine.store.rollouts.RolloutRepo over one transaction (SQLite or PostgreSQL)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def put(self, experiment: str, rollout: Rollout) -> None:
        self.conn.execute(
            """
            INSERT INTO rollouts (experiment_id, steps, step, state, step_since, updated_at)
            VALUES ((SELECT id FROM experiments WHERE name = :test), :steps, :step, :state,
                :since, :at)
            ON CONFLICT(experiment_id) DO UPDATE SET steps = :steps, step = :step,
                state = :state, step_since = :since, updated_at = :at
            """,
            {
                "test": experiment,
                "steps": json.dumps(list(rollout.steps)),
                "step": rollout.step,
                "state": rollout.state,
                "since": rollout.step_since,
                "at": rollout.updated_at,
            },
        )

    def move_share(self, experiment: str, traffic_bp: int) -> None:
        self.conn.execute(
            "UPDATE experiments SET traffic_bp = ? WHERE name = ? AND status = 'running'",
            (traffic_bp, experiment),
        )
