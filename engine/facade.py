"""`Engine`: the one facade the CLI, the HTTP API, the daemon and the console call.

Every mutation is one `BEGIN IMMEDIATE` transaction that reads the state, applies a pure rule
from `deployments`, and writes the new state together with its history row. The history
export (`deployments/history.json`) is rewritten after the commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core import text
from engine.core.clock import utc_now
from engine.core.config import Config, load_config
from engine.core.errors import ArtifactRejected, BeastError, NotFound, StateBusy, StateChanged
from engine.core.identity import current_actor
from engine.core.naming import check_name, winner_alias
from engine.core.records import (
    BASIS_POINTS,
    Artifact,
    Change,
    Deployment,
    Expect,
    Experiment,
    HistoryEntry,
    Lineage,
    LineState,
    Snapshot,
    Status,
    VersionRef,
)
from engine.core.workspace import Workspace, WorkspaceLost
from engine.deploy import history
from engine.deploy import rules as deployments
from engine.registry import artifacts
from engine.registry import catalog as registry
from engine.store import invariants
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.deployments import SqliteDeployments
from engine.store.sqlite.tx import SqliteTx

if TYPE_CHECKING:
    from engine.monitoring import feedback as labels
    from engine.monitoring.report import MonitorReport
    from engine.retrain.jobs import Job
    from engine.retrain.triggers import TriggerReport


@dataclass(frozen=True)
class ModelsReport:
    artifacts: tuple[Artifact, ...]
    unregistered: tuple[tuple[str, str | None], ...]
    serving: dict[str, str]  # version name -> role


class Engine:
    """Everything beast-mode does to a workspace. Opening it touches nothing until first use."""

    def __init__(self, workspace: Workspace, *, actor: str | None = None) -> None:
        self.workspace = workspace
        self.actor = actor or current_actor()
        self._config: Config | None = None
        self._store: SqliteStore | None = None

    @property
    def actor(self) -> str:
        """Who acts: kept in history, `production_by` and jobs (checked whoever sets it)."""
        return self._actor

    @actor.setter
    def actor(self, value: str) -> None:
        self._actor = text.check("actor", value, limit=text.MAX_NAME_CHARS)

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def init(cls, workspace: Workspace) -> tuple[Engine, list[Path]]:
        """Create the workspace (idempotent): directories, config.toml, the database.

        A workspace that was used and lost its database is refused, never started afresh
        (engine.core.workspace): `beast restore` is the way back.
        """
        created = workspace.create()
        before = {p: p.exists() for p in (workspace.db_path, workspace.marker_path)}
        engine = cls(workspace)
        engine.config  # noqa: B018 - refuse a bad existing config now, not later
        engine.store  # noqa: B018 - creates and migrates the database, records its id
        created += [p for p, existed in before.items() if not existed and p.exists()]
        if not workspace.history_export_path.exists():
            warning = engine._export_after_commit()
            if warning:
                raise BeastError(warning.strip(" ()"))
            created.append(workspace.history_export_path)
        return engine, created

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.workspace.config_path)
        return self._config

    @property
    def store(self) -> SqliteStore:
        if self._store is None:
            self.workspace.require()
            self.config  # noqa: B018 - a bad config.toml is refused by every command
            store = SqliteStore(self.workspace.db_path)
            store.migrate()
            self._store = store
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- reading --------------------------------------------------------------------------

    def lines(self) -> list[str]:
        with self.store.read_sql() as conn:
            return registry.line_names(conn)

    def status(self) -> Status:
        with self.store.read_sql() as conn:
            lines = registry.line_names(conn)
            states = [s for s in (self._state(conn, line) for line in lines) if s is not None]
            experiments = self._experiments(conn)
            paths = {
                row["id"]: self.workspace.models_dir / row["path"]
                for row in conn.execute("SELECT id, path FROM artifacts WHERE status = 'valid'")
            }
            health = _health(conn, states)
        rows: list[Deployment] = []
        for state in states:
            rows.append(
                Deployment(
                    state.line,
                    state.production.name,
                    "production",
                    BASIS_POINTS - state.candidate_bp,
                    state.experiment,
                    state.production_since,
                    state.production_by,
                    state.production.sha256,
                    paths[state.production.artifact_id].is_file(),
                )
            )
            if state.candidate is not None:
                rows.append(
                    Deployment(
                        state.line,
                        state.candidate.name,
                        "candidate",
                        state.candidate_bp,
                        state.experiment,
                        state.candidate_since or "",
                        state.candidate_by or "",
                        state.candidate.sha256,
                        paths[state.candidate.artifact_id].is_file(),
                    )
                )
        return Status(
            deployments=tuple(rows),
            experiments=tuple(experiments),
            lines=tuple(lines),
            revisions={s.line: s.revision for s in states},
            health=health,
        )

    def models(self) -> ModelsReport:
        with self.store.read_sql() as conn:
            found = registry.list_artifacts(conn, self.workspace.models_dir)
            loose = registry.unregistered_files(
                conn, self.workspace.models_dir, self.config.registry
            )
            serving: dict[str, str] = {}
            for line in registry.line_names(conn):
                state = self._state(conn, line)
                if state is not None:
                    serving[f"{line}/{state.production.name}"] = "production"
                    if state.candidate is not None:
                        serving[f"{line}/{state.candidate.name}"] = "candidate"
        return ModelsReport(tuple(found), tuple(loose), serving)

    # Reads inside a caller's transaction (monitoring reads many things from one snapshot).
    @staticmethod
    def lines_in(conn: sqlite3.Connection) -> list[str]:
        return registry.line_names(conn)

    def line_state(self, conn: sqlite3.Connection, line: str) -> LineState | None:
        return self._state(conn, line)

    def experiments_in(self, conn: sqlite3.Connection) -> list[Experiment]:
        return self._experiments(conn)

    def history(self, line: str | None = None) -> list[HistoryEntry]:
        _check_names(model=line)
        with self.store.read() as tx:
            return tx.history.entries(line)

    def report(self, *, window: str = "1h", model: str | None = None) -> MonitorReport:
        """Health, metrics, drift and alerts of every deployed version, and test verdicts."""
        from engine.monitoring import report as monitoring  # numpy and scipy: only on this path

        return monitoring.report(self, window=window, model=model)

    def experiment(self, name: str) -> Experiment:
        _check_names(test=name)
        with self.store.read_sql() as conn:
            found = self._experiment(conn, name)
        if found is None:
            raise NotFound(f"no A/B test named {name}")
        return found

    def doctor(self, *, repair: bool = False) -> invariants.DoctorReport:
        """Check every invariant; with repair, rewrite a stale history export first.

        The database's integrity comes first: on a damaged file the other checks would read
        garbage (a row its index points to is gone), and a repair would export it.
        """
        try:
            store = self.store
        except WorkspaceLost:
            # Lost changes may be damage: if so, say that, else the refusal stands.
            report = invariants.integrity_report(self.workspace.db_path)
            if report is None:
                raise
            return report
        damaged = invariants.integrity_report(store)
        if damaged is not None:
            return damaged
        if repair:
            self.export_history()
        with store.read_sql() as conn:
            report = invariants.check(conn, self.workspace)
        broken = tuple(f"database integrity: {p}" for p in store.foreign_key_errors())
        return invariants.DoctorReport(broken + report.problems, report.warnings)

    def readiness(self) -> str | None:
        """Why this engine should not be called ready, or None: for `/healthz`.

        Cheap (a stat and one indexed read): the database file is still the one this
        engine has open and its workspace's own, and something is deployed. Uses this
        engine's connection, so call it where its other calls are made (one at a time).
        """
        try:
            store = self.store
            problem = store.file_problem()
            if problem is not None:
                return problem
            with store.read_sql() as conn:
                deployed = conn.execute("SELECT 1 FROM line_state LIMIT 1").fetchone()
        except BeastError as exc:
            return str(exc)
        return None if deployed else "nothing deployed yet"

    # -- console reads --------------------------------------------------------------------

    def rollback_target(self, version: str | None = None, *, model: str | None = None) -> str:
        """The production a rollback would go to now (shown before asking), or refuse why not."""
        _check_names(version=version)
        line = self._line(model)
        with self.store.read_sql() as conn:
            state = self._state(conn, line)
            if state is None:
                raise BeastError(f"nothing is deployed on {line}: nothing to roll back")
            stack = deployments.undo_stack(SqliteTx(conn).history.entries(line))
            return deployments.rollback_target(state, stack, version).production

    def lineage(self, version: str, *, model: str | None = None) -> Lineage:
        """A version's artifact and the facts of its `<model>.lineage` sidecar, if it has one."""
        _check_names(version=version)
        line = self._line(model)
        with self.store.read_sql() as conn:
            ref = registry.get_version(conn, line, version)
            (artifact,) = registry.list_artifacts(
                conn, self.workspace.models_dir, only_id=ref.artifact_id
            )
        return Lineage(line, version, artifact, _sidecar_facts(Path(artifact.path)))

    # -- feedback -------------------------------------------------------------------------

    def feedback(self, prediction_id: str, actual: object) -> str:
        """Attach the actual value to a prediction: recorded, duplicate or pending (or refuse)."""
        from engine.monitoring import feedback as labels

        text.check("prediction id", prediction_id, limit=text.MAX_ID_CHARS)
        return labels.record(
            self.store,
            prediction_id,
            actual,
            self.config.thresholds.tolerance_points,
            ranges=labels.LabelRanges.of_config(self.config),
        )

    def feedback_many(self, items: list[tuple[str, object]]) -> list[labels.Outcome]:
        """Many (prediction id, actual) pairs, an answer for each (`labels.record_many`)."""
        from engine.monitoring import feedback as labels

        return labels.record_many(
            self.store,
            items,
            self.config.thresholds.tolerance_points,
            ranges=labels.LabelRanges.of_config(self.config),
        )

    # -- registry -------------------------------------------------------------------------

    def register(
        self,
        path: str | Path,
        *,
        version: str | None = None,
        model: str | None = None,
        validator: artifacts.Validator | None = None,
    ) -> registry.Registration:
        """Validate a model file in models/ (in a child process) and register it by sha256.

        `validator` replaces the cold child (the daemon's watcher keeps a warm one).
        """
        models_dir = self.workspace.models_dir
        resolved = artifacts.resolve_in_models(path, models_dir)
        checked = artifacts.check_file(
            resolved, models_dir, self.config.registry.max_artifact_bytes
        )
        registry.check_file_name(checked.relative)
        sha = artifacts.sha256_of(resolved)
        with self.store.read_sql() as conn:
            lines = registry.line_names(conn)
            known = conn.execute(
                "SELECT * FROM artifacts WHERE sha256 = ? AND status = 'valid'", (sha,)
            ).fetchone()
            known_names = (
                [
                    r[0]
                    for r in conn.execute(
                        "SELECT name FROM versions WHERE artifact_id = ?", (known["id"],)
                    )
                ]
                if known
                else []
            )
        naming = registry.naming_for(
            resolved,
            version=version,
            model=model or (known["line"] if known else None),
            lines=lines,
        )
        if naming.line is None:
            raise BeastError(f"cannot tell the model line from {resolved.name}: pass --model NAME")
        if naming.version is None and not known_names:
            raise BeastError(
                f"cannot derive a version from {resolved.name} (expected NAME-vX.json): "
                "pass --version V"
            )
        if known is not None:
            validation = artifacts.Validation(
                True,
                n_features=known["n_features"],
                feature_names=registry.artifact_from_row(known, models_dir, ()).feature_names,
                xgboost_version=known["xgboost_version"],
            )
        else:
            validation = (validator or artifacts.validate_in_child)(
                resolved,
                checked.format,
                self.config.registry.validation_timeout_s,
                expected_sha256=sha,
            )
        reason = validation.reason
        with self.store.write_sql() as conn:
            if validation.ok and known is None:
                assert validation.n_features is not None
                reason = registry.schema_mismatch(
                    conn, naming.line, validation.n_features, validation.feature_names
                )
            if reason is not None:
                registry.record_rejection(conn, checked, sha, reason, self.actor)
                outcome = None
            else:
                outcome = registry.store_valid(
                    conn, checked, sha, validation, naming=naming, actor=self.actor
                )
                if outcome[2]:  # new: keep what training said normal looks like, if it did
                    _store_sidecar_baseline(conn, resolved, outcome[0], validation)
        if outcome is None:
            raise ArtifactRejected(f"{resolved.name} rejected: {reason}")
        artifact_id, ref, new = outcome
        with self.store.read_sql() as conn:
            (artifact,) = registry.list_artifacts(conn, models_dir, only_id=artifact_id)
        return registry.Registration(artifact, ref, new)

    # -- deployments ----------------------------------------------------------------------

    def deploy(
        self,
        path: str | Path | None = None,
        *,
        version: str | None = None,
        model: str | None = None,
        traffic: float | None = None,
        ab_test: str | None = None,
        note: str | None = None,
        expect: Expect | None = None,
    ) -> Change:
        """Deploy to production at 100%, or, with traffic and a test name, as an A/B candidate."""
        _check_entry(note, expect, version=version, model=model)
        if ab_test is not None:
            check_name("A/B test", ab_test)
        if ab_test is not None and traffic is None:
            raise BeastError("--ab-test needs --traffic N (the candidate's share, 1–99%)")
        if traffic is not None and ab_test is None and traffic != 100:
            raise BeastError(
                f"--traffic {traffic:g} needs --ab-test NAME (a candidate below 100% is a test)"
            )
        bp = deployments.traffic_bp(traffic) if ab_test is not None and traffic is not None else 0
        if path is not None:
            ref = self.register(path, version=version, model=model).version
            if ref is None:  # pragma: no cover - register refuses unnamed artifacts
                raise BeastError("the file has no version name: pass --version V")
            line = ref.line
        else:
            if version is None:
                raise BeastError(
                    "deploy needs a model file PATH or --version V of a registered one"
                )
            line = self._line(model)
            with self.store.read_sql() as conn:
                ref = registry.get_version(conn, line, version)
        target = ref

        def planner(conn: sqlite3.Connection, state: LineState | None) -> deployments.Plan:
            if ab_test is None:
                return deployments.plan_deploy(state, target)
            return deployments.plan_ab_start(
                state, target, bp, ab_test, self._experiment(conn, ab_test)
            )

        return self._mutate(line, expect, note, planner)

    def promote(
        self,
        test: str,
        *,
        force: bool = False,
        note: str | None = None,
        expect: Expect | None = None,
    ) -> Change:
        """The candidate of a running test becomes production at 100%, aliased ab-winner-TEST.

        It follows the test's verdict: only "candidate wins" promotes; `force` overrides any
        other verdict and is recorded as forced.
        """
        _check_entry(note, expect, test=test)
        found = self.experiment(test)
        verdict_text = "forced"
        if found.status == "running":
            from engine.monitoring import report as monitoring  # numpy and scipy: only on this path

            with self.store.read_sql() as conn:
                judged = monitoring.experiment_report(conn, self.config, found).verdict
            verdict_text = f"verdict: {judged.outcome} ({judged.reason})"
            if judged.outcome != "candidate wins" and not force:
                raise BeastError(
                    f"cannot promote {test}: the verdict is {judged.outcome} ({judged.reason}); "
                    "pass --force to promote anyway (recorded as forced)"
                )
            force = force and judged.outcome != "candidate wins"

        def planner(conn: sqlite3.Connection, state: LineState | None) -> deployments.Plan:
            current = self._experiment(conn, test)
            assert current is not None
            if state is None:
                raise BeastError(f"nothing is deployed on {current.line}")
            plan = deployments.plan_promote(state, current, forced=force)
            return dataclasses.replace(
                plan, end_test=(test, "promoted", verdict_text if not force else "forced")
            )

        return self._mutate(found.line, expect, note, planner)

    def abort(
        self,
        test: str,
        *,
        note: str | None = None,
        expect: Expect | None = None,
        reason: str = "aborted",
        actor: str | None = None,
    ) -> Change:
        """End a running test: the candidate goes to 0%, production back to 100%.

        `actor` names an automatic caller (the monitor's auto-pull) instead of the OS user.
        """
        _check_entry(note, expect, test=test)
        if actor is not None:
            acting = Engine(self.workspace, actor=actor)
            try:
                return acting.abort(test, note=note, expect=expect, reason=reason)
            finally:
                acting.close()
        found = self.experiment(test)

        def planner(conn: sqlite3.Connection, state: LineState | None) -> deployments.Plan:
            current = self._experiment(conn, test)
            assert current is not None
            if state is None:
                raise BeastError(f"nothing is deployed on {current.line}")
            return deployments.plan_abort(state, current, reason)

        return self._mutate(found.line, expect, note, planner)

    def rollback(
        self,
        version: str | None = None,
        *,
        model: str | None = None,
        note: str | None = None,
        expect: Expect | None = None,
    ) -> Change:
        """Back to the production before the newest change, or to a named version."""
        _check_entry(note, expect, version=version)
        line = self._line(model)

        def planner(conn: sqlite3.Connection, state: LineState | None) -> deployments.Plan:
            if state is None:
                raise BeastError(f"nothing is deployed on {line}: nothing to roll back")
            stack = deployments.undo_stack(SqliteTx(conn).history.entries(line))
            where = deployments.rollback_target(state, stack, version)
            target = registry.get_version(conn, line, where.production)
            return deployments.plan_rollback(state, target, where.undoes)

        return self._mutate(line, expect, note, planner, rerun=_rollback_rerun)

    # -- retraining -----------------------------------------------------------------------

    def retrain_check(self, model: str | None = None) -> TriggerReport:
        """Each retraining trigger of a line with its figure, and whether any fires."""
        from engine.retrain import triggers

        line = self._line(model)
        with self.store.read_sql() as conn:
            return triggers.evaluate(conn, line, self.config.retrain)

    def start_retrain(
        self,
        model: str | None = None,
        *,
        force: bool = False,
        deploy: bool = False,
        trigger: str = "manual",
    ) -> Job:
        """Queue a retraining job and start its worker process; return at once.

        A line has one job at a time: while one is queued or running, this joins it (adding
        the trigger, and the deploy wish). Without `force`, a trigger must fire.
        """
        from engine.retrain import jobs, triggers, workers

        line = self._line(model)
        settings = self.config.retrain
        with self.store.write_sql() as conn:
            workers.reap(conn, self.workspace.models_dir, line)
            report = triggers.evaluate(conn, line, settings)
            if not force and not report.fires and report.active_job is None:
                raise BeastError(f"no retraining trigger fires for {line}: pass --force to train")
            job_id, joined = jobs.create_or_join(
                conn,
                line,
                trigger=trigger,
                force=force,
                deploy=deploy,
                actor=self.actor,
                timeout_s=settings.timeout_s,
                lease_s=settings.lease_s,
            )
            if not joined:
                firing = ", ".join(f"{t.name} ({t.detail})" for t in report.triggers if t.fires)
                jobs.append_log(conn, job_id, f"triggers firing: {firing or 'none (forced)'}")
        if not joined:
            try:
                workers.launch(self.workspace.root, job_id)
            except OSError as exc:
                with self.store.write_sql() as conn:
                    jobs.finish(
                        conn,
                        job_id,
                        status="failed",
                        error=f"cannot start the worker process: {exc}",
                        expect_running=False,
                    )
        return self.job(job_id)

    def retrain_if_due(self, model: str | None = None) -> Job | None:
        """The scheduler's tick: reap lost jobs, then start a job on a line whose trigger
        fires, unless one runs or the last one ended within `cooldown_minutes`.

        Reads one snapshot per line and writes only when it starts something. With several
        lines and no `model`, every due line gets a job; the first one started is returned.
        """
        from engine.retrain import jobs, triggers

        self.reap_jobs()
        settings = self.config.retrain
        started: Job | None = None
        for line in [self._line(model)] if model is not None else self.lines():
            with self.store.read_sql() as conn:
                if jobs.active(conn, line) is not None:
                    continue
                if jobs.finished_within(conn, line, settings.cooldown_minutes * 60):
                    continue
                report = triggers.evaluate(conn, line, settings)
            if not report.fires:
                continue
            names = "+".join(t.name for t in report.triggers if t.fires)
            try:
                job = self.start_retrain(line, trigger=names)
            except BeastError:  # the state moved between the snapshot and the write
                continue
            started = started or job
        return started

    def reap_jobs(self) -> list[Job]:
        """Fail jobs whose worker was lost (lease expired) or overran its timeout."""
        from engine.retrain import jobs, workers

        with self.store.read_sql() as conn:
            if not jobs.lost(conn) and not jobs.overdue(conn, workers.DEADLINE_GRACE_S):
                return []
        with self.store.write_sql() as conn:
            failed = workers.reap(conn, self.workspace.models_dir)
            return [jobs.get(conn, job_id) for job_id in failed]

    def jobs(self, limit: int = 20, model: str | None = None) -> list[Job]:
        """The newest jobs first (of one line with `model`)."""
        from engine.retrain import jobs

        line = self._line(model) if model is not None else None
        with self.store.read_sql() as conn:
            return jobs.recent(conn, limit, line)

    def job(self, job_id: int) -> Job:
        from engine.retrain import jobs

        with self.store.read_sql() as conn:
            return jobs.get(conn, job_id)

    def job_log(self, job_id: int, *, times: bool = False) -> list[str]:
        """A job's log lines, oldest first (with `times`, each prefixed with its UTC time)."""
        from engine.retrain import jobs

        with self.store.read_sql() as conn:
            return jobs.log_lines(conn, job_id, times=times)

    def wait_job(
        self,
        job_id: int,
        timeout_s: float,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll a job until it finishes or `timeout_s` passes; report each change.

        Reaps on the way, so a worker that died is reported failed once its lease expires
        rather than waited for until the timeout.
        """
        import time

        from engine.retrain import jobs

        poll_s = 0.2  # a progress bar's pace; each poll is one indexed read
        deadline = jobs.monotonic() + timeout_s
        seen: tuple[str, float, str] | None = None
        next_reap = 0.0
        while True:
            job = self.job(job_id)
            state = (job.status, job.progress, job.message)
            if state != seen and on_progress is not None:
                on_progress(job)
            seen = state
            now = jobs.monotonic()
            if job.finished or now >= deadline:
                return job
            if now >= next_reap:
                with contextlib.suppress(StateBusy):  # a busy moment: reap at the next poll
                    self.reap_jobs()
                next_reap = now + 1.0
            time.sleep(min(poll_s, max(0.0, deadline - now)))

    # -- daemon ---------------------------------------------------------------------------

    def engine_pid(self) -> int | None:
        """The pid of the `beast engine` serving this workspace, or None when none runs."""
        from engine.server import daemon

        return daemon.running_pid(self.workspace)

    # -- internals ------------------------------------------------------------------------

    def _line(self, model: str | None) -> str:
        _check_names(model=model)
        lines = self.lines()
        if model is not None:
            if model not in lines:
                known = ", ".join(lines) or "none"
                raise NotFound(f"no model line {model} (known: {known})")
            return model
        if len(lines) == 1:
            return lines[0]
        if not lines:
            raise BeastError(
                "no model registered yet: deploy one with `beast deploy PATH --version V`"
            )
        raise BeastError(f"several model lines ({', '.join(lines)}): pass --model NAME")

    def _mutate(
        self,
        line: str,
        expect: Expect | None,
        note: str | None,
        planner: Callable[[sqlite3.Connection, LineState | None], deployments.Plan],
        rerun: Callable[[HistoryEntry | None, Expect | None], str | None] | None = None,
    ) -> Change:
        with self.store.write_sql() as conn:
            state = self._state(conn, line)
            if rerun is not None:
                last = SqliteTx(conn).history.last(line)
                done = rerun(last, expect)
                if done is not None:
                    return Change(last, done, changed=False)
            _check_expect(state, expect)
            plan = planner(conn, state)
            _require_newly_deployed_intact(conn, self.workspace.models_dir, state, plan)
            entry = self._apply(conn, line, state, plan, note)
        return Change(entry, plan.message + self._export_after_commit())

    def _export_after_commit(self) -> str:
        """Rewrite history.json; the change is committed already, so a failure only warns."""
        try:
            self.export_history()
        except OSError as exc:
            return (
                f" (warning: {self.workspace.history_export_path} was not rewritten: "
                f"{exc.strerror or exc}; run `beast doctor --repair`)"
            )
        except history.ExportRefused as exc:
            return f" (warning: {exc})"
        return ""

    def _apply(
        self,
        conn: sqlite3.Connection,
        line: str,
        state: LineState | None,
        plan: deployments.Plan,
        note: str | None,
    ) -> HistoryEntry:
        now, actor = utc_now(), self.actor
        if plan.end_test is not None:
            name, status, reason = plan.end_test
            conn.execute(
                "UPDATE experiments SET status = ?, ended_at = ?, ended_by = ?, end_reason = ?,"
                " forced = ? WHERE name = ? AND status = 'running'",
                (status, now, actor, reason, int(plan.forced), name),
            )
        if plan.action == "promote" and plan.history_experiment:
            registry.add_alias(
                conn, line, winner_alias(plan.history_experiment), plan.production, actor
            )
        experiment_id = None
        if plan.start_test is not None:
            assert plan.candidate is not None
            experiment_id = conn.execute(
                "INSERT INTO experiments (name, line, control_id, candidate_id, traffic_bp,"
                " status, started_at, started_by) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    plan.start_test,
                    line,
                    plan.production.id,
                    plan.candidate.id,
                    plan.candidate_bp,
                    now,
                    actor,
                ),
            ).lastrowid
        to_state = Snapshot(
            plan.production.name,
            plan.candidate.name if plan.candidate else None,
            plan.candidate_bp,
            plan.experiment,
        )
        entry = SqliteTx(conn).history.append(
            line=line,
            at=now,
            actor=actor,
            action=plan.action,
            version=plan.version,
            experiment=plan.history_experiment,
            from_state=state.snapshot() if state else Snapshot(),
            to_state=to_state,
            undoes=plan.undoes,
            note=note,
            forced=plan.forced,
        )
        same_production = state is not None and state.production.id == plan.production.id
        same_candidate = (
            state is not None
            and state.candidate is not None
            and plan.candidate is not None
            and state.candidate.id == plan.candidate.id
        )
        conn.execute(
            """
            INSERT INTO line_state (line, production_id, production_since, production_by,
                candidate_id, candidate_bp, candidate_since, candidate_by, experiment_id, revision)
            VALUES (:line, :pid, :psince, :pby, :cid, :cbp, :csince, :cby, :eid, :rev)
            ON CONFLICT(line) DO UPDATE SET production_id = :pid, production_since = :psince,
                production_by = :pby, candidate_id = :cid, candidate_bp = :cbp,
                candidate_since = :csince, candidate_by = :cby, experiment_id = :eid,
                revision = :rev
            """,
            {
                "line": line,
                "pid": plan.production.id,
                "psince": state.production_since if same_production and state else now,
                "pby": state.production_by if same_production and state else actor,
                "cid": plan.candidate.id if plan.candidate else None,
                "cbp": plan.candidate_bp,
                "csince": (state.candidate_since if same_candidate and state else now)
                if plan.candidate
                else None,
                "cby": (state.candidate_by if same_candidate and state else actor)
                if plan.candidate
                else None,
                "eid": experiment_id,
                "rev": entry.id,
            },
        )
        return entry

    def export_history(self) -> None:
        """Rewrite deployments/history.json from the history table (atomic, never stale)."""

        def read() -> str:
            with self.store.read() as tx:
                return tx.history.export_text()

        history.write_export(self.workspace.history_export_path, read)

    @staticmethod
    def _state(conn: sqlite3.Connection, line: str) -> LineState | None:
        return SqliteDeployments(conn).state(line)

    @staticmethod
    def _experiments(conn: sqlite3.Connection) -> list[Experiment]:
        return SqliteDeployments(conn).experiments()

    @staticmethod
    def _experiment(conn: sqlite3.Connection, name: str) -> Experiment | None:
        return SqliteDeployments(conn).experiment(name)


def _check_entry(note: str | None, expect: Expect | None, **names: str | None) -> None:
    """Refuse unsafe text where a mutation enters (TextRefused, 422), before any read or
    write: a note is kept in history and printed, a name is looked up and quoted back."""
    text.check_optional("note", note, limit=text.MAX_NOTE_CHARS)
    _check_names(expect=expect.production if expect is not None else None, **names)


def _check_names(**names: str | None) -> None:
    """Names given to look something up: the safe-text rule, not the stricter name rule
    (`naming.check_name` is for names being created; whatever is stored passes both)."""
    for what, value in names.items():
        text.check_optional(what, value, limit=text.MAX_NAME_CHARS)


def _store_sidecar_baseline(
    conn: sqlite3.Connection, model: Path, artifact_id: int, validation: artifacts.Validation
) -> None:
    """Store the drift reference and validation figures of a `<model>.lineage` sidecar."""
    from engine.monitoring import baselines  # numpy: only when a sidecar is there to read

    if not baselines.sidecar_path(model).is_file():
        return
    reference, accuracy, mae = baselines.read_sidecar(model, validation.feature_names)
    if reference is not None or accuracy is not None or mae is not None:
        baselines.store(
            conn, artifact_id, "training", reference=reference, accuracy=accuracy, mae=mae
        )


def _sidecar_facts(model: Path) -> tuple[tuple[str, str], ...]:
    """The sidecar's scalar facts, flattened one level; the bulky drift reference is skipped."""
    import json

    from engine.monitoring import baselines

    try:
        doc = json.loads(baselines.sidecar_path(model).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    if not isinstance(doc, dict):
        return ()
    facts: list[tuple[str, str]] = []
    for key, value in doc.items():
        if key == "reference":
            continue
        items = value.items() if isinstance(value, dict) else [("", value)]
        facts.extend((f"{key}.{sub}" if sub else key, str(v)) for sub, v in items)
    return tuple(facts)


def _health(conn: sqlite3.Connection, states: list[LineState]) -> str:
    """Worst firing alert of what serves; "no data" before any prediction was logged.

    Plain SQL, so `beast status` answers without importing numpy (monitoring keeps the
    alerts current; `beast monitor` shows the figures behind them).
    """
    serving = [(s.line, v.name) for s in states for v in (s.production, s.candidate) if v]
    if not serving:
        return "no data"
    marks = ", ".join("(?, ?)" for _ in serving)
    flat = [part for pair in serving for part in pair]
    worst = conn.execute(
        f"SELECT max(CASE severity WHEN 'critical' THEN 2 ELSE 1 END) FROM alerts"
        f" WHERE resolved_at IS NULL AND (line, version) IN (VALUES {marks})",
        flat,
    ).fetchone()[0]
    if worst:
        return "critical" if worst == 2 else "warning"
    ids = [v.id for s in states for v in (s.production, s.candidate) if v]
    marks = ", ".join("?" for _ in ids)
    seen = conn.execute(  # minutes, or hours once compacted (engine.monitoring.rollups)
        f"SELECT 1 FROM rollups WHERE version_id IN ({marks})"
        f" UNION ALL SELECT 1 FROM rollups_hourly WHERE version_id IN ({marks}) LIMIT 1",
        ids + ids,
    ).fetchone()
    return "healthy" if seen else "no data"


def _rollback_rerun(last: HistoryEntry | None, expect: Expect | None) -> str | None:
    """A rollback re-run with the state it was first run against (say, after a crash).

    With `--expect V`, a rollback right after a rollback from V is taken as the same command
    again and does nothing; `--expect-revision N` is the unambiguous way to roll back again.
    """
    if expect is None or expect.production is None or last is None:
        return None
    if last.action == "rollback" and last.from_state.production == expect.production:
        return (
            f"already rolled back from {expect.production} to {last.to_state.production} "
            f"(history #{last.id}, {last.at}); nothing done"
        )
    return None


def _require_newly_deployed_intact(
    conn: sqlite3.Connection, models_dir: Path, state: LineState | None, plan: deployments.Plan
) -> None:
    """Refuse a change that puts a version with a missing or altered artifact into service.

    What already serves is loaded in memory and keeps serving (its alert says the file is
    gone); only versions this change starts serving are checked.
    """
    serving = {v.id for v in (state.production, state.candidate) if v} if state else set()
    for ref in (plan.production, plan.candidate):
        if ref is not None and ref.id not in serving:
            registry.require_intact(conn, models_dir, ref)


def _check_expect(state: LineState | None, expect: Expect | None) -> None:
    if expect is None:
        return
    revision = state.revision if state else 0
    if expect.revision is not None and expect.revision != revision:
        raise StateChanged(f"revision is {revision} now, you saw {expect.revision}")
    production = state.production.name if state else None
    if expect.production is not None and expect.production != production:
        raise StateChanged(
            f"production is {production or 'nothing'} now, you saw {expect.production}"
        )


__all__ = ["Engine", "ModelsReport", "VersionRef"]
