"""History in SQLite: the `history` table (append-only: triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from engine.core.records import Action, HistoryEntry, Snapshot

_COLUMNS = (
    "id, line, at, actor, action, version, experiment, from_state, to_state, undoes, note, forced,"
    " evidence"
)

# SQLite builds each row's JSON itself: rewriting the export after every change stays cheap
# with thousands of rows (Python dataclass round-trips made it 0.3 s at 1,000 rows).
_EXPORT_SQL = """
SELECT json_object(
    'id', id, 'line', line, 'at', at, 'actor', actor, 'action', action, 'version', version,
    'experiment', experiment, 'from_state', json(from_state), 'to_state', json(to_state),
    'undoes', json(undoes), 'note', note,
    'forced', json(CASE WHEN forced THEN 'true' ELSE 'false' END),
    'evidence', json(evidence)
) FROM history ORDER BY id
"""


def _entry(row: sqlite3.Row) -> HistoryEntry:
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


class SqliteHistory:
    """engine.store.history.HistoryRepo over one SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
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
        new_id = self.conn.execute(
            "INSERT INTO history (line, at, actor, action, version, experiment, from_state,"
            " to_state, undoes, note, forced, evidence)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        ).lastrowid
        stored = self.conn.execute(
            f"SELECT {_COLUMNS} FROM history WHERE id = ?", (new_id,)
        ).fetchone()
        return _entry(stored)

    def export_text(self) -> str:
        rows = [row[0] for row in self.conn.execute(_EXPORT_SQL)]
        if not rows:
            return "[]\n"
        return "[\n" + ",\n".join(rows) + "\n]\n"
