"""Baselines in SQL (both backends): the `baselines` table (one row per artifact; the
reference as JSON), and the reads of the log that find a version's first predictions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engine.core.records import Baseline, FirstPredictionSource
from engine.store.sql.conn import Conn

if TYPE_CHECKING:  # numpy: only where the first predictions are read (see first_rows)
    import numpy as np

_OF_VERSION = " JOIN versions v ON v.artifact_id = b.artifact_id WHERE v.id = ?"


class SqlBaselines:
    """engine.store.baselines.BaselineRepo over one transaction."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def add(self, artifact_id: int, baseline: Baseline, at: str) -> None:
        self.conn.execute(
            "INSERT INTO baselines (artifact_id, source, reference, accuracy, mae,"
            " created_at, metrics, source_detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (
                artifact_id,
                baseline.source,
                json.dumps(baseline.reference) if baseline.reference is not None else None,
                baseline.accuracy,
                baseline.mae,
                at,
                json.dumps(dict(baseline.metrics)) if baseline.metrics else None,
                baseline.detail,
            ),
        )

    def replace(self, artifact_id: int, baseline: Baseline, at: str) -> None:
        self.conn.execute("DELETE FROM baselines WHERE artifact_id = ?", (artifact_id,))
        self.add(artifact_id, baseline, at)

    def binned(self, artifact_id: int) -> bool:
        for table in ("rollups", "rollups_hourly"):
            row = self.conn.execute(
                f"SELECT 1 FROM {table} WHERE drift_n > 0 AND version_id IN"
                " (SELECT id FROM versions WHERE artifact_id = ?) LIMIT 1",
                (artifact_id,),
            ).fetchone()
            if row is not None:
                return True
        return False

    def sources(self, version_ids: list[int]) -> dict[int, str]:
        if not version_ids:
            return {}
        marks = ", ".join("?" * len(version_ids))
        rows = self.conn.execute(
            "SELECT v.id, b.source FROM versions v JOIN baselines b"
            f" ON b.artifact_id = v.artifact_id WHERE v.id IN ({marks})",
            version_ids,
        )
        return {int(r[0]): str(r[1]) for r in rows}

    def for_version(self, version_id: int) -> Baseline | None:
        row = self.conn.execute(
            "SELECT b.reference, b.accuracy, b.mae, b.metrics, b.source, b.source_detail"
            " FROM baselines b" + _OF_VERSION,
            (version_id,),
        ).fetchone()
        if row is None:
            return None
        metrics = json.loads(row[3]) if row[3] else {}
        return Baseline(
            json.loads(row[0]) if row[0] else None,
            row[1],
            row[2],
            tuple((str(k), float(v)) for k, v in sorted(metrics.items())),
            row[4],
            row[5],
        )

    def has_reference(self, version_id: int) -> bool:
        known = self.conn.execute(
            "SELECT 1 FROM baselines b" + _OF_VERSION + " AND b.reference IS NOT NULL",
            (version_id,),
        ).fetchone()
        return known is not None

    def set_reference(self, artifact_id: int, reference: dict[str, Any], at: str) -> None:
        self.conn.execute(
            "INSERT INTO baselines (artifact_id, source, reference, created_at)"
            " VALUES (?, 'first_predictions', ?, ?) ON CONFLICT(artifact_id) DO UPDATE"
            " SET reference = excluded.reference WHERE baselines.reference IS NULL",
            (artifact_id, json.dumps(reference), at),
        )

    def first_prediction_source(self, version_id: int) -> FirstPredictionSource | None:
        row = self.conn.execute(
            "SELECT a.id, m.feature_names, m.n_features FROM versions v"
            " JOIN artifacts a ON a.id = v.artifact_id JOIN model_lines m ON m.name = v.line"
            " WHERE v.id = ?",
            (version_id,),
        ).fetchone()
        if row is None:
            return None
        artifact_id, names_json, width = row
        names = tuple(json.loads(names_json)) if names_json else None
        return FirstPredictionSource(artifact_id, names, width)

    def first_rows(
        self, version_id: int, width: int, limit: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Single predictions and batches' rows together, by time.

        Both scans start where the writer recorded the version's first rows and walk the
        table's own key (single rows by id, which is by time; batches by rowid): the log
        keeps no index on the version.
        """
        import numpy as np  # here, not at import: `beast status` reads baselines' sources cold

        conn = self.conn
        start = conn.execute(
            "SELECT from_key, from_batch FROM first_predictions WHERE version_id = ?",
            (version_id,),
        ).fetchone()
        if start is None:
            return None
        singles = conn.execute(
            "SELECT coalesce(at_ms, hi >> 16), features, score FROM predictions WHERE hi >= ?"
            " AND version_id = ? AND error IS NULL AND length(features) = ?"
            " ORDER BY hi, lo LIMIT ?",
            (start[0], version_id, 4 * width, limit),
        ).fetchall()
        at = [r[0] for r in singles]
        xs = [np.frombuffer(b"".join(r[1] for r in singles), dtype=np.float32).reshape(-1, width)]
        scores = [np.array([r[2] for r in singles], dtype=np.float64)]
        batch_rows = 0
        for at_ms, ids_blob, x_blob, s_blob in conn.execute(
            "SELECT at_ms, version_ids, features, scores FROM prediction_batches"
            " WHERE id >= ? AND width = ? ORDER BY id",
            (start[1], width),
        ):
            mine = np.frombuffer(ids_blob, dtype="<i8") == version_id
            s = np.frombuffer(s_blob, dtype="<f8")
            keep = mine & ~np.isnan(s)
            if keep.any():
                xs.append(np.frombuffer(x_blob, dtype="<f4").reshape(-1, width)[keep])
                scores.append(s[keep])
                at += [at_ms] * int(keep.sum())
                batch_rows += int(keep.sum())
            if batch_rows >= limit:
                break
        if len(at) < limit:
            return None
        first = np.argsort(np.array(at, dtype=np.int64), kind="stable")[:limit]
        return np.concatenate(xs)[first], np.concatenate(scores)[first]

    def rows_by_minute(
        self, version_id: int, width: int
    ) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
        """Every successful logged row of the version so far (features of `width`, scores),
        grouped by (A/B test name or "", minute): the rows to bin when its reference is
        built from them. The same scans as `first_rows`, without a limit."""
        import numpy as np  # here, not at import: `beast status` reads baselines' sources cold

        conn = self.conn
        start = conn.execute(
            "SELECT from_key, from_batch FROM first_predictions WHERE version_id = ?",
            (version_id,),
        ).fetchone()
        if start is None:
            return {}
        parts: dict[tuple[str, int], tuple[list[np.ndarray], list[np.ndarray]]] = {}

        def add(key: tuple[str, int], x: np.ndarray, s: np.ndarray) -> None:
            xs, ss = parts.setdefault(key, ([], []))
            xs.append(x)
            ss.append(s)

        for minute, experiment, x_blob, score in conn.execute(
            "SELECT coalesce(p.at_ms, p.hi >> 16) / 60000, coalesce(e.name, ''), p.features,"
            " p.score FROM predictions p LEFT JOIN experiments e ON e.id = p.experiment_id"
            " WHERE p.hi >= ? AND p.version_id = ? AND p.error IS NULL"
            " AND length(p.features) = ?",
            (start[0], version_id, 4 * width),
        ):
            add(
                (experiment, minute),
                np.frombuffer(x_blob, dtype=np.float32).reshape(1, width),
                np.array([score], dtype=np.float64),
            )
        for at_ms, experiment, ids_blob, x_blob, s_blob in conn.execute(
            "SELECT at_ms, experiment, version_ids, features, scores FROM prediction_batches"
            " WHERE id >= ? AND width = ?",
            (start[1], width),
        ):
            s = np.frombuffer(s_blob, dtype="<f8")
            keep = (np.frombuffer(ids_blob, dtype="<i8") == version_id) & ~np.isnan(s)
            if keep.any():
                x = np.frombuffer(x_blob, dtype="<f4").reshape(-1, width)[keep]
                add((experiment, at_ms // 60_000), x, s[keep])
        return {key: (np.concatenate(xs), np.concatenate(ss)) for key, (xs, ss) in parts.items()}
