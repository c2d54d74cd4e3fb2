"""History in SQL (both backends): the `history` table (append-only: triggers refuse UPDATE and
DELETE)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.core.records import Action, HistoryEntry, Snapshot
from engine.store.sql.conn import Conn

_COLUMNS = (
    "id, line, at, actor, action, version, experiment, from_state, to_state, undoes, note, forced,"
    " evidence"
)


def _entry(row: Any) -> HistoryEntry:
    return HistoryEntry(
        id=row["id"],
        line=row["line"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        version=row["version"],
        experiment=row["experiment"],
        from_state=Snapshot.from_json(json.loads(row["from_state"])),
        to_state=Snapshot.from_json(json.loads(row["to_state"])),
        undoes=tuple(json.loads(row["undoes"])),
        note=row["note"],
        forced=bool(row["forced"]),
        evidence=json.loads(row["evidence"]) if row["evidence"] is not None else None,
    )


class SqlHistory:
    """engine.store.history.HistoryRepo over one transaction (SQLite or PostgreSQL)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def entries(self, line: str | None = None) -> list[HistoryEntry]:
        if line is None:
            rows = self.conn.execute(f"SELECT {_COLUMNS} FROM history ORDER BY id").fetchall()
        else:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM history WHERE line = ? ORDER BY id", (line,)
            ).fetchall()
        return [_entry(row) for row in rows]

    def last(self, line: str) -> HistoryEntry | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM history WHERE line = ? ORDER BY id DESC LIMIT 1", (line,)
        ).fetchone()
        return _entry(row) if row else None

    def append(
        self,
        *,
        line: str,
        at: str,
        actor: str,
        action: Action,
        version: str | None,
        experiment: str | None,
        from_state: Snapshot,
        to_state: Snapshot,
        undoes: tuple[int, ...] = (),
        note: str | None = None,
        forced: bool = False,
        evidence: Mapping[str, Any] | None = None,
    ) -> HistoryEntry:
        stored = self.conn.execute(
            "INSERT INTO history (line, at, actor, action, version, experiment, from_state,"
            " to_state, undoes, note, forced, evidence)"
            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
            (
                line,
                at,
                actor,
                action,
                version,
                experiment,
                json.dumps(from_state.to_json(), sort_keys=True),
                json.dumps(to_state.to_json(), sort_keys=True),
                json.dumps(list(undoes)),
                note,
                int(forced),
                None if evidence is None else json.dumps(evidence, sort_keys=True, allow_nan=False),
            ),
        ).fetchone()
        return _entry(stored)

    def export_text(self) -> str:
        # Each row as SQLite's json_object writes it (compact, keys in this order, the stored
        # JSON columns parsed in place): one export, byte for byte, whichever backend wrote it.
        # The stored JSON is parsed, never a HistoryEntry: no dataclass round-trip per row.
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM history ORDER BY id")
        return export_lines([_export_row(row) for row in rows])


def export_lines(rows: list[str]) -> str:
    """The export's text from its rows' JSON: a JSON array, one row per line."""
    if not rows:
        return "[]\n"
    return "[\n" + ",\n".join(rows) + "\n]\n"


def _export_row(row: Any) -> str:
    evidence = row["evidence"]
    return json.dumps(
        {
            "id": row["id"],
            "line": row["line"],
            "at": row["at"],
            "actor": row["actor"],
            "action": row["action"],
            "version": row["version"],
            "experiment": row["experiment"],
            "from_state": json.loads(row["from_state"]),
            "to_state": json.loads(row["to_state"]),
            "undoes": json.loads(row["undoes"]),
            "note": row["note"],
            "forced": bool(row["forced"]),
            "evidence": None if evidence is None else json.loads(evidence),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
