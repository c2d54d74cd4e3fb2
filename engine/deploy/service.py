"""The deploy service: every change of what serves, as one write transaction with its history row.

A change reads the line's state inside its write transaction, asks a pure rule
(engine.deploy.rules) for a plan, and applies it — the test it ends or starts, the alias of a
winner, the history row and the new state — before the transaction commits. The history export
(deployments/history.json) is rewritten after the commit by the `export` it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.clock import utc_now
from engine.core.errors import BeastError, StateChanged
from engine.core.naming import check_name, winner_alias
from engine.core.records import (
    BASIS_POINTS,
    Change,
    Deployment,
    Ending,
    Expect,
    Experiment,
    HistoryEntry,
    LineState,
    Rollout,
    Snapshot,
    Status,
    VersionRef,
    percent,
)
from engine.deploy import rules
from engine.registry import catalog, fetch
from engine.store.base import Store, Tx

Planner = Callable[[Tx, LineState | None], rules.Plan]
Rerun = Callable[[HistoryEntry | None, Expect | None], str | None]
Evidence = Mapping[str, Any]  # the figures a change was decided on (a JSON object)


@dataclass(frozen=True)
class Judged:
    """A running test's verdict as read for a decision, and the figures it was read with."""

    # engine.monitoring.abstats.OUTCOMES: "candidate wins" | "control wins" | "no difference"
    # | "not enough data" (always valid: read at any time, its error stays at ab_alpha)
    outcome: str
    reason: str
    evidence: Evidence | None = None


Judge = Callable[[Experiment], Judged]


def traffic_for(traffic: float | None, ab_test: str | None) -> int:
    """The candidate's share a deploy asks for, in basis points (0: production at 100%).

    Refuses a test without a share, and a share below 100% without a test.
    """
    if ab_test is not None:
        check_name("A/B test", ab_test)
    if ab_test is not None and traffic is None:
        raise BeastError("--ab-test needs --traffic N (the candidate's share, 1–99%)")
    if traffic is not None and ab_test is None and traffic != 100:
        raise BeastError(
            f"--traffic {traffic:g} needs --ab-test NAME (a candidate below 100% is a test)"
        )
    return rules.traffic_bp(traffic) if ab_test is not None and traffic is not None else 0


