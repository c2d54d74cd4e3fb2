"""Background worker processes: start a training worker, kill a job's process group, reap.

A worker runs as `python -m engine.server.train_worker JOB_ID WORKSPACE` in its own session (so its
process group is its own and a timeout can kill it together with everything it started),
with a bounded OpenMP thread count and passive waiting so that it never spins on the cores
serving needs (DESIGN.md §8). The caller is never the trainer: it starts the process and
returns. A thread of the caller waits for the child, so a long-lived caller (the daemon, the
console) leaves no zombie; when the caller exits first, init adopts the worker.

Reaping fails jobs whose lease expired ("worker lost"), kills the process group of a job past
its deadline whose own timer could not act, and removes the files a lost job left half-written.
A process is killed only after checking, in /proc, that it carries the job's marker in its
environment (pids are reused; the leader may be dead and its children not; the validation
child of a registration runs in a session of its own).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from engine.core.records import JobLease
from engine.retrain import jobs
from engine.store.jobs import JobRepo

WORKER_MODULE = "engine.server.train_worker"
WORKER_THREADS = 2
DEADLINE_GRACE_S = 5.0
MARKER_ENV = "BEAST_JOB"  # inherited by everything a worker starts: how its group is known


def marker(workspace_root: Path, job_id: int) -> str:
    return f"{workspace_root.resolve()}:{job_id}"


def temp_model_path(models_dir: Path, job_id: int) -> Path:
    """Where a job writes its model before the rename: a dot file that keeps the `.json`
    suffix (XGBoost picks the format from it), ignored by the watcher and `beast models`."""
    return models_dir / f".retrain-job-{job_id}.partial.json"


def launch(workspace_root: Path, job_id: int) -> int:
    """Start the worker for a queued job; return its pid (also its process group id)."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(WORKER_THREADS),
        OMP_WAIT_POLICY="passive",
        PYTHONUNBUFFERED="1",
        **{MARKER_ENV: marker(workspace_root, job_id)},
    )
    project_root = str(Path(__file__).resolve().parents[2])  # holds engine/ (this: retrain/)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", WORKER_MODULE, str(job_id), str(workspace_root)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own session and process group: a timeout kills it all
        close_fds=True,
    )
    threading.Thread(target=proc.wait, name=f"beast-job-{job_id}-reaper", daemon=True).start()
    return proc.pid


def carries_marker(pid: int, mark: str) -> bool:
    """Was `pid` started by that job's worker (its environment says so)? Read from /proc."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_ENV}={mark}".encode() in raw.split(b"\0")


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (the leader may be gone, its children not)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "(comm)", which may hold spaces
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def marked_processes(mark: str) -> list[int]:
    """Live processes started for a job, in any process group: the validation child of a
    registration runs in a session of its own, out of reach of the job's group kill."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and carries_marker(int(entry.name), mark):
            found.append(int(entry.name))
    return found


def kill_group(pgid: int | None, job_id: int, workspace_root: Path) -> bool:
    """SIGKILL everything started for the job: each marked process, then the job's process
    group if a live member of it is marked (pids and group ids are reused: the environment
    marker is checked first). Called by the worker itself on its timeout, it dies last."""
    mark = marker(workspace_root, job_id)
    me = os.getpid()
    for pid in marked_processes(mark):
        if pid != me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if pgid is None or pgid <= 1:
        return False
    if not any(carries_marker(pid, mark) for pid in group_members(pgid)):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
        return True
    return False


def clean_files(models_dir: Path, job_id: int, line: str, version: str | None) -> None:
    """Remove what a job that did not finish left: its temp model and sidecar, and a
    sidecar whose model never got its final name."""
    temp = temp_model_path(models_dir, job_id)
    for leftover in (temp, temp.with_name(temp.name + ".lineage")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    for partial in models_dir.glob(f".{temp.name}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    if version is not None:
        final = models_dir / f"{line}-{version}.json"
        sidecar = final.with_name(final.name + ".lineage")
        if sidecar.exists() and not final.exists():
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()


def reap(repo: JobRepo, models_dir: Path, line: str | None = None) -> list[int]:
    """Fail lost and overdue jobs (inside the caller's write transaction); their ids."""
    failed: list[int] = []
    for found in jobs.lost(repo, line):
        kill_group(found.pgid, found.id, models_dir.parent)
        if found.status == "queued":
            error = "worker never started (no claim within its lease)"
        elif _past_deadline(found):  # killed by its watchdog while the store was busy
            error = jobs.timed_out(found.timeout_s)
        else:
            error = "worker lost: its lease expired (the process died or stopped renewing it)"
        if jobs.finish(repo, found.id, status="failed", error=error, expect_running=False):
            clean_files(models_dir, found.id, found.line, found.version)
            failed.append(found.id)
    for found in jobs.overdue(repo, DEADLINE_GRACE_S):
        if line is not None and found.line != line:
            continue
        kill_group(found.pgid, found.id, models_dir.parent)
        error = jobs.timed_out(found.timeout_s)
        if jobs.finish(repo, found.id, status="failed", error=error):
            clean_files(models_dir, found.id, found.line, found.version)
            failed.append(found.id)
    return failed


def _past_deadline(found: JobLease) -> bool:
    """Did a running job's deadline pass (a reading of this boot's monotonic clock)?"""
    same_boot = found.boot_id == jobs.boot_id()
    return found.deadline is not None and same_boot and found.deadline < jobs.monotonic()
