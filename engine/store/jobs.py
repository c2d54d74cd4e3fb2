"""The jobs repository: retraining jobs, their logs and leases; and what retraining reads.

The rules (when a job joins another, what a lease is worth, how a log line is cut) live in
engine/retrain/jobs.py; a repository stores and finds. Times of day are UTC ISO strings;
`lease_expires` and `deadline` are readings of CLOCK_MONOTONIC on the boot named `boot_id`,
all given by the caller, so that a backend needs no clock of its own.
"""

from __future__ import annotations

from typing import Protocol

from engine.core.records import Job, JobLease


class JobRepo(Protocol):
    """Retraining jobs and their log lines, in one transaction.

    A line has at most one active (queued or running) job: the store refuses a second.
    """

    def get(self, job_id: int) -> Job:
        """Job `job_id`, or NotFound."""
        ...

    def lease(self, job_id: int) -> JobLease:
        """Job `job_id`'s process, lease and deadline, or NotFound."""
        ...

    def recent(self, limit: int, line: str | None = None) -> list[Job]:
        """The newest `limit` jobs (of `line`, or all), newest first: by id, never by times."""
        ...

    def active(self, line: str) -> Job | None:
        """The line's queued or running job, or None."""
        ...

    def last_finished(self, line: str) -> Job | None:
        """The line's newest succeeded or failed job, or None."""
        ...

    def create(
        self,
        *,
        line: str,
        trigger: str,
        message: str,
        force: bool,
        deploy: bool,
        at: str,
        actor: str,
        boot_id: str,
        lease_expires: float,
        timeout_s: float,
    ) -> int:
        """A new queued job; its id."""
        ...

    def join(self, job_id: int, *, trigger: str, deploy: bool) -> None:
        """Set an active job's triggers to `trigger`; `deploy` True asks for a deploy too
        (never takes back a wish already recorded)."""
        ...

    def claim(
        self,
        job_id: int,
        *,
        at: str,
        pid: int,
        pgid: int,
        boot_id: str,
        now: float,
        lease_expires: float,
        message: str,
    ) -> bool:
        """Mark a queued job running in worker `pid`, its deadline `now` plus its timeout;
        False when it is not queued any more."""
        ...

    def renew(self, job_id: int, lease_expires: float) -> bool:
        """Move a running job's lease; False when it is not running any more."""
        ...

    def set_progress(self, job_id: int, progress: float, message: str) -> None:
        """A running job's progress (0–1) and message (a job not running is left alone)."""
        ...

    def set_version(self, job_id: int, version: str) -> None:
        """The version name a running job writes (a job not running is left alone)."""
        ...

    def set_input_hash(self, job_id: int, input_hash: str) -> None:
        """The hash of what a running job trains on, rows and settings (a job not running is
        left alone)."""
        ...

    def last_trained(self, line: str) -> tuple[str, str] | None:
        """(input hash, version) of the line's newest succeeded job that registered a version
        and recorded its input hash, or None."""
        ...

    def finish(
        self,
        job_id: int,
        *,
        status: str,
        at: str,
        message: str,
        version: str | None,
        deployed: bool,
        reason: str | None,
        error: str | None,
        expect_running: bool,
    ) -> bool:
        """End a running job (or a queued one too, without `expect_running`) as `status`;
        success sets its progress to 1, a `version` of None keeps the one recorded. False
        when the job was not in such a state (something else ended it first)."""
        ...

    def append_log(self, job_id: int, at: str, text: str) -> None:
        """Add a line at the end of a job's log."""
        ...

    def log(self, job_id: int) -> list[tuple[str, str]]:
        """A job's log as (UTC time, line), oldest first."""
        ...

    def expired(self, boot_id: str, now: float, line: str | None = None) -> list[JobLease]:
        """Active jobs (of `line`, or all) whose lease is from another boot or ended before
        `now`."""
        ...

    def overdue(self, boot_id: str, now: float) -> list[JobLease]:
        """Running jobs of this boot whose deadline is before `now`."""
        ...


class RetrainInputRepo(Protocol):
    """What retraining reads of other domains' state: narrow questions, one answer each."""

    def production_registered_at(self, line: str) -> str | None:
        """When the artifact serving as the line's production was registered, or None."""
        ...

    def labelled_since(self, line: str, minute: int) -> int:
        """Labelled predictions of the line from minute `minute` (since the epoch) on, from
        the rollups (an hour compacted from minutes counts whole when it holds `minute`)."""
        ...

    def critical_alerts(self, line: str, version: str) -> list[str]:
        """The messages of the version's firing critical alerts, oldest first."""
        ...

    def feature_names(self, line: str) -> tuple[str, ...] | None:
        """The line's feature names in model order, or None when it has none (or no line)."""
        ...

    def version_names(self, line: str) -> list[str]:
        """Every version name of the line (aliases included), oldest first."""
        ...