@dataclass(frozen=True)
class Deployments:
    """Deploy, promote, abort and roll back the lines of one store, acting as `actor`."""

    store: Store
    models_dir: Path
    actor: str
    export: Callable[[], str]  # rewrites history.json; a warning to append, or ""

    def deploy(
        self,
        target: VersionRef,
        *,
        bp: int,
        ab_test: str | None,
        note: str | None,
        expect: Expect | None,
        also: Callable[[Tx], None] | None = None,
    ) -> Change:
        """`target` to production at 100%, or with a test name as an A/B candidate at `bp`.

        `also` writes with the change, in its transaction (a baseline given with the deploy)."""

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            if also is not None:
                also(tx)
            if ab_test is None:
                return rules.plan_deploy(state, target)
            return rules.plan_ab_start(
                state, target, bp, ab_test, tx.deployments.experiment(ab_test)
            )

        return self.mutate(target.line, expect, note, planner)

    def promote(
        self,
        found: Experiment,
        judge: Judge,
        *,
        force: bool,
        note: str | None,
        expect: Expect | None,
    ) -> Change:
        """The candidate of a running test becomes production, following the test's verdict:
        only "candidate wins" promotes unless `force` (then recorded as forced). The verdict
        and the figures `judge` read it with are kept with the test and the history row."""
        test = found.name
        verdict_text = "forced"
        judged: Judged | None = None
        if found.status == "running":
            judged = judge(found)
            outcome, reason = judged.outcome, judged.reason
            verdict_text = f"verdict: {outcome} ({reason})"
            if outcome != "candidate wins" and not force:
                raise BeastError(
                    f"cannot promote {test}: the verdict is {outcome} ({reason}), and only"
                    ' "candidate wins" promotes; pass --force to promote anyway'
                    " (recorded as forced)"
                )
            force = force and outcome != "candidate wins"

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            current = tx.deployments.experiment(test)
            assert current is not None
            if state is None:
                raise BeastError(f"nothing is deployed on {current.line}")
            plan = rules.plan_promote(state, current, forced=force)
            return dataclasses.replace(
                plan,
                end_test=(test, "promoted", verdict_text if not force else "forced"),
                verdict=judged.outcome if judged else None,
                evidence=judged.evidence if judged else None,
            )

        return self.mutate(found.line, expect, note, planner)

    def abort(
        self,
        found: Experiment,
        *,
        reason: str,
        note: str | None,
        expect: Expect | None,
        ending: Ending = "aborted",
        verdict: str | None = None,
        evidence: Evidence | None = None,
    ) -> Change:
        """End a running test: the candidate goes to 0%, production back to 100%; the test
        keeps `ending` and the `verdict` read at the time, the history row `evidence`."""
        test = found.name

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            current = tx.deployments.experiment(test)
            assert current is not None
            if state is None:
                raise BeastError(f"nothing is deployed on {current.line}")
            plan = rules.plan_abort(state, current, reason, ending)
            return dataclasses.replace(plan, verdict=verdict, evidence=evidence)

        return self.mutate(found.line, expect, note, planner)

    def start_rollout(
        self,
        target: VersionRef,
        *,
        steps: tuple[int, ...],
        ab_test: str,
        note: str | None,
        expect: Expect | None,
        also: Callable[[Tx], None] | None = None,
    ) -> Change:
        """`target` as the candidate of test `ab_test` at the rollout's first step; the
        rollout (`steps`, basis points) starts with the test, in its transaction."""

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            if also is not None:
                also(tx)
            plan = rules.plan_ab_start(
                state, target, steps[0], ab_test, tx.deployments.experiment(ab_test)
            )
            return dataclasses.replace(
                plan, message=f"{plan.message}; rollout {_steps_text(steps)}"
            )

        def with_rollout(tx: Tx) -> None:
            now = utc_now()
            tx.rollouts.put(ab_test, Rollout(steps, 0, "running", now, now))

        return self.mutate(target.line, expect, note, planner, after=with_rollout)

    def rollout_step(
        self, found: Experiment, judged: Judged, seen: Rollout, *, note: str | None
    ) -> Change:
        """The rollout of `found`, `seen` at the step whose gates passed, moves its candidate
        to the next share, or, at the last (100%), promotes it on the verdict `judged` (the
        rollout completes). The gates' figures are the history row's evidence. A rollout
        paused, resumed or moved since it was judged is refused (StateChanged)."""

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            current = _running_test(tx, found.name, state)
            assert state is not None
            if current.rollout != seen:
                raise StateChanged(f"the rollout of {found.name} changed since it was judged")
            plan, after = rules.plan_rollout_step(state, current, utc_now())
            tx.rollouts.put(found.name, after)
            if plan.action == "rollout_step":
                tx.rollouts.move_share(found.name, plan.candidate_bp)
                return dataclasses.replace(plan, evidence=judged.evidence)
            why = f"rollout completed: gates passed (verdict: {judged.outcome}; {judged.reason})"
            return dataclasses.replace(
                plan,
                end_test=(found.name, "promoted", why),
                verdict=judged.outcome,
                evidence=judged.evidence,
            )

        return self.mutate(found.line, None, note, planner)

    def rollout_hold(
        self, found: Experiment, *, pause: bool, note: str | None, evidence: Evidence | None
    ) -> Change:
        """Pause the rollout of `found` (it holds its share) or resume it (its step begins
        again); the history row keeps `evidence`."""

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            current = _running_test(tx, found.name, state)
            assert state is not None
            plan, after = rules.plan_rollout_hold(state, current, pause=pause, now=utc_now())
            tx.rollouts.put(found.name, after)
            return dataclasses.replace(plan, evidence=evidence)

        return self.mutate(found.line, None, note, planner)

    def rollback(
        self,
        line: str,
        version: str | None,
        *,
        note: str | None,
        expect: Expect | None,
        verdict: str | None = None,
        evidence: Evidence | None = None,
    ) -> Change:
        """Back to the production before the newest change, or to a named version; a test
        it aborts keeps the `verdict` read at the time, the history row `evidence`."""

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            if state is None:
                raise BeastError(f"nothing is deployed on {line}: nothing to roll back")
            where = rules.rollback_target(state, _undo_stack(tx, line), version)
            target = tx.registry.get_version(line, where.production)
            plan = rules.plan_rollback(state, target, where.undoes)
            ended = verdict if plan.end_test is not None else None
            return dataclasses.replace(plan, verdict=ended, evidence=evidence)

        return self.mutate(line, expect, note, planner, rerun=_rollback_rerun)

    def shadow_start(
        self, target: VersionRef, *, bp: int, note: str | None, expect: Expect | None
    ) -> Change:
        """Score `target` on `bp` of its line's production requests without serving it."""

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            running = tx.shadows.running(target.line)
            catalog.require_intact(tx, self.models_dir, target)
            return rules.plan_shadow_start(state, target, bp, running[0] if running else None)

        return self.mutate(target.line, expect, note, planner)

    def shadow_end(self, line: str, *, note: str | None, expect: Expect | None) -> Change:
        """End `line`'s running shadow."""

        def planner(tx: Tx, state: LineState | None) -> rules.Plan:
            running = tx.shadows.running(line)
            return rules.plan_shadow_end(state, line, running[0] if running else None)

        return self.mutate(line, expect, note, planner)

    def rollback_target(self, line: str, version: str | None) -> str:
        """The production a rollback would go to now, or refuse why not."""
        with self.store.read() as tx:
            state = tx.deployments.state(line)
            if state is None:
                raise BeastError(f"nothing is deployed on {line}: nothing to roll back")
            return rules.rollback_target(state, _undo_stack(tx, line), version).production

    def mutate(
        self,
        line: str,
        expect: Expect | None,
        note: str | None,
        planner: Planner,
        *,
        rerun: Rerun | None = None,
        after: Callable[[Tx], None] | None = None,
    ) -> Change:
        """Plan and apply one change of `line` in one write transaction, then export;
        `after` writes with it, once the change is applied (what refers to a test it starts)."""
        with self.store.write() as tx:
            state = tx.deployments.state(line)
            if rerun is not None:
                last = tx.history.last(line)
                done = rerun(last, expect)
                if done is not None:
                    return Change(last, done, changed=False)
            _check_expect(state, expect)
            plan = planner(tx, state)
            _require_newly_deployed_intact(tx, self.models_dir, state, plan)
            entry = apply(tx, line, state, plan, note, actor=self.actor, now=utc_now())
            if after is not None:
                after(tx)
        return Change(entry, plan.message + self.export())


