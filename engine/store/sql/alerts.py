"""Alerts in SQL (both backends): the `alerts` table (a firing row has `resolved_at` NULL)."""

from __future__ import annotations

from typing import Any

from engine.core.records import Alert
from engine.store.sql.conn import Conn

_COLUMNS = (
    "id, line, version, metric, severity, value, threshold, message, first_seen, last_seen,"
    " resolved_at, acknowledged_at, acknowledged_by,"
    " acknowledged_note"
)


def _alert(row: Any) -> Alert:
    return Alert(*row)


class SqlAlerts:
    """engine.store.alerts.AlertRepo over one transaction (SQLite or PostgreSQL)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def firing(self) -> list[Alert]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE resolved_at IS NULL")
        return [_alert(row) for row in rows]

    def firing_one(self, line: str, version: str, metric: str) -> Alert | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE line = ? AND version = ? AND metric = ?"
            " AND resolved_at IS NULL",
            (line, version, metric),
        ).fetchone()
        return _alert(row) if row else None

    def get(self, alert_id: int) -> Alert | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)
        ).fetchone()
        return _alert(row) if row else None

    def since(self, line: str, version: str, metric: str, first_seen: str) -> list[Alert]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE line = ? AND version = ? AND metric = ?"
            " AND first_seen >= ? ORDER BY id",
            (line, version, metric, first_seen),
        )
        return [_alert(row) for row in rows]

    def acknowledge(self, alert_id: int, *, at: str, by: str, note: str | None = None) -> None:
        self.conn.execute(
            "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ?, acknowledged_note = ?"
            " WHERE id = ? AND acknowledged_at IS NULL",
            (at, by, note, alert_id),
        )

    def recent(self, resolved: int) -> list[Alert]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE resolved_at IS NULL"
            f" UNION ALL SELECT * FROM (SELECT {_COLUMNS} FROM alerts"
            " WHERE resolved_at IS NOT NULL ORDER BY id DESC LIMIT ?) AS resolved",
            (resolved,),
        )
        return [_alert(row) for row in rows]

    def fire(
        self,
        *,
        line: str,
        version: str,
        metric: str,
        severity: str,
        value: float,
        threshold: float,
        message: str,
        at: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO alerts (line, version, metric, severity, value, threshold, message,"
            " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (line, version, metric, severity, value, threshold, message, at, at),
        )

    def refresh(
        self,
        alert_id: int,
        *,
        message: str,
        at: str,
        severity: str | None = None,
        value: float | None = None,
        threshold: float | None = None,
    ) -> None:
        self.conn.execute(
            "UPDATE alerts SET message = ?, last_seen = ?, severity = coalesce(?, severity),"
            " value = coalesce(?, value), threshold = coalesce(?, threshold) WHERE id = ?",
            (message, at, severity, value, threshold, alert_id),
        )

    def resolve(self, alert_id: int, at: str) -> None:
        self.conn.execute("UPDATE alerts SET resolved_at = ? WHERE id = ?", (at, alert_id))

    def worst_firing(self, serving: list[tuple[str, str]]) -> str | None:
        if not serving:
            return None
        marks = ", ".join("(?, ?)" for _ in serving)
        flat = [part for pair in serving for part in pair]
        worst = self.conn.execute(
            f"SELECT max(CASE severity WHEN 'critical' THEN 2 ELSE 1 END) FROM alerts"
            f" WHERE resolved_at IS NULL AND (line, version) IN (VALUES {marks})",
            flat,
        ).fetchone()[0]
        if not worst:
            return None
        return "critical" if worst == 2 else "warning"
