"""The `artifact` alert: a deployed version whose model file is gone or altered on disk.

Serving goes on from the model loaded in memory, but a restart could not load it again
(DESIGN.md §5 invariant 4), so the alert is critical. It has a life of its own beside the
metric alerts: it fires while the file is missing or its sha256 differs, and resolves when
the file is back as it was registered or the version no longer serves.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine import artifacts, registry
from engine.clock import utc_now

METRIC = "artifact"


def problems(conn: sqlite3.Connection, models_dir: Path) -> dict[tuple[str, str], str]:
    """(line, version) -> what is wrong with the artifact of each version that serves."""
    out: dict[tuple[str, str], str] = {}
    rows = conn.execute("SELECT production_id, candidate_id FROM line_state").fetchall()
    for version_id in {v for row in rows for v in row if v is not None}:
        ref = registry.version_by_id(conn, version_id)
        path = registry.artifact_path(conn, models_dir, ref.artifact_id)
        try:
            intact = artifacts.sha256_of(path) == ref.sha256
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


def sync(conn: sqlite3.Connection, models_dir: Path) -> None:
    """Fire, refresh and resolve the artifact alerts (inside the caller's write transaction)."""
    now = utc_now()
    found = problems(conn, models_dir)
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