def apply(
    tx: Tx,
    line: str,
    state: LineState | None,
    plan: rules.Plan,
    note: str | None,
    *,
    actor: str,
    now: str,
) -> HistoryEntry:
    """Write `plan` inside `tx`: the test it ends or starts (an ended one with its verdict and
    ending), the winner's alias, the history row with its evidence and the line's new state
    (whose revision is that row)."""
    if plan.end_test is not None:
        name, status, reason = plan.end_test
        _end_rollout(tx, name, plan.ending or "aborted", now)
        tx.deployments.end_experiment(
            name,
            status=status,
            at=now,
            actor=actor,
            reason=reason,
            forced=plan.forced,
            verdict=plan.verdict,
            ending=plan.ending,
        )
    if plan.action == "promote" and plan.history_experiment:
        catalog.add_alias(tx, line, winner_alias(plan.history_experiment), plan.production, actor)
    if plan.start_test is not None:
        assert plan.candidate is not None
        tx.deployments.start_experiment(
            plan.start_test,
            control=plan.production,
            candidate=plan.candidate,
            traffic_bp=plan.candidate_bp,
            at=now,
            actor=actor,
        )
    if plan.start_shadow is not None:
        assert plan.version is not None
        shadowed = tx.registry.get_version(line, plan.version)
        tx.shadows.start(line, shadowed.id, plan.start_shadow, at=now, actor=actor)
    if plan.end_shadow is not None:
        tx.shadows.end(plan.end_shadow, at=now, actor=actor)
    to_state = Snapshot(
        plan.production.name,
        plan.candidate.name if plan.candidate else None,
        plan.candidate_bp,
        plan.experiment,
    )
    entry = tx.history.append(
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
        evidence=plan.evidence,
    )
    tx.deployments.put_state(_next_state(line, state, plan, entry.id, actor=actor, now=now))
    return entry


