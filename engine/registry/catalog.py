"""The model registry: artifacts by sha256, named by versions within a model line."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from engine.core import text
from engine.core.clock import utc_now
from engine.core.config import RegistrySettings
from engine.core.errors import ArtifactRejected, BeastError, Conflict
from engine.core.naming import check_name, split_filename
from engine.core.records import Artifact, VersionRef
from engine.registry import artifacts
from engine.store.sqlite.registry import SqliteRegistry


@dataclass(frozen=True)
class Registration:
    artifact: Artifact
    version: VersionRef | None
    new: bool


# Transitional (issue 13): conn-taking readers over the SQLite repository, for the callers
# not yet moved behind engine.store.base.Tx.
def find_version(conn: sqlite3.Connection, line: str, name: str) -> VersionRef | None:
    return SqliteRegistry(conn).find_version(line, name)


def get_version(conn: sqlite3.Connection, line: str, name: str) -> VersionRef:
    return SqliteRegistry(conn).get_version(line, name)


def version_by_id(conn: sqlite3.Connection, version_id: int) -> VersionRef:
    return SqliteRegistry(conn).version_by_id(version_id)


def line_names(conn: sqlite3.Connection) -> list[str]:
    return SqliteRegistry(conn).line_names()


def artifact_from_row(row: sqlite3.Row, models_dir: Path, names: tuple[str, ...]) -> Artifact:
    path = models_dir / row["path"]
    feature_names = json.loads(row["feature_names"]) if row["feature_names"] else None
    return Artifact(
        id=row["id"],
        sha256=row["sha256"],
        path=str(path),
        size=row["size"],
        format=row["format"],
        status=row["status"],
        reason=row["reason"],
        line=row["line"],
        n_features=row["n_features"],
        feature_names=tuple(feature_names) if feature_names else None,
        xgboost_version=row["xgboost_version"],
        registered_at=row["registered_at"],
        registered_by=row["registered_by"],
        versions=names,
        present=path.is_file(),
    )


def list_artifacts(
    conn: sqlite3.Connection, models_dir: Path, only_id: int | None = None
) -> list[Artifact]:
    """Every artifact with its version names, oldest first (or just `only_id`)."""
    where, params = ("WHERE id = ?", (only_id,)) if only_id is not None else ("", ())
    names: dict[int, list[str]] = {}
    for row in conn.execute(
        "SELECT artifact_id, name FROM versions"
        + (" WHERE artifact_id = ?" if only_id is not None else "")
        + " ORDER BY id",
        params,
    ):
        names.setdefault(row[0], []).append(row[1])
    return [
        artifact_from_row(row, models_dir, tuple(names.get(row["id"], [])))
        for row in conn.execute(f"SELECT * FROM artifacts {where} ORDER BY id", params)
    ]


def unregistered_files(
    conn: sqlite3.Connection, models_dir: Path, settings: RegistrySettings
) -> list[tuple[str, str | None]]:
    """Files in models/ with no registry row: (relative path, reason a cheap check refuses).

    A byte-for-byte copy of a valid artifact is registered already (registration is by
    content), so it is not listed; only files whose size matches an artifact's are hashed.
    """
    known = {row[0] for row in conn.execute("SELECT path FROM artifacts")}
    valid_by_size: dict[int, set[str]] = {}
    for row in conn.execute("SELECT size, sha256 FROM artifacts WHERE status = 'valid'"):
        valid_by_size.setdefault(row[0], set()).add(row[1])
    found: list[tuple[str, str | None]] = []
    if not models_dir.is_dir():
        return found
    for path in sorted(models_dir.rglob("*")):
        relative = path.relative_to(models_dir).as_posix()
        if relative in known or any(part.startswith(".") for part in path.parts[-1:]):
            continue
        # Temp files are not models yet; `.lineage` sidecars describe a model (training).
        if path.is_dir() or path.name.endswith((".tmp", ".part", "~", ".lineage")):
            continue
        try:
            resolved = artifacts.resolve_in_models(path, models_dir)
            checked = artifacts.check_file(resolved, models_dir, settings.max_artifact_bytes)
            same_size = valid_by_size.get(checked.size)
            if same_size and artifacts.sha256_of(resolved) in same_size:
                continue
            found.append((relative, _naming_problem(conn, resolved, relative)))
        except (BeastError, OSError) as exc:
            found.append((relative, str(exc)))
    return found


def _naming_problem(conn: sqlite3.Connection, path: Path, relative: str) -> str | None:
    """Why the watcher (or a plain `beast register`) cannot name this file, if it cannot."""
    try:
        check_file_name(relative)
    except BeastError as exc:
        return str(exc)
    try:
        naming = naming_for(path, version=None, model=None, lines=line_names(conn))
    except BeastError as exc:
        return f"{exc}: `beast register {relative} --model M --version V`"
    if naming.version is None or naming.line is None:
        return (
            "no model line and version in the file name (expected LINE-vN.json): "
            f"`beast register {relative} --model M --version V`"
        )
    taken = find_version(conn, naming.line, naming.version)
    if taken is not None:
        return (
            f"version {naming.version} of {naming.line} is already registered for another "
            f"file (sha256 {taken.sha256[:12]}…): rename it or `beast register {relative} "
            "--version V`"
        )
    return None


def check_file_name(relative: str) -> str:
    """A model file's path in models/, refused when it could not be stored or shown as is.

    The path is kept in the registry and printed by `beast models`, the log and the console:
    a newline in it forged log lines, an undecodable byte (a lone surrogate once decoded)
    could not be written to SQLite at all. Renaming the file is the way out.
    """
    why = text.problem(relative, limit=text.MAX_PATH_CHARS)
    if why is not None:
        raise text.TextRefused(f"file name: {why}; rename the file")
    return relative


@dataclass(frozen=True)
class Naming:
    line: str | None
    version: str | None


def naming_for(path: Path, *, version: str | None, model: str | None, lines: list[str]) -> Naming:
    """`--version`/`--model` win; else the file name; else the only line there is."""
    file_line, file_version = split_filename(path)
    line = model or file_line
    if line is None and len(lines) == 1:
        line = lines[0]
    chosen = version or file_version
    return Naming(
        check_name("model line", line) if line else None,
        check_name("version", chosen) if chosen else None,
    )


def record_rejection(
    conn: sqlite3.Connection, checked: artifacts.CheckedFile, sha: str, reason: str, actor: str
) -> None:
    existing = conn.execute("SELECT id, status FROM artifacts WHERE sha256 = ?", (sha,)).fetchone()
    if existing is not None and existing["status"] == "valid":
        return
    if existing is None:
        conn.execute(
            "INSERT INTO artifacts (sha256, path, size, format, status, reason, registered_at,"
            " registered_by) VALUES (?, ?, ?, ?, 'rejected', ?, ?, ?)",
            (sha, checked.relative, checked.size, checked.format, reason, utc_now(), actor),
        )
    else:
        conn.execute(
            "UPDATE artifacts SET path = ?, reason = ?, registered_at = ? WHERE id = ?",
            (checked.relative, reason, utc_now(), existing["id"]),
        )


def schema_mismatch(
    conn: sqlite3.Connection, line: str, n_features: int, names: tuple[str, ...] | None
) -> str | None:
    row = conn.execute(
        "SELECT n_features, feature_names FROM model_lines WHERE name = ?", (line,)
    ).fetchone()
    if row is None:
        return None
    if row["n_features"] != n_features:
        return f"it has {n_features} features but model line {line} has {row['n_features']}"
    line_names = tuple(json.loads(row["feature_names"])) if row["feature_names"] else None
    if line_names and names and line_names != names:
        diff = next(i for i, (a, b) in enumerate(zip(line_names, names, strict=True)) if a != b)
        return (
            f"its feature {diff} is {names[diff]!r} but model line {line} expects "
            f"{line_names[diff]!r} (names and order must match)"
        )
    return None


def store_valid(
    conn: sqlite3.Connection,
    checked: artifacts.CheckedFile,
    sha: str,
    validation: artifacts.Validation,
    *,
    naming: Naming,
    actor: str,
) -> tuple[int, VersionRef | None, bool]:
    """Insert or reuse the artifact, its line and its version name. Caller holds the txn."""
    assert validation.n_features is not None and naming.line is not None
    now = utc_now()
    names_json = json.dumps(list(validation.feature_names)) if validation.feature_names else None
    existing = conn.execute("SELECT * FROM artifacts WHERE sha256 = ?", (sha,)).fetchone()
    if existing is not None and existing["status"] == "valid":
        if existing["line"] != naming.line:
            raise Conflict(
                f"these bytes are already registered in model line {existing['line']}; "
                f"they cannot also belong to {naming.line}"
            )
        artifact_id = existing["id"]
        new = False
    else:
        mismatch = schema_mismatch(
            conn, naming.line, validation.n_features, validation.feature_names
        )
        if mismatch:
            raise ArtifactRejected(f"{checked.path.name}: {mismatch}")
        conn.execute(
            "INSERT OR IGNORE INTO model_lines (name, n_features, feature_names, created_at)"
            " VALUES (?, ?, ?, ?)",
            (naming.line, validation.n_features, names_json, now),
        )
        values = (
            checked.relative,
            checked.size,
            checked.format,
            naming.line,
            validation.n_features,
            names_json,
            validation.xgboost_version,
            now,
            actor,
        )
        if existing is None:
            artifact_id = conn.execute(
                "INSERT INTO artifacts (path, size, format, line, n_features, feature_names,"
                " xgboost_version, registered_at, registered_by, sha256, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'valid')",
                (*values, sha),
            ).lastrowid
        else:
            artifact_id = existing["id"]
            conn.execute(
                "UPDATE artifacts SET path = ?, size = ?, format = ?, line = ?, n_features = ?,"
                " feature_names = ?, xgboost_version = ?, registered_at = ?, registered_by = ?,"
                " status = 'valid', reason = NULL WHERE id = ?",
                (*values, artifact_id),
            )
        new = True
    assert artifact_id is not None
    ref = _ensure_version_name(conn, artifact_id, sha, naming=naming, actor=actor, now=now)
    return artifact_id, ref, new


def _ensure_version_name(
    conn: sqlite3.Connection, artifact_id: int, sha: str, *, naming: Naming, actor: str, now: str
) -> VersionRef | None:
    assert naming.line is not None
    if naming.version is None:
        return SqliteRegistry(conn).first_version_of(artifact_id)
    current = find_version(conn, naming.line, naming.version)
    if current is not None:
        if current.artifact_id != artifact_id:
            raise Conflict(
                f"version {naming.version} of {naming.line} is already registered for another "
                f"file (sha256 {current.sha256[:12]}…); choose another --version"
            )
        return current
    version_id = conn.execute(
        "INSERT INTO versions (line, name, artifact_id, kind, created_at, created_by)"
        " VALUES (?, ?, ?, 'version', ?, ?)",
        (naming.line, naming.version, artifact_id, now, actor),
    ).lastrowid
    assert version_id is not None
    return VersionRef(version_id, naming.line, naming.version, artifact_id, sha)


def add_alias(
    conn: sqlite3.Connection, line: str, alias: str, target: VersionRef, actor: str
) -> None:
    existing = find_version(conn, line, alias)
    if existing is not None:
        raise Conflict(f"{alias} already names a version of {line}")
    conn.execute(
        "INSERT INTO versions (line, name, artifact_id, kind, created_at, created_by)"
        " VALUES (?, ?, ?, 'alias', ?, ?)",
        (line, alias, target.artifact_id, utc_now(), actor),
    )


def artifact_path(conn: sqlite3.Connection, models_dir: Path, artifact_id: int) -> Path:
    return models_dir / SqliteRegistry(conn).artifact_file(artifact_id)


def require_intact(conn: sqlite3.Connection, models_dir: Path, ref: VersionRef) -> None:
    """Refuse to deploy a version whose artifact file is gone or no longer has its sha256.

    DESIGN.md §5 invariant 4: what is deployed must be what was validated and registered.
    """
    path = artifact_path(conn, models_dir, ref.artifact_id)
    if not path.is_file():
        raise BeastError(
            f"cannot deploy {ref.line}/{ref.name}: its artifact {path} is missing "
            "(put the file back, or register and deploy another version)"
        )
    if artifacts.sha256_of(path) != ref.sha256:
        raise BeastError(
            f"cannot deploy {ref.line}/{ref.name}: {path} no longer has its registered sha256 "
            f"{ref.sha256[:12]}… (the file was changed after it was validated)"
        )
