"""Retraining jobs in the store: the `Job` record and every read and write of `jobs`/`job_log`.

Lifecycle: `queued` (created by `create_or_join`) → `running` (claimed by its worker process)
→ `succeeded` or `failed`. A job holds a lease on CLOCK_MONOTONIC, which on Linux is one clock
for every process of a boot (wall-clock jumps do not move it); the boot id stored beside it
makes a lease from an earlier boot expire. The worker renews the lease; a job whose lease ran
out is failed by `expire` ("worker lost"). The partial UNIQUE index `jobs_one_active_per_line`
keeps one queued or running job per line, so a second trigger joins the job that runs.

Every function here runs inside the caller's transaction (`store.write_sql()` / `store.read_sql()`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.core.clock import utc_now
from engine.core.errors import NotFound

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed")
_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
MAX_LOG_CHARS = 2000
# A new worker must claim its job within this long (or its lease, if longer): Python and
# numpy start slowly on a loaded machine, and a worker runs at nice 10.
CLAIM_WINDOW_S = 30.0


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
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def boot_id() -> str:
    """This boot's id: a monotonic reading means nothing across a reboot."""
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


def monotonic() -> float:
    """CLOCK_MONOTONIC (system-wide on Linux), the clock leases and deadlines use."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        line=row["line"],
        trigger=row["trigger"],
        status=row["status"],
        progress=float(row["progress"]),
        message=row["message"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        version=row["version"],
        deployed=bool(row["deployed"]),
        reason=row["reason"],
        error=row["error"],
    )


def get(conn: sqlite3.Connection, job_id: int) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return _from_row(row)


def row(conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
    """The raw row (pid, lease, options) a worker or reaper needs beyond `Job`."""
    found = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if found is None:
        raise NotFound(f"no job {job_id}")
    return found  # type: ignore[no-any-return]


def recent(conn: sqlite3.Connection, limit: int, line: str | None = None) -> list[Job]:
    """The newest jobs first (order by id, never by timestamps)."""
    if line is None:
        rows = conn.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = conn.execute(
            "SELECT * FROM jobs WHERE line = ? ORDER BY id DESC LIMIT ?", (line, limit)
        )
    return [_from_row(r) for r in rows]


def active(conn: sqlite3.Connection, line: str) -> Job | None:
    found = conn.execute(
        "SELECT * FROM jobs WHERE line = ? AND status IN ('queued', 'running')", (line,)
    ).fetchone()
    return _from_row(found) if found else None


def last_finished(conn: sqlite3.Connection, line: str) -> Job | None:
    found = conn.execute(
        "SELECT * FROM jobs WHERE line = ? AND status IN ('succeeded', 'failed')"
        " ORDER BY id DESC LIMIT 1",
        (line,),
    ).fetchone()
    return _from_row(found) if found else None


def create_or_join(
    conn: sqlite3.Connection,
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
    current = active(conn, line)
    if current is not None:
        triggers = current.trigger.split(", ")
        joined = ", ".join([*triggers, trigger] if trigger not in triggers else triggers)
        conn.execute(
            "UPDATE jobs SET trigger = ?, deploy = max(deploy, ?) WHERE id = ?",
            (joined, int(deploy), current.id),
        )
        append_log(conn, current.id, f"joined by trigger {trigger} ({actor})")
        return current.id, True
    job_id = conn.execute(
        "INSERT INTO jobs (line, trigger, status, message, force, deploy, created_at,"
        " created_by, boot_id, lease_expires, timeout_s)"
        " VALUES (?, ?, 'queued', 'waiting for its worker', ?, ?, ?, ?, ?, ?, ?)",
        (
            line,
            trigger,
            int(force),
            int(deploy),
            utc_now(),
            actor,
            boot_id(),
            monotonic() + max(lease_s, CLAIM_WINDOW_S),
            timeout_s,
        ),
    ).lastrowid
    assert job_id is not None
    append_log(conn, job_id, f"queued by {actor} (trigger {trigger})")
    return job_id, False


def claim(
    conn: sqlite3.Connection, job_id: int, *, pid: int, pgid: int, lease_s: float
) -> sqlite3.Row | None:
    """Mark a queued job running for this worker; None when it is not queued any more."""
    now = monotonic()
    claimed = conn.execute(
        "UPDATE jobs SET status = 'running', started_at = ?, pid = ?, pgid = ?, boot_id = ?,"
        " lease_expires = ?, deadline = ? + timeout_s, message = 'started'"
        " WHERE id = ? AND status = 'queued'",
        (utc_now(), pid, pgid, boot_id(), now + lease_s, now, job_id),
    ).rowcount
    if not claimed:
        return None
    append_log(conn, job_id, f"worker pid {pid} started (process group {pgid})")
    return row(conn, job_id)


def renew(conn: sqlite3.Connection, job_id: int, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer running (failed by a reaper)."""
    return bool(
        conn.execute(
            "UPDATE jobs SET lease_expires = ? WHERE id = ? AND status = 'running'",
            (monotonic() + lease_s, job_id),
        ).rowcount
    )