def _end_rollout(tx: Tx, test: str, ending: Ending, now: str) -> None:
    """A test's rollout ends with it: completed when promoted, rolled back when pulled."""
    found = tx.deployments.experiment(test)
    if found is not None and found.rollout is not None:
        tx.rollouts.put(test, rules.rollout_ended(found.rollout, ending, now))


def _next_state(
    line: str, state: LineState | None, plan: rules.Plan, revision: int, *, actor: str, now: str
) -> LineState:
    """The line's state after `plan`: an arm that stays keeps its since/by."""
    same_production = state is not None and state.production.id == plan.production.id
    same_candidate = (
        state is not None
        and state.candidate is not None
        and plan.candidate is not None
        and state.candidate.id == plan.candidate.id
    )
    kept = state if same_candidate else None
    return LineState(
        line=line,
        production=plan.production,
        production_since=state.production_since if same_production and state else now,
        production_by=state.production_by if same_production and state else actor,
        revision=revision,
        candidate=plan.candidate,
        candidate_bp=plan.candidate_bp,
        candidate_since=(kept.candidate_since if kept else now) if plan.candidate else None,
        candidate_by=(kept.candidate_by if kept else actor) if plan.candidate else None,
        # The schema ties a candidate to its test: a test's start or a change within it (a
        # rollout's step, pause, resume) leaves one, and a change that leaves what serves as it
        # is (a shadow's start or end) keeps it.
        experiment=plan.experiment,
    )


def _running_test(tx: Tx, test: str, state: LineState | None) -> Experiment:
    """The test named `test` as it stands in this transaction, on a line with a deployment."""
    current = tx.deployments.experiment(test)
    if current is None:
        raise BeastError(f"no A/B test named {test}")
    if state is None:
        raise BeastError(f"nothing is deployed on {current.line}")
    return current


def _steps_text(steps: tuple[int, ...]) -> str:
    return ",".join(f"{percent(bp):g}" for bp in steps) + "%"


def _undo_stack(tx: Tx, line: str) -> list[HistoryEntry]:
    return rules.undo_stack(tx.history.entries(line))


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
    tx: Tx, models_dir: Path, state: LineState | None, plan: rules.Plan
) -> None:
    """Refuse a change that puts a version with a missing or altered artifact into service.

    What already serves is loaded in memory and keeps serving (its alert says the file is
    gone); only versions this change starts serving are checked.
    """
    serving = {v.id for v in (state.production, state.candidate) if v} if state else set()
    for ref in (plan.production, plan.candidate):
        if ref is not None and ref.id not in serving:
            catalog.require_intact(tx, models_dir, ref)


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


def status(store: Store, models_dir: Path, health: Callable[[Tx, list[LineState]], str]) -> Status:
    """What serves on every line (a row per arm), the A/B tests, and `health` of what serves."""
    with store.read() as tx:
        lines = tx.registry.line_names()
        states = tx.deployments.states()
        experiments = tx.deployments.experiments()
        # Present: in this host's models/, or kept by the store for every replica to fetch.
        present = {
            v.artifact_id: (
                models_dir / (relative := tx.registry.artifact_file(v.artifact_id))
            ).is_file()
            or fetch.kept_elsewhere(tx, models_dir, relative, v.sha256)
            for s in states
            for v in (s.production, s.candidate)
            if v
        }
        baselines = tx.baselines.sources(
            [v.id for s in states for v in (s.production, s.candidate) if v]
        )
        healthy = health(tx, states)
        shadows = tuple(tx.shadows.running())
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
                present[state.production.artifact_id],
                baselines.get(state.production.id),
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
                    present[state.candidate.artifact_id],
                    baselines.get(state.candidate.id),
                )
            )
    return Status(
        deployments=tuple(rows),
        experiments=tuple(experiments),
        lines=tuple(lines),
        revisions={s.line: s.revision for s in states},
        health=healthy,
        shadows=shadows,
    )
