"""The routes in SQLite: `line_state` with its line's features and its A/B test's name."""

from __future__ import annotations

import json
import sqlite3

from engine.core.records import ServedLine


class SqliteRoutes:
    """engine.store.routes.RouteRepo over one SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def change_counter(self) -> int:
        # Per connection: it moves when any other connection commits (SQLite's own counter).
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def served_lines(self) -> list[ServedLine]:
        rows = self.conn.execute(
            "SELECT s.line, s.production_id, s.candidate_id, s.candidate_bp, e.name,"
            " s.revision, m.feature_names, m.n_features FROM line_state s"
            " JOIN model_lines m ON m.name = s.line"
            " LEFT JOIN experiments e ON e.id = s.experiment_id"
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
            )
            for line, production_id, candidate_id, bp, experiment, revision, names, width in rows
        ]
