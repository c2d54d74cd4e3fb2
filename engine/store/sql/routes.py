"""The routes in SQL (both backends): `line_state` with its line's features and its A/B test's
name."""

from __future__ import annotations

import json

from engine.core.records import ServedLine
from engine.store.sql.conn import Conn


class SqlRoutes:
    """engine.store.routes.RouteRepo over one transaction (SQLite or PostgreSQL)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def change_counter(self) -> int:
        # Every change of what is served is one transaction with its history row (the schema
        # keeps it so), and history ids only grow: the newest id moves on every such change and
        # on nothing else, so a busy prediction log does not make the router reload (one
        # index-only read). SQLite overrides it with its own, cheaper counter.
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0])

    def served_lines(self) -> list[ServedLine]:
        rows = self.conn.execute(
            "SELECT s.line, s.production_id, s.candidate_id, s.candidate_bp, e.name,"
            " s.revision, m.feature_names, m.n_features, h.id, h.version_id, h.share_bp"
            " FROM line_state s JOIN model_lines m ON m.name = s.line"
            " LEFT JOIN experiments e ON e.id = s.experiment_id"
            " LEFT JOIN shadows h ON h.line = s.line AND h.ended_at IS NULL"
        ).fetchall()
        return [
            ServedLine(
                line,
                production_id,
                candidate_id,
                bp,
                experiment,
                revision,
                tuple(json.loads(names)) if names else None,
                width,
                shadow_id or 0,
                shadow_version or 0,
                shadow_bp or 0,
            )
            for (
                line,
                production_id,
                candidate_id,
                bp,
                experiment,
                revision,
                names,
                width,
                shadow_id,
                shadow_version,
                shadow_bp,
            ) in rows
        ]
