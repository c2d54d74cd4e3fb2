"""The console's only door to the engine: reads for the panes, mutations for the dialogs.

Two `Engine`s, each behind a lock: one for the poller's reads, one for actions, because an
engine's SQLite connection is never used by two threads at once. In read-only mode every
mutation is refused here, whoever calls it (a key, the palette, a test calling it directly):
the key bindings hide them, and this is the refusal behind that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from engine import (
    BeastError,
    Change,
    Config,
    Engine,
    Expect,
    HistoryEntry,
    Job,
    Lineage,
    ModelsReport,
    MonitorReport,
    Status,
    Workspace,
)

T = TypeVar("T")


class ReadOnlyRefused(BeastError):
    """A mutation asked of a console opened with --readonly."""

    http_status = 403


class Gateway:
    """Engine reads and mutations for one workspace, thread-safe, optionally read-only."""

    def __init__(
        self, workspace: Workspace, *, readonly: bool = False, actor: str | None = None
    ) -> None:
        self.workspace = workspace
        self.readonly = readonly
        self._reader = Engine(workspace, actor=actor)
        self._writer = Engine(workspace, actor=actor)
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()

    # -- reads ------------------------------------------------------------------------------

    def _read(self, call: Callable[[Engine], T]) -> T:
        with self._read_lock:
            return call(self._reader)

    @property
    def config(self) -> Config:
        return self._read(lambda e: e.config)

    def status(self) -> Status:
        return self._read(lambda e: e.status())

    def report(self, window: str = "1h") -> MonitorReport:
        return self._read(lambda e: e.report(window=window))

    def history(self, line: str | None = None) -> list[HistoryEntry]:
        return self._read(lambda e: e.history(line))

    def models(self) -> ModelsReport:
        return self._read(lambda e: e.models())

    def rollback_target(self, line: str) -> str:
        return self._read(lambda e: e.rollback_target(model=line))

    def lineage(self, line: str, version: str) -> Lineage:
        return self._read(lambda e: e.lineage(version, model=line))

    def jobs(self, limit: int = 8) -> list[Job]:
        """Retraining jobs, newest first."""
        return self._read(lambda e: e.jobs(limit=limit))

    def incident_report(self, out_dir: Path, *, window: str = "1h") -> tuple[Path, Path]:
        """Write the incident snapshot into `out_dir` (a read: allowed when read-only)."""
        return self._read(lambda e: e.incident_report(out_dir, window=window))

    def engine_pid(self) -> int | None:
        """The running `beast engine`'s pid, None when none runs on this workspace."""
        return self._read(lambda e: e.engine_pid())

    # -- mutations --------------------------------------------------------------------------

    def _mutate(self, what: str, call: Callable[[Engine], T]) -> T:
        if self.readonly:
            raise ReadOnlyRefused(f"read-only console: {what} refused")
        with self._write_lock:
            return call(self._writer)

    def rollback(self, line: str, expect: Expect) -> Change:
        return self._mutate("rollback", lambda e: e.rollback(model=line, expect=expect))

    def promote(self, test: str, *, force: bool, expect: Expect) -> Change:
        return self._mutate("promote", lambda e: e.promote(test, force=force, expect=expect))

    def abort(self, test: str, expect: Expect) -> Change:
        return self._mutate("abort", lambda e: e.abort(test, expect=expect))

    def deploy(
        self,
        line: str,
        version: str,
        *,
        traffic: int | None,
        ab_test: str | None,
        expect: Expect,
    ) -> Change:
        return self._mutate(
            "deploy",
            lambda e: e.deploy(
                version=version, model=line, traffic=traffic, ab_test=ab_test, expect=expect
            ),
        )

    def retrain(self, line: str) -> Job:
        """Start a retraining job (a background worker process); returns at once."""
        return self._mutate("retrain", lambda e: e.start_retrain(line, force=True, deploy=False))

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._write_lock:
            self._writer.close()
