"""The model registry: artifacts by sha256, named by versions within a model line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from engine.core import text
from engine.core.clock import utc_now
from engine.core.config import RegistrySettings
from engine.core.errors import ArtifactRejected, BeastError, Conflict
from engine.core.naming import check_name, split_filename
from engine.core.records import Artifact, LineSchema, VersionRef
from engine.registry import artifacts, fetch
from engine.store.base import Tx


@dataclass(frozen=True)
class Registration:
    artifact: Artifact
    version: VersionRef | None
    new: bool
    reference: str | None = None  # the reference file kept as its baseline ("name (N rows)")


def located(artifact: Artifact, models_dir: Path, copies: tuple[str, ...] = ()) -> Artifact:
    """An artifact as stored (path relative to models/) placed in `models_dir`, file looked at;
    `copies`: other files in models/ with its bytes (relative), listed after it in `paths`."""
    path = models_dir / artifact.path
    return dataclasses.replace(
        artifact,
        path=str(path),
        present=path.is_file(),
        paths=(str(path), *(str(models_dir / c) for c in copies)),
    )


def list_artifacts(
    tx: Tx,
    models_dir: Path,
    only_id: int | None = None,
    copies: dict[str, tuple[str, ...]] | None = None,
) -> list[Artifact]:
    """Every artifact with its version names, oldest first (or just `only_id`); `copies`
    (sha256 → relative paths, from `scan`) adds the files that are byte-identical copies."""
    return [
        located(artifact, models_dir, (copies or {}).get(artifact.sha256, ()))
        for artifact in tx.registry.artifacts(only_id)
    ]


@dataclass(frozen=True)
class Scan:
    """What models/ holds beyond the registered files."""

    copies: dict[str, tuple[str, ...]]  # a valid artifact's sha256 → its copies (relative)
    unregistered: list[tuple[str, str | None]]  # (relative path, why it would be refused)


def scan(tx: Tx, models_dir: Path, settings: RegistrySettings) -> Scan:
    """Files in models/ with no registry row: the copies of valid artifacts, and the others.

    A byte-for-byte copy of a valid artifact is that artifact under another name (registration
    is by content), so it is not unregistered; only files whose size matches an artifact's
    are hashed.
    """
    stored = tx.registry.artifacts()
    known = {artifact.path for artifact in stored}
    valid_by_size: dict[int, set[str]] = {}
    for artifact in stored:
        if artifact.status == "valid":
            valid_by_size.setdefault(artifact.size, set()).add(artifact.sha256)
    copies: dict[str, list[str]] = {}
    found: list[tuple[str, str | None]] = []
    if not models_dir.is_dir():
        return Scan({}, found)
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
            digest = artifacts.sha256_of(resolved) if same_size else None
            if same_size and digest in same_size:
                copies.setdefault(str(digest), []).append(relative)
                continue
            found.append((relative, _naming_problem(tx, resolved, relative)))
        except (BeastError, OSError) as exc:
            found.append((relative, str(exc)))
    return Scan({sha: tuple(paths) for sha, paths in copies.items()}, found)


def _naming_problem(tx: Tx, path: Path, relative: str) -> str | None:
    """Why the watcher (or a plain `beast register`) cannot name this file, if it cannot."""
    try:
        check_file_name(relative)
    except BeastError as exc:
        return str(exc)
    try:
        naming = naming_for(path, version=None, model=None, lines=tx.registry.line_names())
    except BeastError as exc:
        return f"{exc}: `beast register {relative} --model M --version V`"
    if naming.version is None or naming.line is None:
        return (
            "no model line and version in the file name (expected LINE-vN.json): "
            f"`beast register {relative} --model M --version V`"
        )
    taken = tx.registry.find_version(naming.line, naming.version)
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


def naming_for(
    path: Path,
    *,
    version: str | None,
    model: str | None,
    lines: list[str],
    from_file: bool = True,
) -> Naming:
    """`--version`/`--model` win; else the file name; else the only line there is.

    `from_file=False`: the file name names no version (its bytes are registered already)."""
    file_line, file_version = split_filename(path)
    line = model or file_line
    if line is None and len(lines) == 1:
        line = lines[0]
    chosen = version or (file_version if from_file else None)
    return Naming(
        check_name("model line", line) if line else None,
        check_name("version", chosen) if chosen else None,
    )


def record_rejection(
    tx: Tx,
    checked: artifacts.CheckedFile,
    sha: str,
    reason: str,
    actor: str,
    *,
    objective: str | None = None,
) -> None:
    """Keep why these bytes were refused (a valid artifact of the same bytes stays valid)."""
    tx.registry.put_rejected(
        sha256=sha,
        path=checked.relative,
        size=checked.size,
        format=checked.format,
        reason=reason,
        at=utc_now(),
        actor=actor,
        objective=objective,
    )


def schema_mismatch(
    tx: Tx, line: str, n_features: int, names: tuple[str, ...] | None
) -> str | None:
    """Why an artifact with these features cannot join `line`, or None."""
    schema = tx.registry.line_schema(line)
    if schema is None:
        return None
    if schema.n_features != n_features:
        return f"it has {n_features} features but model line {line} has {schema.n_features}"
    line_names = schema.feature_names
    if line_names and names and line_names != names:
        diff = next(i for i, (a, b) in enumerate(zip(line_names, names, strict=True)) if a != b)
        return (
            f"its feature {diff} is {names[diff]!r} but model line {line} expects "
            f"{line_names[diff]!r} (names and order must match)"
        )
    return None


def store_valid(
    tx: Tx,
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
    existing = tx.registry.artifact_by_sha(sha)
    if existing is not None and existing.status == "valid":
        if existing.line != naming.line:
            raise Conflict(
                f"these bytes are already registered in model line {existing.line}; "
                f"they cannot also belong to {naming.line}"
            )
        artifact_id = existing.id
        new = False
    else:
        mismatch = schema_mismatch(tx, naming.line, validation.n_features, validation.feature_names)
        if mismatch:
            raise ArtifactRejected(f"{checked.path.name}: {mismatch}")
        tx.registry.add_line(
            LineSchema(naming.line, validation.n_features, validation.feature_names), at=now
        )
        artifact_id = tx.registry.put_valid(
            sha256=sha,
            path=checked.relative,
            size=checked.size,
            format=checked.format,
            line=naming.line,
            n_features=validation.n_features,
            feature_names=validation.feature_names,
            xgboost_version=validation.xgboost_version,
            at=now,
            actor=actor,
            objective=validation.objective,
        )
        new = True
    ref = _ensure_version_name(tx, artifact_id, naming=naming, actor=actor, now=now)
    return artifact_id, ref, new


def _ensure_version_name(
    tx: Tx, artifact_id: int, *, naming: Naming, actor: str, now: str
) -> VersionRef | None:
    assert naming.line is not None
    if naming.version is None:
        return tx.registry.first_version_of(artifact_id)
    current = tx.registry.find_version(naming.line, naming.version)
    if current is not None:
        if current.artifact_id != artifact_id:
            raise Conflict(
                f"version {naming.version} of {naming.line} is already registered for another "
                f"file (sha256 {current.sha256[:12]}…); choose another --version"
            )
        return current
    return tx.registry.add_version(
        naming.line, naming.version, artifact_id, kind="version", at=now, actor=actor
    )


def add_alias(tx: Tx, line: str, alias: str, target: VersionRef, actor: str) -> None:
    """Name `target`'s artifact `alias` too (refused when the name is taken)."""
    if tx.registry.find_version(line, alias) is not None:
        raise Conflict(f"{alias} already names a version of {line}")
    tx.registry.add_version(
        line, alias, target.artifact_id, kind="alias", at=utc_now(), actor=actor
    )


def require_intact(tx: Tx, models_dir: Path, ref: VersionRef) -> None:
    """Refuse to deploy a version whose artifact file is gone or no longer has its sha256.

    DESIGN.md §5 invariant 4: what is deployed must be what was validated and registered.
    """
    relative = tx.registry.artifact_file(ref.artifact_id)
    path = models_dir / relative
    if not path.exists() and fetch.kept_elsewhere(tx, models_dir, relative, ref.sha256):
        return  # registered on another replica: every replica fetches the kept bytes
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
