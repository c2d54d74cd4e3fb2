"""The registry in SQLite: `model_lines`, `artifacts`, `versions`."""

from __future__ import annotations

import sqlite3

from engine.core.errors import NotFound
from engine.core.records import VersionRef

_VERSION_SQL = """
SELECT v.id, v.line, v.name, v.artifact_id, v.kind, a.sha256
FROM versions v JOIN artifacts a ON a.id = v.artifact_id
"""


def version_from_row(row: sqlite3.Row) -> VersionRef:
    return VersionRef(
        id=row["id"],
        line=row["line"],
        name=row["name"],
        artifact_id=row["artifact_id"],
        sha256=row["sha256"],
        kind=row["kind"],
    )


class SqliteRegistry:
    """engine.store.registry.RegistryRepo over one SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def line_names(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT name FROM model_lines ORDER BY name")]

    def find_version(self, line: str, name: str) -> VersionRef | None:
        row = self.conn.execute(
            _VERSION_SQL + " WHERE v.line = ? AND v.name = ?", (line, name)
        ).fetchone()
        return version_from_row(row) if row else None

    def get_version(self, line: str, name: str) -> VersionRef:
        ref = self.find_version(line, name)
        if ref is None:
            known = [
                r[0]
                for r in self.conn.execute(
                    "SELECT name FROM versions WHERE line = ? ORDER BY id", (line,)
                )
            ]
            hint = f" (registered: {', '.join(known)})" if known else " (none registered yet)"
            raise NotFound(f"no version {name} in model line {line}{hint}")
        return ref

    def version_by_id(self, version_id: int) -> VersionRef:
        row = self.conn.execute(_VERSION_SQL + " WHERE v.id = ?", (version_id,)).fetchone()
        return version_from_row(row)

    def first_version_of(self, artifact_id: int) -> VersionRef | None:
        row = self.conn.execute(
            _VERSION_SQL + " WHERE v.artifact_id = ? ORDER BY v.id LIMIT 1", (artifact_id,)
        ).fetchone()
        return version_from_row(row) if row else None

    def artifact_file(self, artifact_id: int) -> str:
        row = self.conn.execute(
            "SELECT path FROM artifacts WHERE id = ?", (artifact_id,)
        ).fetchone()
        return str(row["path"])
