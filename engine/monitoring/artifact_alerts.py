"""The `artifact` alert: a deployed version whose model file is gone or altered on disk.

Serving goes on from the model loaded in memory, but a restart could not load it again
(DESIGN.md §5 invariant 4), so the alert is critical. It has a life of its own beside the
metric alerts: it fires while the file is missing or its sha256 differs, and resolves when
the file is back as it was registered or the version no longer serves.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from engine.core.clock import utc_now
from engine.registry import artifacts
from engine.registry import catalog as registry

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


def problems(conn: sqlite3.Connection, models_dir: Path) -> dict[tuple[str, str], str]:
    """(line, version) -> what is wrong with the artifact of each version that serves."""
    out: dict[tuple[str, str], str] = {}
    rows = conn.execute("SELECT production_id, candidate_id FROM line_state").fetchall()
    for version_id in {v for row in rows for v in row if v is not None}:
        ref = registry.version_by_id(conn, version_id)
        path = registry.artifact_path(conn, models_dir, ref.artifact_id)
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


def sync(
    conn: sqlite3.Connection,
    models_dir: Path,
    found: dict[tuple[str, str], str] | None = None,
) -> None:
    """Fire, refresh and resolve the artifact alerts (inside the caller's write transaction),
    from `found` (`problems`, read before the write lock was taken) or from a fresh look."""
    now = utc_now()
    found = problems(conn, models_dir) if found is None else found
    firing = {
        (row[1], row[2]): row[0]
        for row in conn.execute(
            "SELECT id, line, version FROM alerts WHERE metric = ? AND resolved_at IS NULL",
            (METRIC,),
        )
    }
    for key, message in found.items():
        if key in firing:
            conn.execute(
                "UPDATE alerts SET message = ?, last_seen = ? WHERE id = ?",
                (message, now, firing[key]),
            )
        else:
            conn.execute(
                "INSERT INTO alerts (line, version, metric, severity, value, threshold, message,"
                " first_seen, last_seen) VALUES (?, ?, ?, 'critical', 1, 0, ?, ?, ?)",
                (*key, METRIC, message, now, now),
            )
    for key, alert_id in firing.items():
        if key not in found:
            conn.execute("UPDATE alerts SET resolved_at = ? WHERE id = ?", (now, alert_id))
