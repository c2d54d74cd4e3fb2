"""Frozen records that cross the engine's boundary (CLI, HTTP, console all read these)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["production", "candidate"]
ExperimentStatus = Literal["running", "promoted", "aborted"]
Ending = Literal["promoted on verdict", "forced", "aborted", "auto-pulled"]
Action = Literal[
    "deploy",
    "ab_start",
    "promote",
    "abort",
    "rollback",
    "shadow_start",
    "shadow_end",
    "rollout_step",
    "rollout_pause",
    "rollout_resume",
]

BASIS_POINTS = 10_000


def percent(bp: int) -> float:
    """Basis points as a percentage (store integers, show percents)."""
    return bp / 100


@dataclass(frozen=True)
class Artifact:
    id: int
    sha256: str
    path: str
    size: int
    format: str | None
    status: Literal["valid", "rejected"]
    reason: str | None
    line: str | None
    n_features: int | None
    feature_names: tuple[str, ...] | None
    xgboost_version: str | None
    registered_at: str
    registered_by: str
    versions: tuple[str, ...] = ()
    present: bool = True
    objective: str | None = None  # the XGBoost objective the file declares, if it does
    # Every file in models/ holding these bytes, `path` (the file registered) first: a
    # byte-identical copy is this artifact under another name, never another version.
    paths: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["version"] = self.versions[0] if self.versions else None
        out["feature_names"] = list(self.feature_names) if self.feature_names else None
        out["versions"] = list(self.versions)
        out["paths"] = list(self.paths or (self.path,))
        return out


@dataclass(frozen=True)
class VersionRef:
    id: int
    line: str
    name: str
    artifact_id: int
    sha256: str
    kind: Literal["version", "alias"] = "version"


@dataclass(frozen=True)
class Snapshot:
    """The deployment state of one line, as history records it (names, not ids)."""

    production: str | None = None
    candidate: str | None = None
    candidate_bp: int = 0
    experiment: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            production=data.get("production"),
            candidate=data.get("candidate"),
            candidate_bp=int(data.get("candidate_bp", 0)),
            experiment=data.get("experiment"),
        )


@dataclass(frozen=True)
class LineState:
    """What serves for one model line right now."""

    line: str
    production: VersionRef
    production_since: str
    production_by: str
    revision: int
    candidate: VersionRef | None = None
    candidate_bp: int = 0
    candidate_since: str | None = None
    candidate_by: str | None = None
    experiment: str | None = None

    def snapshot(self) -> Snapshot:
        return Snapshot(
            production=self.production.name,
            candidate=self.candidate.name if self.candidate else None,
            candidate_bp=self.candidate_bp,
            experiment=self.experiment,
        )


RolloutState = Literal["running", "paused", "completed", "rolled back", "aborted"]


@dataclass(frozen=True)
class Rollout:
    """A test's progressive rollout: the candidate's share steps up through `steps` (basis
    points, rising; reaching the last, 10,000, promotes), `step` is the index serving now."""

    steps: tuple[int, ...]
    step: int
    state: RolloutState
    step_since: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        """`steps` in percent, as `--rollout` takes them."""
        return {
            "steps": [percent(bp) for bp in self.steps],
            "step": self.step,
            "state": self.state,
            "step_since": self.step_since,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Shadow:
    """A version scored beside a line's production on `share_bp` of its requests, never
    served (`beast deploy … --shadow`): what it has scored and what it had to skip."""

    id: int
    line: str
    version: str
    version_id: int
    share_bp: int
    started_at: str
    started_by: str
    ended_at: str | None = None
    ended_by: str | None = None
    scored: int = 0  # requests it scored (a failed score counts: it is logged with its error)
    dropped: int = 0  # requests skipped: over [shadow] budget_ms, or its queue full

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "version": self.version,
            "share": percent(self.share_bp),
            "started_at": self.started_at,
            "started_by": self.started_by,
            "ended_at": self.ended_at,
            "ended_by": self.ended_by,
            "scored": self.scored,
            "dropped": self.dropped,
        }


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    line: str
    control: str
    candidate: str
    traffic_bp: int
    status: ExperimentStatus
    started_at: str
    started_by: str
    ended_at: str | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    forced: bool = False
    # The verdict it ended with ("candidate wins", …), None while running or when none was
    # read; how it ended: "promoted on verdict" | "forced" | "aborted" | "auto-pulled".
    verdict: str | None = None
    ending: Ending | None = None
    rollout: Rollout | None = None  # a progressive rollout's steps, None for a plain test

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["traffic"] = percent(self.traffic_bp)
        out["rollout"] = None if self.rollout is None else self.rollout.to_json()
        return out


def evidence_summary(evidence: Mapping[str, Any] | None) -> str:
    """A history row's evidence in one line for people ("" without any): `health critical;
    2 alerts; verdict not enough data n 514/47` (n: labelled predictions, control/candidate)."""
    if not evidence:
        return ""
    alerts = evidence.get("alerts") or []
    parts = [
        f"health {evidence.get('health', '?')}",
        f"{len(alerts)} alert{'' if len(alerts) == 1 else 's'}",
    ]
    test = evidence.get("test")
    if isinstance(test, Mapping):
        arms = test.get("arms") or {}
        n = "/".join(
            str((arms.get(arm) or {}).get("labelled", "?")) for arm in ("control", "candidate")
        )
        parts.append(f"verdict {test.get('verdict', '?')} n {n}")
    return "; ".join(parts)


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    line: str
    at: str
    actor: str
    action: Action
    version: str | None
    experiment: str | None
    from_state: Snapshot
    to_state: Snapshot
    undoes: tuple[int, ...] = ()
    note: str | None = None
    forced: bool = False
    # The figures the change was decided on (a JSON object: health, firing alerts, verdict,
    # drift by feature), None when nothing measured stood behind it.
    evidence: dict[str, Any] | None = None

    def evidence_summary(self) -> str:
        """The evidence in one line for people (`evidence_summary`)."""
        return evidence_summary(self.evidence)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["from_state"] = self.from_state.to_json()
        out["to_state"] = self.to_state.to_json()
        out["undoes"] = list(self.undoes)
        return out


@dataclass(frozen=True)
class Deployment:
    """One row of `beast status`: a version that takes traffic."""

    line: str
    version: str
    role: Role
    traffic_bp: int
    experiment: str | None
    since: str
    by: str
    sha256: str
    artifact_present: bool = True
    # Where its baseline came from ("reference", "training", "first_predictions"); None: none
    # yet (engine.monitoring.baselines).
    baseline: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["traffic"] = percent(self.traffic_bp)
        return out


@dataclass(frozen=True)
class Status:
    deployments: tuple[Deployment, ...]
    experiments: tuple[Experiment, ...]
    lines: tuple[str, ...]
    revisions: dict[str, int] = field(default_factory=dict)
    health: str = "no data"
    shadows: tuple[Shadow, ...] = ()  # the running shadows, one per line at most

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": list(self.lines),
            "deployments": [d.to_json() for d in self.deployments],
            "experiments": [e.to_json() for e in self.experiments],
            "revisions": dict(self.revisions),
            "health": self.health,
            "shadows": [s.to_json() for s in self.shadows],
        }


@dataclass(frozen=True)
class Change:
    """The result of a mutation: the history row it wrote and a sentence for humans."""

    entry: HistoryEntry | None
    message: str
    changed: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "message": self.message,
            "history": self.entry.to_json() if self.entry else None,
        }


@dataclass(frozen=True)
class Expect:
    """What the caller saw; a mutation is refused when the state moved on since."""

    production: str | None = None
    revision: int | None = None


@dataclass(frozen=True)
class Lineage:
    """Where a version comes from: its artifact and what its training sidecar says."""

    line: str
    version: str
    artifact: Artifact
    facts: tuple[tuple[str, str], ...] = ()  # sidecar keys and values (drift reference left out)


@dataclass(frozen=True)
class LineSchema:
    """The features a model line's artifacts must have: their count, and names when known."""

    line: str
    n_features: int
    feature_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DoctorReport:
    """What `beast doctor` found: problems break an invariant, warnings are repairable drift."""

    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "problems": list(self.problems), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class Alert:
    """One alert: firing while `resolved_at` is None, deduplicated per (line, version, metric)."""

    id: int
    line: str
    version: str
    metric: str
    severity: str  # "warning" | "critical"
    value: float
    threshold: float
    message: str
    first_seen: str
    last_seen: str
    resolved_at: str | None
    # Who saw it and when (`beast alerts ack ID`); an unacknowledged srm alert blocks promotion.
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    acknowledged_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": "firing" if self.resolved_at is None else "resolved"}


@dataclass(frozen=True)
class LoggedPrediction:
    """A logged prediction as feedback sees it; `batch` is (batch id, row) for a batch's row."""

    pid: str
    version_id: int
    experiment: str  # "" outside an A/B test
    at_ms: int
    score: float | None  # None: the prediction failed
    actual: float | None
    batch: tuple[int, int] | None = None


@dataclass(frozen=True)
class Baseline:
    """What "normal" is for an artifact: its drift reference (JSON) and validation figures.

    `metrics` holds the task's figures (engine.core.tasks.METRICS keys) beyond accuracy and
    MAE; `source` says where it all came from ("reference": a labelled file, "training": a
    lineage sidecar, "first_predictions": the version's own first predictions) and `detail`
    names it (the reference file and its rows).
    """

    reference: dict[str, Any] | None
    accuracy: float | None
    mae: float | None
    metrics: tuple[tuple[str, float], ...] = ()
    source: str = "training"
    detail: str | None = None

    def figures(self) -> dict[str, float]:
        """Every baseline metric by its key, accuracy and MAE included."""
        out = dict(self.metrics)
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        if self.mae is not None:
            out["mae"] = self.mae
        return out


@dataclass(frozen=True)
class FirstPredictionSource:
    """What building a reference from a version's first predictions needs to know."""

    artifact_id: int
    feature_names: tuple[str, ...] | None
    width: int


JOB_FINISHED = ("succeeded", "failed")


@dataclass(frozen=True)
class Job:
    """One retraining job as the CLI, HTTP API and console see it."""

    id: int
    line: str
    trigger: str
    status: str  # queued | running | succeeded | failed
    progress: float
    message: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    version: str | None
    deployed: bool
    reason: str | None
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status in JOB_FINISHED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobLease:
    """What a job's worker and a reaper need beyond `Job`: its process, lease and deadline.

    `lease_expires` and `deadline` are readings of CLOCK_MONOTONIC on the boot `boot_id`.
    """

    id: int
    line: str
    status: str
    version: str | None
    deploy: bool
    pid: int | None
    pgid: int | None
    boot_id: str
    lease_expires: float
    deadline: float | None
    timeout_s: float


@dataclass(frozen=True)
class ServedLine:
    """What the router loads for one deployed line (engine.store.routes)."""

    line: str
    production_id: int
    candidate_id: int | None
    candidate_bp: int
    experiment: str | None
    revision: int  # the line state's: a route whose revision did not move is kept as it is
    feature_names: tuple[str, ...] | None  # None: unnamed, f0 … f{n_features - 1}
    n_features: int
    # The line's running shadow (beast deploy --shadow): its id, version and share; 0: none.
    shadow_id: int = 0
    shadow_version_id: int = 0
    shadow_bp: int = 0
