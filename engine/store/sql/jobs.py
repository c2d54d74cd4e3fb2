"""Jobs in SQL: `jobs` and `job_log`; and the narrow reads retraining makes elsewhere.

Written once in the SQL SQLite and PostgreSQL both speak (engine.store.sql.conn). The partial
UNIQUE index `jobs_one_active_per_line` keeps one queued or running job per line, on both.
"""

from __future__ import annotations

import json
from typing import Any

from engine.core.errors import NotFound
from engine.core.records import Job, JobLease
from engine.store.sql.conn import Conn

_ACTIVE = "status IN ('queued', 'running')"


def _job(row: Any) -> Job:
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


def _lease(row: Any) -> JobLease:
    return JobLease(
        id=row["id"],
        line=row["line"],
        status=row["status"],
        version=row["version"],
        deploy=bool(row["deploy"]),
        pid=row["pid"],
        pgid=row["pgid"],
        boot_id=row["boot_id"],
        lease_expires=float(row["lease_expires"]),
        deadline=None if row["deadline"] is None else float(row["deadline"]),
        timeout_s=float(row["timeout_s"]),
    )


class SqlJobs:
    """engine.store.jobs.JobRepo over one transaction (either backend)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def _row(self, job_id: int) -> Any:
        found = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if found is None:
            raise NotFound(f"no job {job_id}")
        return found

    def get(self, job_id: int) -> Job:
        return _job(self._row(job_id))

    def lease(self, job_id: int) -> JobLease:
        return _lease(self._row(job_id))

    def recent(self, limit: int, line: str | None = None) -> list[Job]:
        if line is None:
            rows = self.conn.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.conn.execute(
                "SELECT * FROM jobs WHERE line = ? ORDER BY id DESC LIMIT ?", (line, limit)
            )
        return [_job(r) for r in rows]

    def active(self, line: str) -> Job | None:
        found = self.conn.execute(
            f"SELECT * FROM jobs WHERE line = ? AND {_ACTIVE}", (line,)
        ).fetchone()
        return _job(found) if found else None

    def last_finished(self, line: str) -> Job | None:
        found = self.conn.execute(
            "SELECT * FROM jobs WHERE line = ? AND status IN ('succeeded', 'failed')"
            " ORDER BY id DESC LIMIT 1",
            (line,),
        ).fetchone()
        return _job(found) if found else None

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
        found = self.conn.execute(
            "INSERT INTO jobs (line, trigger, status, message, force, deploy, created_at,"
            " created_by, boot_id, lease_expires, timeout_s)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                line,
                trigger,
                message,
                int(force),
                int(deploy),
                at,
                actor,
                boot_id,
                lease_expires,
                timeout_s,
            ),
        ).fetchone()
        return int(found[0])

    def join(self, job_id: int, *, trigger: str, deploy: bool) -> None:
        self.conn.execute(
            # a CASE, not SQLite's scalar max(): the wish is only ever added, never taken back
            "UPDATE jobs SET trigger = ?, deploy = CASE WHEN CAST(? AS BIGINT) = 1 THEN 1"
            " ELSE deploy END WHERE id = ?",
            (trigger, int(deploy), job_id),
        )

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
        return bool(
            self.conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, pid = ?, pgid = ?,"
                " boot_id = ?, lease_expires = ?, deadline = ? + timeout_s, message = ?"
                " WHERE id = ? AND status = 'queued'",
                (at, pid, pgid, boot_id, lease_expires, now, message, job_id),
            ).rowcount
        )

    def renew(self, job_id: int, lease_expires: float) -> bool:
        return bool(
            self.conn.execute(
                "UPDATE jobs SET lease_expires = ? WHERE id = ? AND status = 'running'",
                (lease_expires, job_id),
            ).rowcount
        )

    def set_progress(self, job_id: int, progress: float, message: str) -> None:
        self.conn.execute(
            "UPDATE jobs SET progress = ?, message = ? WHERE id = ? AND status = 'running'",
            (progress, message, job_id),
        )

    def set_version(self, job_id: int, version: str) -> None:
        self.conn.execute(
            "UPDATE jobs SET version = ? WHERE id = ? AND status = 'running'", (version, job_id)
        )

    def set_input_hash(self, job_id: int, input_hash: str) -> None:
        self.conn.execute(
            "UPDATE jobs SET input_hash = ? WHERE id = ? AND status = 'running'",
            (input_hash, job_id),
        )

    def last_trained(self, line: str) -> tuple[str, str] | None:
        found = self.conn.execute(
            "SELECT input_hash, version FROM jobs WHERE line = ? AND status = 'succeeded'"
            " AND version IS NOT NULL AND input_hash IS NOT NULL ORDER BY id DESC LIMIT 1",
            (line,),
        ).fetchone()
        return (str(found[0]), str(found[1])) if found else None

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
        where = "status = 'running'" if expect_running else _ACTIVE
        return bool(
            self.conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, progress = CASE WHEN CAST(? AS TEXT)"
                " = 'succeeded' THEN 1 ELSE progress END, message = ?, version = coalesce(?,"
                f" version), deployed = ?, reason = ?, error = ? WHERE id = ? AND {where}",
                (status, at, status, message, version, int(deployed), reason, error, job_id),
            ).rowcount
        )

    def append_log(self, job_id: int, at: str, text: str) -> None:
        seq = self.conn.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM job_log WHERE job_id = ?", (job_id,)
        ).fetchone()[0]
        self.conn.execute(
            "INSERT INTO job_log (job_id, seq, at, line) VALUES (?, ?, ?, ?)",
            (job_id, seq, at, text),
        )

    def log(self, job_id: int) -> list[tuple[str, str]]:
        return [
            (str(r[0]), str(r[1]))
            for r in self.conn.execute(
                "SELECT at, line FROM job_log WHERE job_id = ? ORDER BY seq", (job_id,)
            )
        ]

    def expired(self, boot_id: str, now: float, line: str | None = None) -> list[JobLease]:
        sql = f"SELECT * FROM jobs WHERE {_ACTIVE} AND (boot_id != ? OR lease_expires < ?)"
        params: list[Any] = [boot_id, now]
        if line is not None:
            sql += " AND line = ?"
            params.append(line)
        return [_lease(r) for r in self.conn.execute(sql, params)]

    def overdue(self, boot_id: str, now: float) -> list[JobLease]:
        return [
            _lease(r)
            for r in self.conn.execute(
                "SELECT * FROM jobs WHERE status = 'running' AND boot_id = ? AND deadline < ?",
                (boot_id, now),
            )
        ]


class SqlRetrainInputs:
    """engine.store.jobs.RetrainInputRepo over one transaction (either backend)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def production_registered_at(self, line: str) -> str | None:
        found = self.conn.execute(
            "SELECT a.registered_at FROM line_state s JOIN versions v ON v.id = s.production_id"
            " JOIN artifacts a ON a.id = v.artifact_id WHERE s.line = ?",
            (line,),
        ).fetchone()
        return str(found[0]) if found else None

    def labelled_since(self, line: str, minute: int) -> int:
        # Both tables exist on a migrated store (0005); PostgreSQL's sum of BIGINT is NUMERIC.
        found = self.conn.execute(
            "SELECT CAST(coalesce(sum(r.labelled), 0) AS BIGINT) FROM rollups r"
            " JOIN versions v ON v.id = r.version_id WHERE v.line = ? AND r.minute >= ?"
            " UNION ALL SELECT CAST(coalesce(sum(r.labelled), 0) AS BIGINT) FROM rollups_hourly r"
            " JOIN versions v ON v.id = r.version_id WHERE v.line = ? AND r.hour >= ?",
            (line, minute, line, minute // 60),
        ).fetchall()
        return sum(int(row[0]) for row in found)

    def critical_alerts(self, line: str, version: str) -> list[str]:
        return [
            str(r[0])
            for r in self.conn.execute(
                "SELECT message FROM alerts WHERE line = ? AND version = ?"
                " AND resolved_at IS NULL AND severity = 'critical' ORDER BY id",
                (line, version),
            )
        ]

    def feature_names(self, line: str) -> tuple[str, ...] | None:
        found = self.conn.execute(
            "SELECT feature_names FROM model_lines WHERE name = ?", (line,)
        ).fetchone()
        if found is None or not found[0]:
            return None
        return tuple(json.loads(found[0]))

    def version_names(self, line: str) -> list[str]:
        return [
            str(r[0])
            for r in self.conn.execute(
                "SELECT name FROM versions WHERE line = ? ORDER BY id", (line,)
            )
        ]
