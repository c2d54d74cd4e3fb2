"""`beast doctor`: the invariants of DESIGN.md §5, checked against the state and the files.

The schema enforces what SQLite can; this checks the rest and re-checks the schema's work,
so a database edited by hand (or by a bug) is caught. Problems break an invariant (exit 1);
warnings are repairable drift (a stale history.json after a crash between commit and export).

The checks are pure over what the repositories read, so every backend is held to the same
invariants by the same code; the store's own integrity is the backend's (Store.integrity_check,
reported by engine.store.sqlite.integrity).
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.core.records import DoctorReport, Experiment, HistoryEntry, LineState, Snapshot
from engine.core.workspace import Workspace
from engine.registry import artifacts
from engine.store.base import Tx


def check(tx: Tx, workspace: Workspace, *, hash_files: bool = True) -> DoctorReport:
    """Every invariant over one snapshot: problems, and warnings (repairable drift)."""
    problems: list[str] = []
    warnings: list[str] = []
    states = {state.line: state for state in tx.deployments.states()}
    all_entries = tx.history.entries()
    by_line: dict[str, list[HistoryEntry]] = {}
    for entry in all_entries:
        by_line.setdefault(entry.line, []).append(entry)

    problems += _one_production(states, by_line)
    experiments = tx.deployments.experiments()
    problems += _tests(states, [t for t in experiments if t.status == "running"])
    problems += _rollouts(experiments)
    for line in sorted(set(states) | set(by_line)):
        problems += _history_replays(line, states.get(line), by_line.get(line, []))
    problems += _artifacts(tx, workspace.models_dir, states, hash_files)
    warnings += _export(workspace.history_export_path, tx.history.export_text(), all_entries)
    return DoctorReport(tuple(problems), tuple(warnings))


def _rollouts(experiments: list[Experiment]) -> list[str]:
    """A rollout goes on only with its running test, at its step's share (or the last step
    reached, once its test was promoted); an ended test's rollout ended with it."""
    out = []
    for test in experiments:
        rollout = test.rollout
        if rollout is None:
            continue
        going = rollout.state in ("running", "paused")
        if going != (test.status == "running"):
            out.append(
                f"invariant 2 broken: the rollout of {test.name} is {rollout.state} but the "
                f"test is {test.status}"
            )
        elif going and rollout.steps[rollout.step] != test.traffic_bp:
            out.append(
                f"invariant 2 broken: the rollout of {test.name} is at step {rollout.step + 1} "
                f"({rollout.steps[rollout.step]} bp) but its candidate has {test.traffic_bp} bp"
            )
    return out


def _one_production(
    states: dict[str, LineState], by_line: dict[str, list[HistoryEntry]]
) -> list[str]:
    out = []
    for line, state in states.items():
        bp = state.candidate_bp
        if state.candidate is None and bp != 0:
            out.append(f"invariant 1 broken: {line} has {bp} bp of traffic with no candidate")
        if state.candidate is not None and not 100 <= bp <= 9900:
            out.append(f"invariant 1 broken: {line} candidate traffic {bp} bp is outside 1–99%")
    for line in by_line:
        if line not in states:
            out.append(f"invariant 1 broken: {line} has deployment history but no production")
    return out


def _tests(states: dict[str, LineState], running: list[Experiment]) -> list[str]:
    """Names stand for ids here: a test's name is unique, a version's within its line."""
    out = []
    per_line: dict[str, int] = {}
    for test in running:
        per_line[test.line] = per_line.get(test.line, 0) + 1
        state = states.get(test.line)
        if (
            state is None
            or state.experiment != test.name
            or state.production.name != test.control
            or (state.candidate.name if state.candidate else None) != test.candidate
            or state.candidate_bp != test.traffic_bp
        ):
            out.append(
                f"invariant 2 broken: running test {test.name} does not match what "
                f"{test.line} serves (its arms must be the deployed versions)"
            )
    for line, count in per_line.items():
        if count > 1:
            out.append(f"invariant 2 broken: {count} running tests on {line}")
    for line, state in states.items():
        if state.experiment is not None and not any(t.name == state.experiment for t in running):
            out.append(
                f"invariant 2 broken: {line} serves a candidate for a test that is not running"
            )
    return out


def _history_replays(line: str, state: LineState | None, entries: list[HistoryEntry]) -> list[str]:
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
    actual = state.snapshot()
    if actual != current:
        out.append(
            f"invariant 3 broken: replaying history of {line} gives {current}, state is {actual}"
        )
    if entries and state.revision != entries[-1].id:
        out.append(
            f"invariant 3 broken: {line} is at revision {state.revision} but its last "
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
    tx: Tx, models_dir: Path, states: dict[str, LineState], hash_files: bool
) -> list[str]:
    out = []
    deployed = {v.id: v for s in states.values() for v in (s.production, s.candidate) if v}
    for version_id in sorted(deployed):
        ref = deployed[version_id]
        path = models_dir / tx.registry.artifact_file(ref.artifact_id)
        if not path.is_file():
            out.append(
                f"invariant 4 broken: {ref.line}/{ref.name} is deployed but {path} is missing"
            )
        elif hash_files and artifacts.sha256_of(path) != ref.sha256:
            out.append(
                f"invariant 4 broken: {ref.line}/{ref.name} is deployed but {path} no longer "
                f"has sha256 {ref.sha256[:12]}…"
            )
    out += [
        f"invariant 4 broken: {ref.line}/{ref.name} names a rejected artifact"
        for ref in tx.registry.versions_of_rejected()
    ]
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
