"""The registry repository: model lines, artifacts (by sha256) and their version names."""

from __future__ import annotations

from typing import Protocol

from engine.core.records import VersionRef


class RegistryRepo(Protocol):
    """Registered artifacts and versions of one transaction."""

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
