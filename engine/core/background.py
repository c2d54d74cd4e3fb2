"""A daemon thread that runs one loop until asked to stop: the engine's long-running workers.

The daemon's periodic jobs (engine.server.daemon) and the model watcher (engine.server.watcher)
share this start/stop: `start` launches `_run` in a daemon thread (daemon, so a thread stuck in a
slow call never keeps the process alive), `stop` sets the `_stop` Event the loop waits on and joins.
`Trouble` is how such a loop reports a round that failed without spamming the log.
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Self


class BackgroundThread(abc.ABC):
    """Runs `_run` in a daemon thread named `thread_name`; `_run` returns once `_stop` is set."""

    thread_name = "beast-background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Launch `_run` in its thread; returns self so `x = Worker(...).start()` reads well."""
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the loop to end and wait for it; harmless when never started or already stopped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @abc.abstractmethod
    def _run(self) -> None:
        """The loop; it waits on `self._stop` (never plain sleeps) so `stop` is prompt."""


class Trouble:
    """A loop's recurring problem, logged once: a warning when it starts (or its message
    changes), nothing while the same problem repeats round after round (a store kept busy
    by a long writer, a full disk), and one info line when a round succeeds again."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log, self.what = log, what
        self.problem: str | None = None
        self.skipped = 0

    def failed(self, problem: str) -> None:
        """A round could not be done; `problem` is the one-line reason."""
        if problem != self.problem:
            self.log.warning("%s skipped: %s (trying again every round)", self.what, problem)
        self.problem = problem
        self.skipped += 1

    def done(self) -> None:
        """A round succeeded."""
        if self.problem is not None:
            self.log.info("%s done again, after %d skipped rounds", self.what, self.skipped)
        self.problem = None
        self.skipped = 0
