"""Retraining jobs: their lifecycle rules, over the jobs repository (engine.store.jobs).

Lifecycle: `queued` (created by `create_or_join`) → `running` (claimed by its worker process)
→ `succeeded` or `failed`. A job holds a lease on CLOCK_MONOTONIC, which on Linux is one clock
for every process of a boot (wall-clock jumps do not move it); the boot id stored beside it
makes a lease from an earlier boot expire. The worker renews the lease; a job whose lease ran
out is failed by `expire` ("worker lost"). The store keeps one queued or running job per
line, so a second trigger joins the job that runs.

Every function here runs inside the caller's transaction, on its `tx.jobs`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from engine.core.clock import utc_now
from engine.core.records import JOB_FINISHED as FINISHED
from engine.core.records import Job, JobLease
from engine.store.jobs import JobRepo

__all__ = [  # Job's home is engine.core.records (the store returns it); it is re-exported here
    "ACTIVE",
    "CLAIM_WINDOW_S",
    "FINISHED",
    "MAX_LOG_CHARS",
    "Job",
    "JobLease",
    "append_log",
    "boot_id",
    "claim",
    "create_or_join",
    "finish",
    "finished_within",
    "log_lines",
    "lost",
    "monotonic",
    "no_new_data",
    "overdue",
    "record_input",
    "renew",
    "set_progress",
    "timed_out",
]

ACTIVE = ("queued", "running")
_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
MAX_LOG_CHARS = 2000
# A new worker must claim its job within this long (or its lease, if longer): Python and
# numpy start slowly on a loaded machine, and a worker runs at nice 10.
CLAIM_WINDOW_S = 30.0


def boot_id() -> str:
    """This boot's id: a monotonic reading means nothing across a reboot."""
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


def monotonic() -> float:
    """CLOCK_MONOTONIC (system-wide on Linux), the clock leases and deadlines use."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def create_or_join(
    repo: JobRepo,
    line: str,
    *,
    trigger: str,
    force: bool,
    deploy: bool,
    actor: str,
    timeout_s: float,
    lease_s: float,
) -> tuple[int, bool]:
    """A new queued job, or the line's active one joined; (job id, joined).

    Joining adds the trigger's name and ORs the deploy wish into the running job (its worker
    reads the flag when it judges the new model), so what a second caller asked for counts.
    """
    current = repo.active(line)
    if current is not None:
        triggers = current.trigger.split(", ")
        joined = ", ".join([*triggers, trigger] if trigger not in triggers else triggers)
        repo.join(current.id, trigger=joined, deploy=deploy)
        append_log(repo, current.id, f"joined by trigger {trigger} ({actor})")
        return current.id, True
    job_id = repo.create(
        line=line,
        trigger=trigger,
        message="waiting for its worker",
        force=force,
        deploy=deploy,
        at=utc_now(),
        actor=actor,
        boot_id=boot_id(),
        lease_expires=monotonic() + max(lease_s, CLAIM_WINDOW_S),
        timeout_s=timeout_s,
    )
    append_log(repo, job_id, f"queued by {actor} (trigger {trigger})")
    return job_id, False


def claim(repo: JobRepo, job_id: int, *, pid: int, pgid: int, lease_s: float) -> JobLease | None:
    """Mark a queued job running for this worker; None when it is not queued any more."""
    now = monotonic()
    claimed = repo.claim(
        job_id,
        at=utc_now(),
        pid=pid,
        pgid=pgid,
        boot_id=boot_id(),
        now=now,
        lease_expires=now + lease_s,
        message="started",
    )
    if not claimed:
        return None
    append_log(repo, job_id, f"worker pid {pid} started (process group {pgid})")
    return repo.lease(job_id)


def renew(repo: JobRepo, job_id: int, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer running (failed by a reaper)."""
    return repo.renew(job_id, monotonic() + lease_s)


def set_progress(
    repo: JobRepo, job_id: int, progress: float, message: str, *, log: bool = True
) -> None:
    repo.set_progress(job_id, min(1.0, max(0.0, progress)), message)
    if log:
        append_log(repo, job_id, message)


def append_log(repo: JobRepo, job_id: int, text: str, *, at: str | None = None) -> None:
    """Add a line to a job's log; `at` is when it happened (a worker that met a busy store
    writes its lines later, in their order, with their own times)."""
    repo.append_log(job_id, at or utc_now(), text[:MAX_LOG_CHARS])


def log_lines(repo: JobRepo, job_id: int, *, times: bool = False) -> list[str]:
    """A job's log, oldest first; with `times`, each line starts with its UTC time."""
    repo.get(job_id)  # NotFound for an unknown id, not an empty log
    return [f"{at} {line}" if times else line for at, line in repo.log(job_id)]


def record_input(repo: JobRepo, job_id: int, line: str, input_hash: str) -> str | None:
    """Record what a running job trains on (engine.retrain.data.Dataset.input_hash); the
    version the line's last trained job made of the very same input, or None: a job that
    finds one has nothing new to train on."""
    repo.set_input_hash(job_id, input_hash)
    last = repo.last_trained(line)
    return last[1] if last is not None and last[0] == input_hash else None


def no_new_data(version: str) -> str:
    """The outcome of a job whose input equals the one `version` was trained on."""
    return f"no new data since {version}"


def finish(
    repo: JobRepo,
    job_id: int,
    *,
    status: str,
    version: str | None = None,
    deployed: bool = False,
    reason: str | None = None,
    error: str | None = None,
    expect_running: bool = True,
    message: str | None = None,
) -> bool:
    """End a job once; False when something else (a reaper, a timeout) ended it first.
    `message` (default: "done", or the error) is what `beast jobs` shows of it."""
    assert status in FINISHED
    if message is None:
        message = "done" if status == "succeeded" else f"failed: {error}"
    done = repo.finish(
        job_id,
        status=status,
        at=utc_now(),
        message=message[:500],
        version=version,
        deployed=deployed,
        reason=reason,
        error=error,
        expect_running=expect_running,
    )
    if done:
        append_log(repo, job_id, f"{status}: {reason or error or ''}".rstrip(": "))
    return done


def timed_out(timeout_s: float) -> str:
    """The error of a job killed at its deadline (by its own watchdog or by a reaper)."""
    return f"timed out after {timeout_s:g}s: worker process group killed"


def lost(repo: JobRepo, line: str | None = None) -> list[JobLease]:
    """Queued or running jobs whose lease expired (or belongs to an earlier boot)."""
    return repo.expired(boot_id(), monotonic(), line)


def overdue(repo: JobRepo, grace_s: float) -> list[JobLease]:
    """Running jobs past their deadline by more than `grace_s` (their own timer did not fire)."""
    return repo.overdue(boot_id(), monotonic() - grace_s)


def finished_within(repo: JobRepo, line: str, seconds: float) -> bool:
    """Did the line's newest job end less than `seconds` ago (by wall clock; a cooldown)?"""
    last = repo.last_finished(line)
    if last is None or last.finished_at is None or seconds <= 0:
        return False
    ended = datetime.fromisoformat(last.finished_at.replace("Z", "+00:00"))
    return (datetime.now(UTC) - ended).total_seconds() < seconds