def set_progress(
    conn: sqlite3.Connection, job_id: int, progress: float, message: str, *, log: bool = True
) -> None:
    conn.execute(
        "UPDATE jobs SET progress = ?, message = ? WHERE id = ? AND status = 'running'",
        (min(1.0, max(0.0, progress)), message, job_id),
    )
    if log:
        append_log(conn, job_id, message)


def set_version(conn: sqlite3.Connection, job_id: int, version: str) -> None:
    """Record the version name before its files are written (a reaper cleans up after it)."""
    conn.execute(
        "UPDATE jobs SET version = ? WHERE id = ? AND status = 'running'", (version, job_id)
    )


def append_log(conn: sqlite3.Connection, job_id: int, text: str, *, at: str | None = None) -> None:
    """Add a line to a job's log; `at` is when it happened (a worker that met a busy store
    writes its lines later, in their order, with their own times)."""
    seq = conn.execute(
        "SELECT coalesce(max(seq), 0) + 1 FROM job_log WHERE job_id = ?", (job_id,)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO job_log (job_id, seq, at, line) VALUES (?, ?, ?, ?)",
        (job_id, seq, at or utc_now(), text[:MAX_LOG_CHARS]),
    )


def log_lines(conn: sqlite3.Connection, job_id: int, *, times: bool = False) -> list[str]:
    """A job's log, oldest first; with `times`, each line starts with its UTC time."""
    get(conn, job_id)  # NotFound for an unknown id, not an empty log
    return [
        f"{r[0]} {r[1]}" if times else str(r[1])
        for r in conn.execute(
            "SELECT at, line FROM job_log WHERE job_id = ? ORDER BY seq", (job_id,)
        )
    ]


def finish(
    conn: sqlite3.Connection,
    job_id: int,
    *,
    status: str,
    version: str | None = None,
    deployed: bool = False,
    reason: str | None = None,
    error: str | None = None,
    expect_running: bool = True,
) -> bool:
    """End a job once; False when something else (a reaper, a timeout) ended it first."""
    assert status in FINISHED
    where = "status = 'running'" if expect_running else "status IN ('queued', 'running')"
    message = "done" if status == "succeeded" else f"failed: {error}"
    done = conn.execute(
        f"UPDATE jobs SET status = ?, finished_at = ?, progress = CASE WHEN ? = 'succeeded'"
        f" THEN 1 ELSE progress END, message = ?, version = coalesce(?, version),"
        f" deployed = ?, reason = ?, error = ? WHERE id = ? AND {where}",
        (status, utc_now(), status, message[:500], version, int(deployed), reason, error, job_id),
    ).rowcount
    if done:
        append_log(conn, job_id, f"{status}: {reason or error or ''}".rstrip(": "))
    return bool(done)


def timed_out(timeout_s: float) -> str:
    """The error of a job killed at its deadline (by its own watchdog or by a reaper)."""
    return f"timed out after {timeout_s:g}s: worker process group killed"


def lost(conn: sqlite3.Connection, line: str | None = None) -> list[sqlite3.Row]:
    """Queued or running jobs whose lease expired (or belongs to an earlier boot)."""
    sql = (
        "SELECT * FROM jobs WHERE status IN ('queued', 'running')"
        " AND (boot_id != ? OR lease_expires < ?)"
    )
    params: list[Any] = [boot_id(), monotonic()]
    if line is not None:
        sql += " AND line = ?"
        params.append(line)
    return list(conn.execute(sql, params))


def overdue(conn: sqlite3.Connection, grace_s: float) -> list[sqlite3.Row]:
    """Running jobs past their deadline by more than `grace_s` (their own timer did not fire)."""
    return list(
        conn.execute(
            "SELECT * FROM jobs WHERE status = 'running' AND boot_id = ? AND deadline < ?",
            (boot_id(), monotonic() - grace_s),
        )
    )


def finished_within(conn: sqlite3.Connection, line: str, seconds: float) -> bool:
    """Did the line's newest job end less than `seconds` ago (by wall clock; a cooldown)?"""
    last = last_finished(conn, line)
    if last is None or last.finished_at is None or seconds <= 0:
        return False
    ended = datetime.fromisoformat(last.finished_at.replace("Z", "+00:00"))
    return (datetime.now(UTC) - ended).total_seconds() < seconds
