"""The `artifact` alert: a deployed version whose model file is gone or altered on disk.

Serving goes on from the model loaded in memory, but a restart could not load it again
(DESIGN.md §5 invariant 4), so the alert is critical. It has a life of its own beside the
metric alerts: it fires while the file is missing or its sha256 differs, and resolves when
the file is back as it was registered or the version no longer serves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine.core.clock import utc_now
from engine.core.records import VersionRef
from engine.registry import artifacts, fetch
from engine.store.base import Tx

METRIC = "artifact"
SETTLED_NS = 2_000_000_000  # a ctime this old will change if the file is written again
RECHECK_NS = 600_000_000_000  # and every ten minutes the bytes are read again regardless

# path -> (its stat when hashed, its sha256, when hashed): this process's verified files.
_verified: dict[Path, tuple[tuple[int, ...], str, int]] = {}


def _fingerprint(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256(path: Path) -> str:
    """The file's sha256, read again only when its stat changed (or ten minutes passed).

    Alerts are synced every evaluation inside a write transaction; reading a model of
    hundreds of MB each time would hold the write lock (and the prediction log) for seconds.
    Any write to a file moves its ctime, which no user call can set back, so the same inode,
    size, mtime and ctime mean the same bytes — once that ctime is old enough that a later
    write cannot land in the same clock tick.
    """
    now = time.time_ns()
    before = _fingerprint(path.stat())
    known = _verified.get(path)
    if known is not None and known[0] == before and now - known[2] < RECHECK_NS:
        return known[1]
    digest = artifacts.sha256_of(path)
    after = _fingerprint(path.stat())
    if after == before and now - after[4] >= SETTLED_NS:
        _verified[path] = (after, digest, now)
    else:
        _verified.pop(path, None)
    return digest


def problems(tx: Tx, models_dir: Path) -> dict[tuple[str, str], str]:
    """(line, version) -> what is wrong with the artifact of each version that serves."""
    out: dict[tuple[str, str], str] = {}
    serving: dict[int, VersionRef] = {}
    for line in tx.registry.line_names():
        state = tx.deployments.state(line)
        if state is not None:
            for ref in (state.production, state.candidate):
                if ref is not None:
                    serving[ref.id] = ref
    for ref in serving.values():
        relative = tx.registry.artifact_file(ref.artifact_id)
        path = fetch.local_copy(tx, models_dir, relative, ref.sha256)
        try:
            intact = sha256(path) == ref.sha256
        except FileNotFoundError:
            out[(ref.line, ref.name)] = (
                f"artifact {path.name} is missing: serving from memory, a restart cannot load it"
            )
            continue
        except OSError as exc:
            out[(ref.line, ref.name)] = f"artifact {path.name} is unreadable: {exc.strerror}"
            continue
        if not intact:
            out[(ref.line, ref.name)] = (
                f"artifact {path.name} no longer has its registered sha256 "
                f"{ref.sha256[:12]}…: serving the registered model from memory"
            )
    return out


def sync(tx: Tx, models_dir: Path, found: dict[tuple[str, str], str] | None = None) -> None:
    """Fire, refresh and resolve the artifact alerts (inside the caller's write transaction),
    from `found` (`problems`, read before the write lock was taken) or from a fresh look."""
    now = utc_now()
    found = problems(tx, models_dir) if found is None else found
    firing = {(a.line, a.version): a.id for a in tx.alerts.firing() if a.metric == METRIC}
    for key, message in found.items():
        if key in firing:
            tx.alerts.refresh(firing[key], message=message, at=now)
        else:
            line, version = key
            tx.alerts.fire(
                line=line,
                version=version,
                metric=METRIC,
                severity="critical",
                value=1,
                threshold=0,
                message=message,
                at=now,
            )
    for key, alert_id in firing.items():
        if key not in found:
            tx.alerts.resolve(alert_id, now)
