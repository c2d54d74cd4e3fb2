"""`beast doctor`: the invariants of DESIGN.md §5, checked against the database and files.

The schema enforces what SQLite can; this checks the rest and re-checks the schema's work,
so a database edited by hand (or by a bug) is caught. Problems break an invariant (exit 1);
warnings are repairable drift (a stale history.json after a crash between commit and export).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from engine.core.records import HistoryEntry, Snapshot
from engine.core.workspace import WAY_BACK, Workspace
from engine.registry import artifacts
from engine.registry import catalog as registry
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.tx import SqliteTx


@dataclass(frozen=True)
class DoctorReport:
    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "problems": list(self.problems), "warnings": list(self.warnings)}


def integrity_report(source: SqliteStore | Path) -> DoctorReport | None:
    """A damaged database file as doctor's problems (what SQLite found), or None if whole.

    A path is opened as a plain file, not as its workspace's store: the workspace refused it
    already (engine.core.workspace), and the question now is only whether the file is damaged.
    """
    if not isinstance(source, SqliteStore) and _size(source) < 512:  # SQLite's smallest page
        return None  # nothing to inspect, and opening it would create a database
    store = (
        source if isinstance(source, SqliteStore) else SqliteStore(source, check_workspace=False)
    )
    try:
        found = store.integrity_check()
    finally:
        if store is not source:
            store.close()
    if not found:
        return None
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    summary = (
        f"database integrity: {store.path} is damaged (PRAGMA integrity_check: {found[0]}"
        f"{more}); {WAY_BACK}"
    )
    return DoctorReport((summary, *(f"database integrity: {line}" for line in found)), ())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def check(
    conn: sqlite3.Connection, workspace: Workspace, *, hash_files: bool = True
) -> DoctorReport:
    problems: list[str] = []
    warnings: list[str] = []
    states = {row["line"]: row for row in conn.execute("SELECT * FROM line_state")}
    all_entries = SqliteTx(conn).history.entries()
    by_line: dict[str, list[HistoryEntry]] = {}
    for entry in all_entries:
        by_line.setdefault(entry.line, []).append(entry)

    problems += _one_production(conn, states, by_line)
    problems += _tests(conn, states)
    for line in sorted(set(states) | set(by_line)):
        problems += _history_replays(conn, line, states.get(line), by_line.get(line, []))
    problems += _artifacts(conn, workspace.models_dir, states, hash_files)
    warnings += _export(
        workspace.history_export_path, SqliteTx(conn).history.export_text(), all_entries
    )
    return DoctorReport(tuple(problems), tuple(warnings))


def _one_production(
    conn: sqlite3.Connection, states: dict[str, sqlite3.Row], by_line: dict[str, list[HistoryEntry]]
) -> list[str]:
    out = []
    for line, row in states.items():
        bp = row["candidate_bp"]
        if row["candidate_id"] is None and bp != 0:
            out.append(f"invariant 1 broken: {line} has {bp} bp of traffic with no candidate")
        if row["candidate_id"] is not None and not 100 <= bp <= 9900:
            out.append(f"invariant 1 broken: {line} candidate traffic {bp} bp is outside 1–99%")
    for line in by_line:
        if line not in states:
            out.append(f"invariant 1 broken: {line} has deployment history but no production")
    return out


def _tests(conn: sqlite3.Connection, states: dict[str, sqlite3.Row]) -> list[str]:
    out = []
    running = conn.execute(
        "SELECT id, name, line, control_id, candidate_id, traffic_bp FROM experiments"
        " WHERE status = 'running' ORDER BY id"
    ).fetchall()
    per_line: dict[str, int] = {}
    for test in running:
        per_line[test["line"]] = per_line.get(test["line"], 0) + 1
        state = states.get(test["line"])
        if (
            state is None
            or state["experiment_id"] != test["id"]
            or state["production_id"] != test["control_id"]
            or state["candidate_id"] != test["candidate_id"]
            or state["candidate_bp"] != test["traffic_bp"]
        ):
            out.append(
                f"invariant 2 broken: running test {test['name']} does not match what "
                f"{test['line']} serves (its arms must be the deployed versions)"
            )
    for line, count in per_line.items():
        if count > 1:
            out.append(f"invariant 2 broken: {count} running tests on {line}")
    for line, state in states.items():
        if state["experiment_id"] is not None and not any(
            t["id"] == state["experiment_id"] for t in running
        ):
            out.append(
                f"invariant 2 broken: {line} serves a candidate for a test that is not running"
            )
    return out


def _names(conn: sqlite3.Connection, row: sqlite3.Row) -> Snapshot:
    def name(version_id: int | None) -> str | None:
        if version_id is None:
            return None
        return registry.version_by_id(conn, version_id).name

    experiment = None
    if row["experiment_id"] is not None:
        experiment = conn.execute(
            "SELECT name FROM experiments WHERE id = ?", (row["experiment_id"],)
        ).fetchone()[0]
    return Snapshot(
        name(row["production_id"]), name(row["candidate_id"]), row["candidate_bp"], experiment
    )


def _history_replays(
    conn: sqlite3.Connection, line: str, state: sqlite3.Row | None, entries: list[HistoryEntry]
) -> list[str]:
    """Replaying the rows must reproduce the current state, each row following the last."""
    out = []
    current = Snapshot()
    for entry in entries:
        if entry.from_state != current:
            out.append(
                f"invariant 3 broken: history #{entry.id} ({entry.action}) starts from "
                f"{entry.from_state} but the state before it was {current}"
            )
        shape = _shape_problem(entry)
        if shape:
            out.append(f"invariant 3 broken: history #{entry.id} ({entry.action}) {shape}")
        current = entry.to_state
    if state is None:
        return out
    actual = _names(conn, state)
    if actual != current:
        out.append(
            f"invariant 3 broken: replaying history of {line} gives {current}, state is {actual}"
        )
    if entries and state["revision"] != entries[-1].id:
        out.append(
            f"invariant 3 broken: {line} is at revision {state['revision']} but its last "
            f"history row is #{entries[-1].id}"
        )
    return out


def _shape_problem(entry: HistoryEntry) -> str | None:
    before, after = entry.from_state, entry.to_state
    if after.production is None:
        return "leaves no production"
    if entry.action == "deploy" and (after.candidate or before.experiment):
        return "replaced production during a test or left a candidate"
    if entry.action == "ab_start" and (
        after.production != before.production or after.candidate is None or before.candidate
    ):
        return "did not add a candidate to the same production"
    if entry.action == "promote" and (after.production != before.candidate or after.candidate):
        return "did not make the candidate production"
    if entry.action in ("abort", "rollback") and after.candidate:
        return "left a candidate in place"
    if entry.action == "abort" and after.production != before.production:
        return "changed production"
    return None


def _artifacts(
    conn: sqlite3.Connection, models_dir: Path, states: dict[str, sqlite3.Row], hash_files: bool
) -> list[str]:
    out = []
    deployed: set[int] = set()
    for row in states.values():
        deployed.add(row["production_id"])
        if row["candidate_id"] is not None:
            deployed.add(row["candidate_id"])
    for version_id in sorted(deployed):
        ref = registry.version_by_id(conn, version_id)
        path = registry.artifact_path(conn, models_dir, ref.artifact_id)
        if not path.is_file():
            out.append(
                f"invariant 4 broken: {ref.line}/{ref.name} is deployed but {path} is missing"
            )
        elif hash_files and artifacts.sha256_of(path) != ref.sha256:
            out.append(
                f"invariant 4 broken: {ref.line}/{ref.name} is deployed but {path} no longer "
                f"has sha256 {ref.sha256[:12]}…"
            )
    bad = conn.execute(
        "SELECT v.line, v.name FROM versions v JOIN artifacts a ON a.id = v.artifact_id"
        " WHERE a.status != 'valid'"
    ).fetchall()
    out += [f"invariant 4 broken: {r['line']}/{r['name']} names a rejected artifact" for r in bad]
    return out


def _export(path: Path, expected: str, entries: list[HistoryEntry]) -> list[str]:
    try:
        on_disk = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{path} is missing (run `beast doctor --repair` to rewrite it)"] if entries else []
    except (OSError, ValueError) as exc:
        return [f"{path} is unreadable ({exc}); run `beast doctor --repair`"]
    if on_disk != json.loads(expected):
        return [f"{path} is behind the history table (run `beast doctor --repair`)"]
    return []
