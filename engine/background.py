"""A daemon thread that runs one loop until asked to stop: the engine's long-running workers.

The daemon's periodic jobs (engine.daemon) and the model watcher (engine.watcher) share this
start/stop: `start` launches `_run` in a daemon thread (daemon, so a thread stuck in a slow
call never keeps the process alive), `stop` sets the `_stop` Event the loop waits on and joins.
"""

from __future__ import annotations

import abc
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
