"""One poll of the engine: everything the panes draw, read in a worker thread, frozen.

The panes never ask the engine themselves; they draw the latest `ConsoleData`. Parts the
engine cannot answer (no jobs API yet, no daemon probe) are None and drawn "unavailable".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from console.gateway import Gateway
from engine import (
    BeastError,
    Deployment,
    Expect,
    HistoryEntry,
    Job,
    ModelsReport,
    MonitorReport,
    Status,
    VersionReport,
)


@dataclass(frozen=True)
class VersionRow:
    """A row of the Deployments pane: a serving version, or a registered one that does not."""

    line: str
    version: str
    role: str  # production | candidate | registered
    traffic_bp: int
    since: str | None
    experiment: str | None
    # The artifact's other names: aliases (ab-winner-T) and byte-identical copies.
    aliases: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.line}/{self.version}"

    @property
    def label(self) -> str:
        """`v3.0 (best, ab-winner-x)`: the version and its artifact's other names."""
        return self.version + (f" ({', '.join(self.aliases)})" if self.aliases else "")


@dataclass(frozen=True)
class ConsoleData:
    fetched_at: float
    status: Status
    report: MonitorReport | None
    versions: tuple[VersionRow, ...]
    history: tuple[HistoryEntry, ...]
    rollback_to: dict[str, str] = field(default_factory=dict)  # line -> target, or why not
    jobs: tuple[Job, ...] | None = None  # None: the jobs could not be read
    engine_pid: int | str | None = "unknown"  # "unknown": the probe failed
    problems: tuple[str, ...] = ()

    def version_report(self, key: str) -> VersionReport | None:
        if self.report is None:
            return None
        return next((v for v in self.report.versions if f"{v.line}/{v.version}" == key), None)

    def row(self, key: str) -> VersionRow | None:
        return next((v for v in self.versions if v.key == key), None)

    def production(self, line: str) -> Deployment | None:
        return next(
            (d for d in self.status.deployments if d.line == line and d.role == "production"),
            None,
        )

    def expect(self, line: str) -> Expect:
        """The state of a line as shown: what a mutation must still find to go ahead."""
        prod = self.production(line)
        return Expect(
            production=prod.version if prod else None,
            revision=self.status.revisions.get(line, 0),
        )

    @property
    def health(self) -> str:
        return self.report.health if self.report is not None else self.status.health


def version_rows(status: Status, models: ModelsReport | None) -> tuple[VersionRow, ...]:
    """One row per artifact: serving versions first (production, candidate), then the
    registered rest. An artifact's other names (aliases, byte-identical copies) go with its
    row, keyed by the name that serves, or its first name."""
    artifacts = [a for a in (models.artifacts if models else ()) if a.status == "valid" and a.line]

    def others(line: str, name: str) -> tuple[str, ...]:
        found = next((a for a in artifacts if a.line == line and name in a.versions), None)
        return tuple(v for v in found.versions if v != name) if found else ()

    rows = [
        VersionRow(
            d.line,
            d.version,
            d.role,
            d.traffic_bp,
            d.since,
            d.experiment,
            others(d.line, d.version),
        )
        for d in status.deployments
    ]
    serving = {r.key for r in rows}
    for artifact in artifacts:
        line = artifact.line
        assert line is not None
        if not artifact.versions or any(f"{line}/{v}" in serving for v in artifact.versions):
            continue
        first, *rest = artifact.versions
        rows.append(
            VersionRow(line, first, "registered", 0, artifact.registered_at, None, tuple(rest))
        )
    return tuple(rows)


def fetch(gateway: Gateway, now: float, *, window: str = "1h") -> ConsoleData:
    """Read everything once. A part that fails is reported, the rest still drawn."""
    problems: list[str] = []
    status = gateway.status()
    report: MonitorReport | None = None
    try:
        report = gateway.report(window)
    except (BeastError, ValueError) as exc:
        problems.append(f"monitoring: {exc}")
    models = gateway.models()
    rollback_to: dict[str, str] = {}
    for line in status.lines:
        try:
            rollback_to[line] = gateway.rollback_target(line)
        except BeastError as exc:
            rollback_to[line] = f"refused: {exc}"
    jobs: tuple[Job, ...] | None = None
    try:
        jobs = tuple(gateway.jobs())
    except BeastError as exc:
        problems.append(f"jobs: {exc}")
    pid: int | str | None = "unknown"
    try:
        pid = gateway.engine_pid()
    except (BeastError, OSError) as exc:
        problems.append(f"engine probe: {exc}")
    return ConsoleData(
        fetched_at=now,
        status=status,
        report=report,
        versions=version_rows(status, models),
        history=tuple(gateway.history()),
        rollback_to=rollback_to,
        jobs=jobs,
        engine_pid=pid,
        problems=tuple(problems),
    )
