"""The registry repository: model lines, artifacts (by sha256) and their version names."""

from __future__ import annotations

from typing import Literal, Protocol

from engine.core.records import Artifact, LineSchema, VersionRef


class RegistryRepo(Protocol):
    """Registered artifacts and versions of one transaction.

    Artifacts come back as stored: `path` relative to the workspace's models/ and `present`
    left True (engine.registry.catalog.located places them and looks at the file).
    """

    def line_names(self) -> list[str]:
        """Every model line, by name."""
        ...

    def find_version(self, line: str, name: str) -> VersionRef | None:
        """Version `name` of `line` (a version or an alias), or None."""
        ...

    def get_version(self, line: str, name: str) -> VersionRef:
        """Version `name` of `line`, or NotFound naming the versions registered."""
        ...

    def version_by_id(self, version_id: int) -> VersionRef:
        """The version with this id (ids come from the store: it exists)."""
        ...

    def first_version_of(self, artifact_id: int) -> VersionRef | None:
        """The oldest version that names this artifact, or None."""
        ...

    def artifact_file(self, artifact_id: int) -> str:
        """The artifact's file name, relative to the workspace's models/."""
        ...

    def artifacts(self, only_id: int | None = None) -> list[Artifact]:
        """Every artifact, valid or rejected, with its version names, oldest first (or one)."""
        ...

    def artifact_by_sha(self, sha256: str) -> Artifact | None:
        """The artifact of these bytes (valid or rejected), with its version names, or None."""
        ...

    def versions_of_rejected(self) -> list[VersionRef]:
        """Versions naming a rejected artifact (the schema refuses them; doctor re-checks)."""
        ...

    def line_schema(self, line: str) -> LineSchema | None:
        """The features every artifact of `line` must have, or None before the line exists."""
        ...

    def add_line(self, schema: LineSchema, *, at: str) -> None:
        """Create the model line with its feature schema, unless it exists already."""
        ...

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
        """Record these bytes as a valid artifact of `line` (new, or rejected before); its id.

        `objective`: the XGBoost objective the file declares (None when it does not)."""
        ...

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
        """Record these bytes as rejected and why, unless they are a valid artifact already."""
        ...

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
        """Name an artifact in `line` (a version, or an alias such as ab-winner-T)."""
        ...
