"""History in SQL (both backends): the `history` table (append-only: triggers refuse UPDATE and
DELETE)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

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
    """engine.store.history.HistoryRepo over one transaction (SQLite or PostgreSQL).

    `export_sql` is the dialect's: a statement that writes each row's JSON (one column, in id
    order), set by each backend's subclass (JSON is built differently by each database).
    """

    export_sql: ClassVar[str]

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
        return export_lines([row[0] for row in self.conn.execute(self.export_sql)])


def export_lines(rows: list[str]) -> str:
    """The export's text from its rows' JSON: a JSON array, one row per line."""
    if not rows:
        return "[]\n"
    return "[\n" + ",\n".join(rows) + "\n]\n"
