"""The retraining service: triggers, jobs and their worker processes over one store.

It takes what it uses — a `Store`, the `[retrain]` settings, the workspace (where workers
start and models are written), who acts, and the monotonic clock — never the facade. The
facade's retraining methods delegate here with the model line already resolved; the daemon's
scheduler reaches it through them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.config import LineSettings, RetrainSettings
from engine.core.errors import BeastError, StateBusy
from engine.core.records import Job
from engine.core.workspace import Workspace
from engine.retrain import jobs, triggers, workers
from engine.store.base import Store

if TYPE_CHECKING:
    from engine.retrain.data import Source

POLL_S = 0.2  # `wait`'s pace, a progress bar's; each poll is one indexed read
REAP_EVERY_S = 1.0  # `wait` reaps this often, so a dead worker is seen once its lease ends


@dataclass(frozen=True)
class RetrainService:
    """Retraining on one workspace's store, acting as `actor`."""

    store: Store
    settings: RetrainSettings
    workspace: Workspace
    actor: str
    clock: Callable[[], float] = jobs.monotonic

    def check(self, line: str) -> triggers.TriggerReport:
        """Each retraining trigger of `line` with its figure, and whether any fires."""
        with self.store.read() as tx:
            return triggers.evaluate(tx, line, self.settings)

    def data_files(self, line: str, columns: LineSettings) -> tuple[str, str, list[Source]]:
        """(label column, time column, each data file with what it would contribute now)."""
        # numpy and pandas: only `beast retrain --check` pays them, not every job listing
        from engine.retrain import data

        with self.store.read() as tx:
            found = data.Columns.read(tx, line, columns)
        return found.label, found.time, data.inspect(self.workspace.data_dir, found)

    def start(self, line: str, *, force: bool, deploy: bool, trigger: str) -> Job:
        """Queue a job on `line` (or join its active one) and start its worker; at once."""
        settings = self.settings
        with self.store.write() as tx:
            workers.reap(tx.jobs, self.workspace.models_dir, line)
            report = triggers.evaluate(tx, line, settings)
            if not force and not report.fires and report.active_job is None:
                raise BeastError(f"no retraining trigger fires for {line}: pass --force to train")
            job_id, joined = jobs.create_or_join(
                tx.jobs,
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
                jobs.append_log(tx.jobs, job_id, f"triggers firing: {firing or 'none (forced)'}")
        if not joined:
            self._launch(job_id)
        return self.job(job_id)

    def _launch(self, job_id: int) -> None:
        try:
            workers.launch(self.workspace.root, job_id)
        except OSError as exc:
            with self.store.write() as tx:
                jobs.finish(
                    tx.jobs,
                    job_id,
                    status="failed",
                    error=f"cannot start the worker process: {exc}",
                    expect_running=False,
                )

    def start_due(self, lines: list[str]) -> Job | None:
        """The scheduler's tick over `lines`: reap, then start a job on each line whose
        trigger fires, unless one runs or the last ended within `cooldown_minutes`; the
        first job started, or None. One snapshot per line; a write only to start a job."""
        self.reap()
        started: Job | None = None
        for line in lines:
            report = self._due(line)
            if report is None or not report.fires:
                continue
            names = "+".join(t.name for t in report.triggers if t.fires)
            try:
                job = self.start(line, force=False, deploy=False, trigger=names)
            except BeastError:  # the state moved between the snapshot and the write
                continue
            started = started or job
        return started

    def _due(self, line: str) -> triggers.TriggerReport | None:
        """The line's triggers, from one snapshot; None while a job runs on it or its
        cooldown lasts."""
        with self.store.read() as tx:
            if tx.jobs.active(line) is not None:
                return None
            if jobs.finished_within(tx.jobs, line, self.settings.cooldown_minutes * 60):
                return None
            return triggers.evaluate(tx, line, self.settings)

    def reap(self) -> list[Job]:
        """Fail jobs whose worker was lost (lease expired) or overran its timeout."""
        with self.store.read() as tx:
            if not jobs.lost(tx.jobs) and not jobs.overdue(tx.jobs, workers.DEADLINE_GRACE_S):
                return []
        with self.store.write() as tx:
            failed = workers.reap(tx.jobs, self.workspace.models_dir)
            return [tx.jobs.get(job_id) for job_id in failed]

    def recent(self, limit: int, line: str | None) -> list[Job]:
        """The newest jobs first (of `line`, or all)."""
        with self.store.read() as tx:
            return tx.jobs.recent(limit, line)

    def job(self, job_id: int) -> Job:
        """Job `job_id`, or NotFound."""
        with self.store.read() as tx:
            return tx.jobs.get(job_id)

    def log(self, job_id: int, *, times: bool = False) -> list[str]:
        """A job's log lines, oldest first (with `times`, each prefixed with its UTC time)."""
        with self.store.read() as tx:
            return jobs.log_lines(tx.jobs, job_id, times=times)

    def wait(
        self, job_id: int, timeout_s: float, on_progress: Callable[[Job], None] | None = None
    ) -> Job:
        """Poll a job until it finishes or `timeout_s` passes, reporting each change; reaps
        on the way, so a dead worker is reported failed once its lease expires."""
        deadline = self.clock() + timeout_s
        seen: tuple[str, float, str] | None = None
        next_reap = 0.0
        while True:
            job = self.job(job_id)
            state = (job.status, job.progress, job.message)
            if state != seen and on_progress is not None:
                on_progress(job)
            seen = state
            now = self.clock()
            if job.finished or now >= deadline:
                return job
            if now >= next_reap:
                with contextlib.suppress(StateBusy):  # a busy moment: reap at the next poll
                    self.reap()
                next_reap = now + REAP_EVERY_S
            time.sleep(min(POLL_S, max(0.0, deadline - now)))
