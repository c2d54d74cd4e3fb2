"""The registry service: register a model file by its bytes, and report what models/ holds.

Registration checks the file cheaply, validates it in a child process (outside any
transaction: a validation takes seconds), then stores it — or why it was rejected — in one
write transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core import tasks
from engine.core.config import LineSettings, RegistrySettings
from engine.core.errors import ArtifactRejected, BeastError
from engine.core.records import Artifact, Lineage, VersionRef
from engine.registry import artifacts, catalog, compiled
from engine.store.base import Store, Tx

if TYPE_CHECKING:  # pandas and XGBoost: loaded only where a reference file is given
    from engine.monitoring.reference_file import ReferenceBaseline


@dataclass(frozen=True)
class ModelsReport:
    artifacts: tuple[Artifact, ...]
    unregistered: tuple[tuple[str, str | None], ...]
    serving: dict[str, str]  # version name -> role
    # A valid artifact's sha256 -> which scorer its single rows use and why
    # ("compiled" | "gtil" | "xgboost": engine.registry.compiled).
    scorers: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Registry:
    """The model files of one workspace's models/, registered in a store as `actor`.

    The store and the settings are asked for when first needed: a file refused by the cheap
    checks is refused before the workspace's config and database are opened.
    """

    open_store: Callable[[], Store]
    models_dir: Path
    get_settings: Callable[[], RegistrySettings]
    actor: str
    get_line: Callable[[str], LineSettings]  # a line's contract (config.toml [lines.NAME])

    def register(
        self,
        path: str | Path,
        *,
        version: str | None = None,
        model: str | None = None,
        validator: artifacts.Validator | None = None,
        reference: str | Path | None = None,
    ) -> catalog.Registration:
        """Validate a model file in models/ (in a child process) and register it by sha256.

        `validator` replaces the cold child (the daemon's watcher keeps a warm one).
        `reference`: a labelled CSV or Parquet file (engine.monitoring.reference_file), scored
        by the model and kept as its baseline in the registration's transaction; a file that
        cannot serve refuses the registration, and nothing is stored.
        """
        resolved = artifacts.resolve_in_models(path, self.models_dir)
        settings = self.get_settings()
        checked = artifacts.check_file(resolved, self.models_dir, settings.max_artifact_bytes)
        catalog.check_file_name(checked.relative)
        sha = artifacts.sha256_of(resolved)
        store = self.open_store()
        with store.read() as tx:
            lines = tx.registry.line_names()
            known = tx.registry.artifact_by_sha(sha)
            if known is not None and known.status != "valid":
                known = None
            keep = tx.artifact_bytes.keeps and not tx.artifact_bytes.has(sha)
        naming = catalog.naming_for(
            resolved,
            # Known bytes under another file name are that artifact, not a new version: only
            # an explicit --version adds a name to it.
            version=version,
            model=model or (known.line if known else None),
            lines=lines,
            from_file=known is None,
        )
        line = _named_line(naming, known, resolved)
        validation = self._validation(known, checked, sha, validator)
        reason = validation.reason
        if validation.ok and known is None:
            reason = tasks.objective_refusal(validation.objective, self.get_line(line).task)
        built = None
        if reference is not None and reason is None:
            built = _reference_baseline(reference, resolved, sha, validation, self.get_line(line))
        # Read before the write lock is taken (a model may be hundreds of MB).
        data = artifacts.validated_bytes(resolved, sha) if keep and reason is None else None
        with store.write() as tx:
            if reason is None and known is None:
                assert validation.n_features is not None
                reason = catalog.schema_mismatch(
                    tx, line, validation.n_features, validation.feature_names
                )
            if reason is not None:
                catalog.record_rejection(
                    tx, checked, sha, reason, self.actor, objective=validation.objective
                )
                outcome = None
            else:
                outcome = catalog.store_valid(
                    tx, checked, sha, validation, naming=naming, actor=self.actor
                )
                if data is not None:  # where every replica fetches it (engine.registry.fetch)
                    tx.artifact_bytes.put(sha, data)
                if outcome[2]:  # new: keep what training said normal looks like, if it did
                    _store_sidecar_baseline(tx, resolved, outcome[0], validation)
                if built is not None:  # given by the user: it outranks the sidecar
                    _store_reference(tx, outcome[0], built, line, outcome[1])
        if outcome is None:
            raise ArtifactRejected(f"{resolved.name} rejected: {reason}")
        artifact_id, ref, new = outcome
        with store.read() as tx:
            (artifact,) = catalog.list_artifacts(tx, self.models_dir, only_id=artifact_id)
        return catalog.Registration(artifact, ref, new, built.detail if built else None)

    def _validation(
        self,
        known: Artifact | None,
        checked: artifacts.CheckedFile,
        sha: str,
        validator: artifacts.Validator | None,
    ) -> artifacts.Validation:
        """The registered verdict on known bytes, else the validator child's."""
        settings = self.get_settings()
        if known is not None:
            return artifacts.Validation(
                True,
                n_features=known.n_features,
                feature_names=known.feature_names,
                xgboost_version=known.xgboost_version,
                objective=known.objective,
            )
        return (validator or artifacts.validate_in_child)(
            checked.path,
            checked.format,
            settings.validation_timeout_s,
            expected_sha256=sha,
            # Compiled by the child after its verdict: serving waits for nothing.
            compile_into=compiled.cache_dir(self.models_dir) if settings.compiled_trees else None,
        )

    def reference_writer(
        self, ref: VersionRef, reference: str | Path
    ) -> tuple[str, Callable[[Tx], None]]:
        """Score a reference file with a registered version's model now: its name and rows,
        and what stores it as the version's baseline inside a later write transaction (the
        deploy's)."""
        with self.open_store().read() as tx:
            (artifact,) = catalog.list_artifacts(tx, self.models_dir, only_id=ref.artifact_id)
        assert artifact.n_features is not None  # a version names a valid artifact
        validation = artifacts.Validation(
            True, n_features=artifact.n_features, feature_names=artifact.feature_names
        )
        built = _reference_baseline(
            reference, Path(artifact.path), ref.sha256, validation, self.get_line(ref.line)
        )
        return built.detail, lambda tx: _store_reference(tx, ref.artifact_id, built, ref.line, ref)

    def models(self) -> ModelsReport:
        """Every artifact (with the paths of its byte-identical copies), the files in models/ not
        registered, and what serves."""
        with self.open_store().read() as tx:
            scanned = catalog.scan(tx, self.models_dir, self.get_settings())
            found = catalog.list_artifacts(tx, self.models_dir, copies=scanned.copies)
            loose = scanned.unregistered
            serving: dict[str, str] = {}
            for state in tx.deployments.states():
                serving[f"{state.line}/{state.production.name}"] = "production"
                if state.candidate is not None:
                    serving[f"{state.line}/{state.candidate.name}"] = "candidate"
        cache = compiled.cache_dir(self.models_dir)
        off = ("xgboost", "compiled trees are off ([registry] compiled_trees)")
        on = self.get_settings().compiled_trees
        scorers = {
            a.sha256: compiled.status(cache, a.sha256) if on else off
            for a in found
            if a.status == "valid"
        }
        return ModelsReport(tuple(found), tuple(loose), serving, scorers)

    def lineage(self, line: str, version: str) -> Lineage:
        """A version's artifact and the facts of its `<model>.lineage` sidecar, if it has one."""
        with self.open_store().read() as tx:
            ref = tx.registry.get_version(line, version)
            (artifact,) = catalog.list_artifacts(tx, self.models_dir, only_id=ref.artifact_id)
        return Lineage(line, version, artifact, _sidecar_facts(Path(artifact.path)))


def _named_line(naming: catalog.Naming, known: Artifact | None, resolved: Path) -> str:
    """The line a file is registered in; refused when neither it nor its version is named."""
    if naming.line is None:
        raise BeastError(f"cannot tell the model line from {resolved.name}: pass --model NAME")
    if naming.version is None and not (known and known.versions):
        raise BeastError(
            f"cannot derive a version from {resolved.name} (expected NAME-vX.json): "
            "pass --version V"
        )
    return naming.line


def _reference_baseline(
    reference: str | Path,
    model: Path,
    sha: str,
    validation: artifacts.Validation,
    line: LineSettings,
) -> ReferenceBaseline:
    from engine.monitoring import reference_file  # pandas, numpy, XGBoost: only with a file

    assert validation.n_features is not None
    names = validation.feature_names or tuple(f"f{i}" for i in range(validation.n_features))
    return reference_file.build(reference, model=model, sha256=sha, features=names, line=line)


def _store_reference(
    tx: Tx, artifact_id: int, built: ReferenceBaseline, line: str, ref: VersionRef | None
) -> None:
    from engine.monitoring import reference_file  # loaded already: the file was read

    label = f"{line}/{ref.name}" if ref is not None else line
    reference_file.store(tx, artifact_id, built, label=label)


def _store_sidecar_baseline(
    tx: Tx, model: Path, artifact_id: int, validation: artifacts.Validation
) -> None:
    """Store the drift reference and validation figures of a `<model>.lineage` sidecar."""
    from engine.monitoring import baselines  # numpy: only when a sidecar is there to read

    if not baselines.sidecar_path(model).is_file():
        return
    reference, metrics = baselines.read_sidecar(model, validation.feature_names)
    if reference is not None or metrics:
        baselines.store(tx, artifact_id, "training", reference=reference, metrics=metrics)


def _sidecar_facts(model: Path) -> tuple[tuple[str, str], ...]:
    """The sidecar's scalar facts, flattened one level; the bulky drift reference is skipped."""
    from engine.monitoring import baselines  # numpy: only for a lineage shown

    try:
        doc = json.loads(baselines.sidecar_path(model).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    if not isinstance(doc, dict):
        return ()
    facts: list[tuple[str, str]] = []
    for key, value in doc.items():
        if key == "reference":
            continue
        items = value.items() if isinstance(value, dict) else [("", value)]
        facts.extend((f"{key}.{sub}" if sub else key, str(v)) for sub, v in items)
    return tuple(facts)
