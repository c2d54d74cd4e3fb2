"""Shadows and their scores in SQL (both backends)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING

from engine.core import ids
from engine.core.errors import Conflict, NotFound
from engine.core.records import Shadow
from engine.store.shadows import ShadowScores
from engine.store.sql.conn import Conn

if TYPE_CHECKING:
    import numpy as np

_COLUMNS = (
    "s.id, s.line, v.name, s.version_id, s.share_bp, s.started_at, s.started_by, s.ended_at,"
    " s.ended_by, (SELECT count(*) FROM shadow_scores c WHERE c.shadow_id = s.id), s.dropped"
    " FROM shadows s JOIN versions v ON v.id = s.version_id"
)


class SqlShadows:
    """engine.store.shadows.ShadowRepo over one transaction (SQLite or PostgreSQL)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def running(self, line: str | None = None) -> list[Shadow]:
        where, args = ("AND s.line = ?", (line,)) if line is not None else ("", ())
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} WHERE s.ended_at IS NULL {where} ORDER BY s.line", args
        ).fetchall()
        return [Shadow(*row) for row in rows]

    def get(self, shadow_id: int) -> Shadow:
        row = self.conn.execute(f"SELECT {_COLUMNS} WHERE s.id = ?", (shadow_id,)).fetchone()
        if row is None:
            raise NotFound(f"no shadow #{shadow_id}")
        return Shadow(*row)

    def start(self, line: str, version_id: int, share_bp: int, *, at: str, actor: str) -> int:
        if self.running(line):  # the partial unique index says so too; this says it clearly
            raise Conflict(f"a shadow is already running on {line}")
        row = self.conn.execute(
            "INSERT INTO shadows (line, version_id, share_bp, started_at, started_by)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id",
            (line, version_id, share_bp, at, actor),
        ).fetchone()
        return int(row[0])

    def end(self, shadow_id: int, *, at: str, actor: str) -> None:
        self.conn.execute(
            "UPDATE shadows SET ended_at = ?, ended_by = ? WHERE id = ? AND ended_at IS NULL",
            (at, actor, shadow_id),
        )

    def add_scores(self, scores: Sequence[ShadowScores]) -> None:
        import numpy as np  # as in `pairs`

        for found in scores:
            # The log's key of each id (engine.ids.key), for all rows at once: the first 64
            # bits, and the last 64 less the variant's top bit; a batch row's number is the
            # id's last 20 bits, its prefix the first 27 characters.
            raw = np.frombuffer(bytes.fromhex("".join(found.pids)), dtype=">u8").reshape(-1, 2)
            hi = raw[:, 0].astype(np.int64)
            lo = (raw[:, 1] - np.uint64(1 << 63)).astype(np.int64)
            batch = found.batch.tolist()
            prefixes = [
                p[: ids.PREFIX_CHARS] if b else None for p, b in zip(found.pids, batch, strict=True)
            ]
            rows = [r if b else None for r, b in zip((lo & 0xFFFFF).tolist(), batch, strict=True)]
            values = [None if math.isnan(v) else v for v in found.scores.tolist()]  # NaN: failed
            self.conn.executemany(
                "INSERT INTO shadow_scores (shadow_id, hi, lo, prefix, row, control_id, control,"
                " score, error, latency_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                zip(
                    repeat(found.shadow_id),
                    hi.tolist(),
                    lo.tolist(),
                    prefixes,
                    rows,
                    repeat(found.control_id),
                    found.control.tolist(),
                    values,
                    found.errors,
                    repeat(found.latency_us),
                ),
            )

    def add_dropped(self, shadow_id: int, count: int) -> None:
        self.conn.execute(
            "UPDATE shadows SET dropped = dropped + ? WHERE id = ?", (count, shadow_id)
        )

    def scores(self, shadow_id: int) -> dict[str, float | None]:
        rows = self.conn.execute(
            "SELECT hi, lo, score FROM shadow_scores WHERE shadow_id = ?", (shadow_id,)
        ).fetchall()
        return {ids.from_key(hi, lo): score for hi, lo, score in rows}

    def pairs(self, shadow_id: int, control_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # A single prediction's label is on its row (same key); a batch row's in batch_labels.
        rows = self.conn.execute(
            "SELECT s.score, s.control, p.actual FROM shadow_scores s"
            " JOIN predictions p ON p.hi = s.hi AND p.lo = s.lo"
            " WHERE s.shadow_id = ? AND s.control_id = ? AND s.prefix IS NULL"
            " AND s.score IS NOT NULL AND p.actual IS NOT NULL"
            " UNION ALL "
            "SELECT s.score, s.control, l.actual FROM shadow_scores s"
            " JOIN prediction_batches b ON b.prefix = s.prefix"
            " JOIN batch_labels l ON l.batch_id = b.id AND l.row = s.row"
            " WHERE s.shadow_id = ? AND s.control_id = ? AND s.score IS NOT NULL",
            (shadow_id, control_id, shadow_id, control_id),
        ).fetchall()
        import numpy as np  # here: `beast status` reads shadows, and starts cold in ≤ 0.4 s

        found = np.array(rows, dtype=np.float64).reshape(-1, 3)
        return found[:, 0], found[:, 1], found[:, 2]
