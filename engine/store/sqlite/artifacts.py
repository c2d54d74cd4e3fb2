"""Artifact bytes on SQLite: none kept. One workspace, one engine: its models/ holds the files
the registry validated (by sha256), and no other replica needs to fetch them."""

from __future__ import annotations


class SqliteArtifactBytes:
    """engine.store.replicas.ArtifactBytesRepo on SQLite: the files in models/ are the bytes."""

    keeps = False

    def put(self, sha256: str, data: bytes) -> None:
        """Nothing to keep: the file stays in models/."""

    def get(self, sha256: str) -> bytes | None:
        return None

    def has(self, sha256: str) -> bool:
        return False
