"""`Engine`: the one facade the CLI, the HTTP API, the daemon and the console call.

It composes the services below and delegates to them: the registry's (engine.registry.service)
and the deploy service (engine.deploy.service), where every mutation is one write transaction
that reads the state, applies a pure rule (engine.deploy.rules) and writes the new state with
its history row. The history export (`deployments/history.json`) is rewritten after the commit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core import history_export as history
from engine.core import tasks, text
from engine.core.clock import utc_now
from engine.core.config import STORE_URL_SCHEMES, Config, load_config
from engine.core.engine_lock import running_pid
from engine.core.errors import BeastError, Conflict, NotFound
from engine.core.identity import current_actor
from engine.core.records import (
    Alert,
    Change,
    DoctorReport,
    Expect,
    Experiment,
    HistoryEntry,
    Lineage,
    LineState,
    Status,
    VersionRef,
)
from engine.core.workspace import Workspace, WorkspaceLost
from engine.deploy import rules as deploy_rules
from engine.deploy import service as deploy_service
from engine.registry import artifacts
from engine.registry import catalog as registry
from engine.registry.service import ModelsReport, Registry
from engine.store.base import Store, Tx
from engine.store.opening import STORE_URL_ENV, open_store, store_url
from engine.store.replicas import Replica, live_leader
from engine.store.sqlite.integrity import integrity_report

if TYPE_CHECKING:
    from engine.deploy.preflight import Preflight
    from engine.monitoring import feedback as labels
    from engine.monitoring.replay import Replay
    from engine.monitoring.report import Monitoring, MonitorReport
    from engine.retrain.data import Source
    from engine.retrain.jobs import Job
    from engine.retrain.service import RetrainService
    from engine.retrain.triggers import TriggerReport
    from engine.store.postgres.transfer import Migrated


class Engine:
    """Everything beast-mode does to a workspace. Opening it touches nothing until first use."""

    def __init__(self, workspace: Workspace, *, actor: str | None = None) -> None:
        self.workspace = workspace
        self.actor = actor or current_actor()
        self._config: Config | None = None
        self._store: Store | None = None

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
    def store(self) -> Store:
        if self._store is None:
            self.workspace.require()
            self.config  # noqa: B018 - a bad config.toml is refused by every command
            store = open_store(self.workspace.db_path)
            store.migrate()
            self._store = store
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- reading --------------------------------------------------------------------------

    def lines(self) -> list[str]:
        with self.store.read() as tx:
            return tx.registry.line_names()

    def status(self) -> Status:
        """What serves on every line, the A/B tests, and each line's health."""
        return deploy_service.status(self.store, self.workspace.models_dir, _health)

    def models(self) -> ModelsReport:
        return self._registry().models()

    def history(self, line: str | None = None) -> list[HistoryEntry]:
        _check_names(model=line)
        with self.store.read() as tx:
            return tx.history.entries(line)

    def experiment(self, name: str) -> Experiment:
        _check_names(test=name)
        with self.store.read() as tx:
            found = tx.deployments.experiment(name)
        if found is None:
            raise NotFound(f"no A/B test named {name}")
        return found

    def doctor(self, *, repair: bool = False) -> DoctorReport:
        """Check every invariant; with repair, rewrite a stale history export first.

        The store's integrity comes first (SQLite: the file; PostgreSQL: the schema's guards):
        on a damaged file the other checks would read garbage (a row its index points to is
        gone), and a repair would export it.
        """
        try:
            store = self.store
        except WorkspaceLost:
            # Lost changes may be damage: if so, say that, else the refusal stands. Only a
            # SQLite workspace's file can be (a beast.db left beside a PostgreSQL store is not
            # the store).
            if store_url(self.workspace.root):
                raise
            report = integrity_report(self.workspace.db_path)
            if report is None:
                raise
            return report
        damaged = integrity_report(store)
        if damaged is not None:
            return damaged
        if repair:
            self.export_history()
        from engine.deploy import invariants  # only `beast doctor` pays for its checks

        with store.read() as tx:
            report = invariants.check(tx, self.workspace)
        broken = tuple(f"database integrity: {p}" for p in store.foreign_key_errors())
        return DoctorReport(broken + report.problems, report.warnings)

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
            with store.read() as tx:
                deployed = tx.deployments.any_deployed()
        except BeastError as exc:
            return str(exc)
        return None if deployed else "nothing deployed yet"

    # -- console reads --------------------------------------------------------------------

    def rollback_target(self, version: str | None = None, *, model: str | None = None) -> str:
        """The production a rollback would go to now (shown before asking), or refuse why not."""
        _check_names(version=version)
        return self._deploys().rollback_target(self._line(model), version)

    def lineage(self, version: str, *, model: str | None = None) -> Lineage:
        """A version's artifact and the facts of its `<model>.lineage` sidecar, if it has one."""
        _check_names(version=version)
        return self._registry().lineage(self._line(model), version)

    # -- feedback -------------------------------------------------------------------------

    def feedback(self, prediction_id: str, actual: object) -> str:
        """Attach the actual value to a prediction: recorded, duplicate or pending (or refuse)."""
        text.check("prediction id", prediction_id, limit=text.MAX_ID_CHARS)
        # Its module and the repositories it reads: only a process that takes feedback pays.
        from engine.monitoring import feedback as labels

        return labels.record(
            self.store, prediction_id, actual, labels.Contracts.of_config(self.config)
        )

    def feedback_many(self, items: list[tuple[str, object]]) -> list[labels.Outcome]:
        """Many (prediction id, actual) pairs, an answer for each (`labels.record_many`)."""
        from engine.monitoring import feedback as labels  # as in `feedback`

        return labels.record_many(self.store, items, labels.Contracts.of_config(self.config))

    # -- monitoring -----------------------------------------------------------------------

    @property
    def monitoring(self) -> Monitoring:
        """The monitoring service over this workspace (reports, evaluations, loss alerts)."""
        from engine.monitoring.report import Monitoring  # numpy: only on this path

        return Monitoring(
            self.store,
            self.config,
            self.workspace.models_dir,
            abort=self.abort,
            rollback=self.rollback,
            rollback_target=self.rollback_target,
        )

    def report(self, *, window: str = "1h", model: str | None = None) -> MonitorReport:
        """Health, metrics, drift and alerts of every deployed version, and test verdicts."""
        return self.monitoring.report(window=window, model=model)

    def incident_report(self, out_dir: Path, *, window: str = "1h") -> tuple[Path, Path]:
        """Write the incident snapshot into `out_dir`: beast-report-TIME.md and its JSON (the
        source the Markdown is rendered from); return (markdown, json).

        Status, firing alerts, metrics per window of every serving version, the running
        tests' figures per arm, drift by feature and the last 50 history entries with their
        evidence. Reads only (alerts as the last evaluation left them); each file is written
        atomically. An unwritable directory is a BeastError naming it.
        """
        from engine.monitoring import incident  # numpy: only the report pays

        report = self.report(window=window)
        doc = incident.document(self.status(), report, self.history(), str(self.workspace.root))
        return incident.write(Path(out_dir), doc)

    # -- registry -------------------------------------------------------------------------

    def register(
        self,
        path: str | Path,
        *,
        version: str | None = None,
        model: str | None = None,
        validator: artifacts.Validator | None = None,
        reference: str | Path | None = None,
    ) -> registry.Registration:
        """Validate a model file in models/ (in a child process) and register it by sha256.

        `validator` replaces the cold child (the daemon's watcher keeps a warm one).
        `reference`: a labelled CSV or Parquet file with the line's features and label; the
        model scores it and its metrics and drift reference become the version's baseline
        (replacing a training sidecar's); a file that cannot serve refuses it all.
        """
        return self._registry().register(
            path, version=version, model=model, validator=validator, reference=reference
        )

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
        reference: str | Path | None = None,
        rollout: Sequence[float] | None = None,
    ) -> Change:
        """Deploy to production at 100%, or, with traffic and a test name, as an A/B candidate.

        `reference`: a labelled file that becomes the version's baseline (see `register`):
        with a PATH, kept by its registration; with a registered version, in the deploy's
        own transaction. `rollout`: a progressive rollout's steps in percent (rising, the
        last 100; needs `ab_test`): the candidate starts at the first, the leader's
        evaluator moves it up as the gates pass (`advance_rollouts`).
        """
        _check_entry(note, expect, version=version, model=model)
        steps = _rollout_steps(rollout, traffic, ab_test)
        bp = deploy_service.traffic_for(traffic if steps is None else steps[0] / 100, ab_test)
        target, detail = self._deploy_target(path, version, model, reference)
        baseline = None
        if reference is not None and path is None:  # a registered version: kept with the deploy
            detail, baseline = self._registry().reference_writer(target, reference)
        if steps is not None:
            assert ab_test is not None
            change = self._deploys().start_rollout(
                target, steps=steps, ab_test=ab_test, note=note, expect=expect, also=baseline
            )
        else:
            change = self._deploys().deploy(
                target, bp=bp, ab_test=ab_test, note=note, expect=expect, also=baseline
            )
        if detail is None:
            return change
        return dataclasses.replace(change, message=f"{change.message}; baseline: {detail}")

    def shadow(
        self,
        path: str | Path | None = None,
        *,
        version: str | None = None,
        model: str | None = None,
        traffic: float | None = None,
        note: str | None = None,
        expect: Expect | None = None,
    ) -> Change:
        """Score a version on `traffic`% (default 100) of its line's production requests
        without serving it (`beast deploy … --shadow`); its scores are logged against the
        same prediction ids, so labels pair with both models."""
        _check_entry(note, expect, version=version, model=model)
        bp = deploy_rules.shadow_bp(100.0 if traffic is None else traffic)
        target, _ = self._deploy_target(path, version, model)
        return self._deploys().shadow_start(target, bp=bp, note=note, expect=expect)

    def shadow_stop(
        self, *, model: str | None = None, note: str | None = None, expect: Expect | None = None
    ) -> Change:
        """End the running shadow of `model` (the only line when None)."""
        _check_entry(note, expect, model=model)
        return self._deploys().shadow_end(self._line(model), note=note, expect=expect)

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
        other verdict and is recorded as forced. The verdict it was decided on, with the
        line's health, firing alerts and drift (one monitoring report), is kept with the
        history row (`HistoryEntry.evidence`) and the test (`Experiment.verdict`, `ending`).
        """
        _check_entry(note, expect, test=test)
        found = self.experiment(test)
        self._require_srm_acknowledged(found)
        return self._deploys().promote(found, self._judge, force=force, note=note, expect=expect)

    def abort(
        self,
        test: str,
        *,
        note: str | None = None,
        expect: Expect | None = None,
        reason: str = "aborted",
        actor: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        pulled: bool = False,
    ) -> Change:
        """End a running test: the candidate goes to 0%, production back to 100%.

        `actor` names an automatic caller (the monitor's auto-pull) instead of the OS user;
        `pulled`: the test ends as auto-pulled, not aborted. `evidence`: the figures the
        decision read (the auto-pull's report); without it, the line's monitoring report is
        read now. Kept with the history row, the verdict in it with the test.
        """
        _check_entry(note, expect, test=test)
        if actor is not None:
            acting = Engine(self.workspace, actor=actor)
            try:
                return acting.abort(
                    test, note=note, expect=expect, reason=reason, evidence=evidence, pulled=pulled
                )
            finally:
                acting.close()
        found = self.experiment(test)
        if evidence is None:
            evidence = self._evidence(found.line, found.name)
        return self._deploys().abort(
            found,
            reason=reason,
            note=note,
            expect=expect,
            ending="auto-pulled" if pulled else "aborted",
            verdict=_verdict(evidence),
            evidence=evidence,
        )

    def pause_rollout(self, test: str, *, note: str | None = None) -> Change:
        """Hold a running rollout at its share: the evaluator leaves it until it is resumed
        (the auto-pull still pulls a candidate whose health turns critical)."""
        return self._hold_rollout(test, pause=True, note=note)

    def resume_rollout(self, test: str, *, note: str | None = None) -> Change:
        """Resume a paused rollout: its step begins again (samples and clock from now)."""
        return self._hold_rollout(test, pause=False, note=note)

    def abort_rollout(self, test: str, *, note: str | None = None) -> Change:
        """End a rollout and its test: the candidate goes to 0% (the test and the rollout
        end as aborted), with the line's figures as the evidence."""
        _check_entry(note, None, test=test)
        self._rollout_test(test)
        return self.abort(test, note=note, reason="rollout aborted")

    def evaluate(self, *, window: str = "1h") -> MonitorReport:
        """One evaluation, as the leader's evaluator runs it: alerts synced, critical
        candidates pulled (a running rollout's by its health gate), production rolled back
        when `[rollback] automatic` asks (`Monitoring.evaluate`), then every running rollout
        judged on the report that left (`advance_rollouts`). The report's `actions` say
        what was done, rollouts' included."""
        # A running rollout's candidate is pulled by its rollout's health gate, on this
        # report: one decision-maker per test, its history row naming the gate.
        report = self.monitoring.evaluate(window=window, rollouts_judge=True)
        moved = self.advance_rollouts(report)
        if not moved:
            return report
        return dataclasses.replace(report, actions=(*report.actions, *moved))

    def advance_rollouts(self, report: MonitorReport | None = None) -> list[str]:
        """Judge every running rollout's step (engine.deploy.rollout_gates) on `report` (or
        one read now) and apply it: the next share, the promotion at 100%, or the auto-pull
        of a failed gate. The leader's evaluator calls it after the auto-pull."""
        from engine.deploy.rollouts import ROLLOUT_ACTOR, Rollouts  # numpy: the evaluator's

        current = report if report is not None else self.report()
        acting = deploy_service.Deployments(
            self.store, self.workspace.models_dir, ROLLOUT_ACTOR, self._export_after_commit
        )
        return Rollouts(self.store, self.config, acting, self.abort).evaluate(current)

    def _hold_rollout(self, test: str, *, pause: bool, note: str | None) -> Change:
        _check_entry(note, None, test=test)
        found = self._rollout_test(test)
        evidence = self._evidence(found.line, found.name)
        return self._deploys().rollout_hold(found, pause=pause, note=note, evidence=evidence)

    def _rollout_test(self, test: str) -> Experiment:
        """The test named `test`, refused unless it has a rollout still going."""
        found = self.experiment(test)
        if found.rollout is None:
            raise BeastError(f"A/B test {test} has no rollout (it was started without --rollout)")
        if found.rollout.state not in ("running", "paused"):
            raise BeastError(f"the rollout of {test} is over ({found.rollout.state})")
        return found

    def rollback(
        self,
        version: str | None = None,
        *,
        model: str | None = None,
        note: str | None = None,
        expect: Expect | None = None,
        actor: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> Change:
        """Back to the production before the newest change, or to a named version.

        The line's health, firing alerts, running test's verdict and drift (one monitoring
        report, read first) are kept with the history row as its evidence. `actor` names an
        automatic caller (the automatic rollback), `evidence` the report it decided on.
        """
        _check_entry(note, expect, version=version)
        if actor is not None:
            acting = Engine(self.workspace, actor=actor)
            try:
                return acting.rollback(
                    version, model=model, note=note, expect=expect, evidence=evidence
                )
            finally:
                acting.close()
        line = self._line(model)
        if evidence is None:
            evidence = self._evidence(line)
        return self._deploys().rollback(
            line, version, note=note, expect=expect, verdict=_verdict(evidence), evidence=evidence
        )

    # -- replay and the deploy preflight --------------------------------------------------

    def replay(self, version: str, *, model: str | None = None, window: str = "7d") -> Replay:
        """Score a registered version on the labelled requests its line's production served
        within `window` (the most recent `replay.LIMIT`) and compare the two, paired
        (engine.monitoring.replay). Nothing is served or changed."""
        _check_names(version=version, model=model)
        target = self._replay_target(version, model)
        from engine.monitoring import replay as replays  # numpy and XGBoost: replays only

        return replays.replay(
            self.store, self.config, self.workspace.models_dir, target, window=window
        )

    def preflight(
        self,
        path: str | Path | None = None,
        *,
        version: str | None = None,
        model: str | None = None,
        traffic: float | None = None,
        ab_test: str | None = None,
        reference: str | Path | None = None,
        replayed: Replay | None = None,
    ) -> tuple[VersionRef, Preflight]:
        """The deployment checklist of a deploy (engine.deploy.preflight), judged on one
        read; a PATH is registered first (as the deploy would), nothing is deployed.
        `replayed`: a replay of the version, whose figures count as its validation set."""
        _check_names(version=version, model=model, ab_test=ab_test)
        bp = deploy_service.traffic_for(traffic, ab_test)
        target, _ = self._deploy_target(path, version, model, reference)
        from engine.deploy import preflight as checklist

        settings = self.config.line(target.line)
        metric = tasks.PRIMARY[settings.task]
        limits = self.config.thresholds
        now_ms = time.time_ns() // 1_000_000
        with self.store.read() as tx:
            baseline = tx.baselines.for_version(target.id)
            state = tx.deployments.state(target.line)
            leader = live_leader(tx.replicas.all(), now_ms)
        figures = baseline.figures() if baseline is not None else {}
        facts = checklist.Facts(
            line=target.line,
            version=target.name,
            metric=metric,
            metric_min=limits.auc_min if settings.binary else limits.accuracy_min,
            baseline_source=baseline.source if baseline is not None else None,
            baseline_detail=baseline.detail if baseline is not None else None,
            baseline=_primary_first(figures, metric),
            production=state.production.name if state is not None else None,
            share_bp=bp,
            ab_test=ab_test,
            leader=leader.id if leader is not None else None,
            replay_n=replayed.n if replayed is not None else 0,
            replay=_primary_first(replayed.comparison.candidate, metric) if replayed else (),
            replay_production=(
                _primary_first(replayed.comparison.control, metric) if replayed else ()
            ),
        )
        return target, checklist.check(facts)

    def _replay_target(self, version: str, model: str | None) -> VersionRef:
        """The version a replay scores: of `model`, else of the one line that has it."""
        if model is not None:
            self._line(model)  # an unknown line is refused first
        with self.store.read() as tx:
            found = {
                line: ref
                for line in tx.registry.line_names()
                if (ref := tx.registry.find_version(line, version)) is not None
            }
        if model is not None and model in found:
            return found[model]
        if model is not None and found:
            raise BeastError(f"{version} is a version of {', '.join(found)}, not of {model}")
        if len(found) == 1:
            return next(iter(found.values()))
        if not found:
            raise NotFound(f"no registered version {version}" + (f" of {model}" if model else ""))
        raise BeastError(f"{version} is a version of {', '.join(found)}: pass --model NAME")

    # -- alerts ---------------------------------------------------------------------------

    def alerts(self, resolved: int = 20) -> list[Alert]:
        """Every firing alert and the `resolved` newest resolved ones, newest first."""
        with self.store.read() as tx:
            return sorted(tx.alerts.recent(resolved), key=lambda a: -a.id)

    def acknowledge_alert(self, alert_id: int, note: str | None = None) -> Alert:
        """Record that `actor` saw alert `alert_id` (and why, `note`); the alert as stored.

        An acknowledged `srm` alert no longer blocks its test's promotion. Acknowledging
        again keeps the first acknowledgment (idempotent); an unknown id is NotFound.
        """
        text.check_optional("note", note, limit=text.MAX_NOTE_CHARS)
        with self.store.write() as tx:
            if tx.alerts.get(alert_id) is None:
                raise NotFound(f"no alert {alert_id} (see `beast alerts`)")
            tx.alerts.acknowledge(alert_id, at=utc_now(), by=self.actor, note=note)
            found = tx.alerts.get(alert_id)
        assert found is not None
        return found

    def _require_srm_acknowledged(self, found: Experiment) -> None:
        """Refuse to promote a test with an unacknowledged srm alert (firing or resolved):
        with a broken split every figure, the verdict included, is wrong — so --force does
        not override it."""
        from engine.monitoring import srm  # numpy: promote reads a report anyway

        if found.status != "running":
            return
        with self.store.read() as tx:
            alert = srm.blocking(tx, found)
            # A split no evaluation has seen yet (no engine evaluating, no `beast monitor`
            # since the traffic) has no alert to acknowledge: read it here too.
            live = srm.check(tx, self.config, found) if alert is None else None
        if alert is not None:
            raise Conflict(
                f"cannot promote {found.name}: sample-ratio mismatch alert {alert.id} is not "
                f"acknowledged (check the split, then `beast alerts ack {alert.id}`)"
            )
        if live is not None and live.mismatch and not live.acknowledged:
            raise Conflict(
                f"cannot promote {found.name}: sample-ratio mismatch ({live.noun} "
                f"{live.control}/{live.candidate} against a {live.share:.0%} share, "
                f"p = {live.p:.2g}); `beast monitor` raises its srm alert, then check the split "
                "and `beast alerts ack ID`"
            )

    # -- retraining -----------------------------------------------------------------------

    def retrain_check(self, model: str | None = None) -> TriggerReport:
        """Each retraining trigger of a line with its figure, and whether any fires."""
        return self._retrain().check(self._line(model))

    def retrain_data(self, model: str | None = None) -> tuple[str, str, list[Source]]:
        """(label column, time column, each file of `data/` with the rows it would give a
        retraining job now, or why it is skipped) for a line."""
        line = self._line(model)
        return self._retrain().data_files(line, self.config.line(line))

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
        line = self._line(model)
        return self._retrain().start(line, force=force, deploy=deploy, trigger=trigger)

    def retrain_if_due(self, model: str | None = None) -> Job | None:
        """The scheduler's tick: reap lost jobs, then start a job on a line whose trigger
        fires, unless one runs or the last one ended within `cooldown_minutes`.

        Reads one snapshot per line and writes only when it starts something. With several
        lines and no `model`, every due line gets a job; the first one started is returned.
        """
        lines = [self._line(model)] if model is not None else self.lines()
        return self._retrain().start_due(lines)

    def reap_jobs(self) -> list[Job]:
        """Fail jobs whose worker was lost (lease expired) or overran its timeout."""
        return self._retrain().reap()

    def jobs(self, limit: int = 20, model: str | None = None) -> list[Job]:
        """The newest jobs first (of one line with `model`)."""
        line = self._line(model) if model is not None else None
        return self._retrain().recent(limit, line)

    def job(self, job_id: int) -> Job:
        """Job `job_id`, or NotFound."""
        return self._retrain().job(job_id)

    def job_log(self, job_id: int, *, times: bool = False) -> list[str]:
        """A job's log lines, oldest first (with `times`, each prefixed with its UTC time)."""
        return self._retrain().log(job_id, times=times)

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
        return self._retrain().wait(job_id, timeout_s, on_progress)

    def _retrain(self) -> RetrainService:
        # Imported here: `beast status` cold (≤ 0.4 s) need not load retraining's modules
        # (about 10 ms of them). Made per call: it carries `actor`, which may change.
        from engine.retrain.service import RetrainService

        return RetrainService(self.store, self.config.retrain, self.workspace, self.actor)

    # -- daemon ---------------------------------------------------------------------------

    def leader(self) -> Replica | None:
        """The engine replica that leads now (engine.store.replicas), or None when none is
        running or the last leader stopped being seen."""
        with self.store.read() as tx:
            found = tx.replicas.all()
        return live_leader(found, time.time_ns() // 1_000_000)

    def engine_pid(self) -> int | None:
        """The pid of the `beast engine` serving this workspace, or None when none runs."""
        return running_pid(self.workspace)

    # -- moving the state -----------------------------------------------------------------

    def migrate_to(self, url: str) -> Migrated:
        """Copy this workspace's SQLite state into the empty PostgreSQL database at `url` and
        verify it there, `beast doctor`'s invariants included, in one transaction
        (engine/store/postgres/transfer.py). The workspace goes on using beast.db until its
        store URL is set."""
        self.workspace.require()
        self.config  # noqa: B018 - a bad config.toml is refused by every command
        if not url.startswith(STORE_URL_SCHEMES):
            # Not echoed: a URL of another scheme may hold a password too.
            raise BeastError("--to takes a PostgreSQL URL: postgresql://user@host:5432/db")
        configured = store_url(self.workspace.root)
        try:
            from engine.store.postgres import transfer  # the postgresql extra
            from engine.store.postgres.connection import redact
        except ImportError as exc:
            raise BeastError(
                f"migrating to PostgreSQL needs its driver ({exc.name}): "
                "pip install 'beast-mode[postgresql]'"
            ) from None
        if configured and configured != url:
            raise BeastError(
                f"this workspace's state is already in PostgreSQL "
                f"({redact(configured)}, {STORE_URL_ENV} or [store] url): migrate "
                "copies its SQLite beast.db; unset the URL to copy that"
            )
        from engine.deploy import invariants  # `beast doctor`'s checks, run on the copy

        def doctor(tx: Tx) -> tuple[str, ...]:
            return invariants.check(tx, self.workspace).problems

        return transfer.migrate(
            self.workspace.db_path, self.workspace.models_dir, url, check=doctor
        )

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

    def _registry(self) -> Registry:
        return Registry(
            lambda: self.store,
            self.workspace.models_dir,
            lambda: self.config.registry,
            self.actor,
            lambda line: self.config.line(line),  # noqa: PLW0108 - config read when needed
        )

    def _deploys(self) -> deploy_service.Deployments:
        return deploy_service.Deployments(
            self.store, self.workspace.models_dir, self.actor, self._export_after_commit
        )

    def _deploy_target(
        self,
        path: str | Path | None,
        version: str | None,
        model: str | None,
        reference: str | Path | None = None,
    ) -> tuple[VersionRef, str | None]:
        """The version a deploy puts into service — the file at `path` registered (with its
        `reference`), or `version` — and the reference file its registration kept."""
        if path is not None:
            reg = self.register(path, version=version, model=model, reference=reference)
            if reg.version is None:  # pragma: no cover - register refuses unnamed artifacts
                raise BeastError("the file has no version name: pass --version V")
            return reg.version, reg.reference
        if version is None:
            raise BeastError("deploy needs a model file PATH or --version V of a registered one")
        line = self._line(model)
        with self.store.read() as tx:
            return tx.registry.get_version(line, version), None

    def _judge(self, found: Experiment) -> deploy_service.Judged:
        """A running test's verdict and the evidence it was read with (one report)."""
        evidence = self._evidence(found.line, found.name)
        test = evidence["test"]
        if test is None:  # it ended meanwhile: the promotion's planner refuses it
            judged = self.monitoring.experiment(found).verdict
            return deploy_service.Judged(judged.outcome, judged.reason, evidence)
        return deploy_service.Judged(test["verdict"], test["reason"], evidence)

    def _evidence(self, line: str, test: str | None = None) -> dict[str, Any]:
        """The figures a change of `line` is decided on, from one monitoring report read now
        (engine.monitoring.evidence): health, firing alerts, the test's verdict, drift."""
        from engine.monitoring.evidence import evidence_of  # numpy: changes pay, not status

        return evidence_of(self.report(model=line), line, test=test)

    def _export_after_commit(self) -> str:
        """Rewrite history.json; the change is committed already, so a failure only warns."""
        return history.export_or_warn(self.export_history, self.workspace.history_export_path)

    def export_history(self) -> None:
        """Rewrite deployments/history.json from the history table (atomic, never stale)."""

        def read() -> str:
            with self.store.read() as tx:
                return tx.history.export_text()

        history.write_export(self.workspace.history_export_path, read)


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


def _rollout_steps(
    rollout: Sequence[float] | None, traffic: float | None, ab_test: str | None
) -> tuple[int, ...] | None:
    """A deploy's rollout steps in basis points (None without `--rollout`)."""
    if rollout is None:
        return None
    if ab_test is None:
        raise BeastError("--rollout needs --ab-test NAME (a rollout is a test's candidate)")
    steps = deploy_rules.rollout_steps(rollout)
    deploy_rules.rollout_start_bp(steps, traffic)
    return steps


def _verdict(evidence: Mapping[str, Any]) -> str | None:
    """The verdict of the test in `evidence` (None without a running test)."""
    test = evidence.get("test")
    return str(test["verdict"]) if isinstance(test, Mapping) else None


def _primary_first(figures: Mapping[str, float], metric: str) -> tuple[tuple[str, float], ...]:
    """Metrics as pairs, the line's primary one first (a checklist figure names it first)."""
    return tuple(sorted(figures.items(), key=lambda kv: kv[0] != metric))


def _health(tx: Tx, states: list[LineState]) -> str:
    """Worst firing alert of what serves; "no data" before any prediction was logged.

    Two reads, no numpy, so `beast status` stays fast (monitoring keeps the alerts current;
    `beast monitor` shows the figures behind them).
    """
    serving = [(s.line, v.name) for s in states for v in (s.production, s.candidate) if v]
    if not serving:
        return "no data"
    worst = tx.alerts.worst_firing(serving)
    if worst is not None:
        return worst
    ids = [v.id for s in states for v in (s.production, s.candidate) if v]
    return "healthy" if tx.rollups.any_logged(ids) else "no data"


__all__ = ["Engine", "ModelsReport", "VersionRef"]
