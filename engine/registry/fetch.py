"""Where this host reads a registered model's bytes: models/, else its verified local copy of
the bytes the store keeps (PostgreSQL: `artifact_bytes`, written when it was registered).

A replica serves versions registered on another host, whose file never reached its models/:
the bytes are fetched once, checked against the registered sha256, and kept under
`<workspace>/.artifact-cache/` (atomically: a crash leaves no half-written copy that could
pass for the artifact). A copy is hashed again each time it is used (a load: rare), and a
damaged one is fetched anew; bytes in the store that do not hash to the artifact's sha256 are
never kept, so the version is then refused as missing, never served.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from engine.registry import artifacts
from engine.store.base import Tx

CACHE_DIR = ".artifact-cache"


def cache_path(models_dir: Path, relative: str, sha256: str) -> Path:
    """The local copy of an artifact's bytes (named by sha256, with the file's extension)."""
    return models_dir.parent / CACHE_DIR / f"{sha256}{Path(relative).suffix.lower()}"


def local_copy(tx: Tx, models_dir: Path, relative: str, sha256: str) -> Path:
    """The file to load an artifact from: its file in models/ when there is one (its bytes
    are the loader's to check), else the local copy, fetched from the store when missing.

    The path in models/ when the store keeps no bytes either (the caller reports it missing).
    """
    path = models_dir / relative
    if path.exists():
        return path
    cached = cache_path(models_dir, relative, sha256)
    if cached.is_file():
        if artifacts.sha256_of(cached) == sha256:
            return cached
        cached.unlink()  # damaged since it was fetched: fetched again below
    if not tx.artifact_bytes.keeps:
        return path
    data = tx.artifact_bytes.get(sha256)
    if data is None or hashlib.sha256(data).hexdigest() != sha256:
        return path  # nothing to fetch, or bytes that are not the artifact's: never kept
    _write_atomically(cached, data)
    return cached


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".fetch-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def kept_elsewhere(tx: Tx, models_dir: Path, relative: str, sha256: str) -> bool:
    """Whether a version whose file is not in this host's models/ can still be loaded here:
    its verified copy is local, or the store keeps its bytes for any replica to fetch."""
    return cache_path(models_dir, relative, sha256).is_file() or (
        tx.artifact_bytes.keeps and tx.artifact_bytes.has(sha256)
    )
