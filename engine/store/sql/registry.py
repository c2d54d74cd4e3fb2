"""The registry in SQL (both backends): `model_lines`, `artifacts`, `versions`."""

from __future__ import annotations

import json
from typing import Any, Literal

from engine.core.errors import NotFound
from engine.core.records import Artifact, LineSchema, VersionRef
from engine.store.sql.conn import Conn

_VERSION_SQL = """
SELECT v.id, v.line, v.name, v.artifact_id, v.kind, a.sha256
FROM versions v JOIN artifacts a ON a.id = v.artifact_id
"""


def version_from_row(row: Any) -> VersionRef:
    return VersionRef(
        id=row["id"],
        line=row["line"],
        name=row["name"],
        artifact_id=row["artifact_id"],
        sha256=row["sha256"],
        kind=row["kind"],
    )


class SqlRegistry:
    """engine.store.registry.RegistryRepo over one transaction (SQLite or PostgreSQL)."""

    def __init__(self, conn: Conn) -> None:
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

    def artifacts(self, only_id: int | None = None) -> list[Artifact]:
        where, params = ("WHERE id = ?", (only_id,)) if only_id is not None else ("", ())
        names = self._names(" WHERE artifact_id = ?" if only_id is not None else "", params)
        return [
            _artifact(row, tuple(names.get(row["id"], [])))
            for row in self.conn.execute(f"SELECT * FROM artifacts {where} ORDER BY id", params)
        ]

    def artifact_by_sha(self, sha256: str) -> Artifact | None:
        row = self.conn.execute("SELECT * FROM artifacts WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            return None
        names = self._names(" WHERE artifact_id = ?", (row["id"],))
        return _artifact(row, tuple(names.get(row["id"], [])))

    def _names(self, where: str, params: tuple[object, ...]) -> dict[int, list[str]]:
        names: dict[int, list[str]] = {}
        for row in self.conn.execute(
            "SELECT artifact_id, name FROM versions" + where + " ORDER BY id", params
        ):
            names.setdefault(row[0], []).append(row[1])
        return names

    def versions_of_rejected(self) -> list[VersionRef]:
        rows = self.conn.execute(_VERSION_SQL + " WHERE a.status != 'valid'").fetchall()
        return [version_from_row(row) for row in rows]

    def line_schema(self, line: str) -> LineSchema | None:
        row = self.conn.execute(
            "SELECT n_features, feature_names FROM model_lines WHERE name = ?", (line,)
        ).fetchone()
        if row is None:
            return None
        return LineSchema(line, row["n_features"], _names_of(row["feature_names"]))

    def add_line(self, schema: LineSchema, *, at: str) -> None:
        self.conn.execute(
            "INSERT INTO model_lines (name, n_features, feature_names, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (schema.line, schema.n_features, _names_json(schema.feature_names), at),
        )

    def put_valid(
        self,
        *,
        sha256: str,
        path: str,
        size: int,
        format: str,
        line: str,
        n_features: int,
        feature_names: tuple[str, ...] | None,
        xgboost_version: str | None,
        at: str,
        actor: str,
        objective: str | None = None,
    ) -> int:
        values = (
            path,
            size,
            format,
            line,
            n_features,
            _names_json(feature_names),
            xgboost_version,
            at,
            actor,
            objective,
        )
        existing = self.conn.execute(
            "SELECT id FROM artifacts WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if existing is None:
            return int(
                self.conn.execute(
                    "INSERT INTO artifacts (path, size, format, line, n_features, feature_names,"
                    " xgboost_version, registered_at, registered_by, objective, sha256, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'valid') RETURNING id",
                    (*values, sha256),
                ).fetchone()[0]
            )
        self.conn.execute(
            "UPDATE artifacts SET path = ?, size = ?, format = ?, line = ?, n_features = ?,"
            " feature_names = ?, xgboost_version = ?, registered_at = ?, registered_by = ?,"
            " objective = ?, status = 'valid', reason = NULL WHERE id = ?",
            (*values, existing["id"]),
        )
        return int(existing["id"])

    def put_rejected(
        self,
        *,
        sha256: str,
        path: str,
        size: int,
        format: str,
        reason: str,
        at: str,
        actor: str,
        objective: str | None = None,
    ) -> None:
        existing = self.conn.execute(
            "SELECT id, status FROM artifacts WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if existing is not None and existing["status"] == "valid":
            return
        if existing is None:
            self.conn.execute(
                "INSERT INTO artifacts (sha256, path, size, format, status, reason,"
                " registered_at, registered_by, objective)"
                " VALUES (?, ?, ?, ?, 'rejected', ?, ?, ?, ?)",
                (sha256, path, size, format, reason, at, actor, objective),
            )
        else:
            self.conn.execute(
                "UPDATE artifacts SET path = ?, reason = ?, registered_at = ?,"
                " objective = coalesce(?, objective) WHERE id = ?",
                (path, reason, at, objective, existing["id"]),
            )

    def add_version(
        self,
        line: str,
        name: str,
        artifact_id: int,
        *,
        kind: Literal["version", "alias"],
        at: str,
        actor: str,
    ) -> VersionRef:
        version_id = self.conn.execute(
            "INSERT INTO versions (line, name, artifact_id, kind, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (line, name, artifact_id, kind, at, actor),
        ).fetchone()[0]
        return self.version_by_id(int(version_id))


def _names_of(stored: str | None) -> tuple[str, ...] | None:
    names = json.loads(stored) if stored else None
    return tuple(names) if names else None


def _names_json(names: tuple[str, ...] | None) -> str | None:
    return json.dumps(list(names)) if names else None


def _artifact(row: Any, names: tuple[str, ...]) -> Artifact:
    return Artifact(
        id=row["id"],
        sha256=row["sha256"],
        path=row["path"],
        size=row["size"],
        format=row["format"],
        status=row["status"],
        reason=row["reason"],
        line=row["line"],
        n_features=row["n_features"],
        feature_names=_names_of(row["feature_names"]),
        xgboost_version=row["xgboost_version"],
        registered_at=row["registered_at"],
        registered_by=row["registered_by"],
        versions=names,
        objective=row["objective"],
    )
