"""An early poll when a folder of the workspace changes on disk (a watchfiles nudge).

Every deployment change, by any process (a CLI in another terminal, the HTTP API, the daemon's
auto-pull), rewrites `deployments/history.json` (temp file, then rename); the watcher adds
files to `models/`. Watching those folders tells the console within ~50 ms, where its timer
would take up to a whole interval. Events are only hints: the poll reads the store as always,
and if watching fails the timer goes on alone.

A plain daemon thread, not a Textual worker: it lives as long as the app, and a worker that
never completes would keep `App.workers.wait_for_complete()` from ever returning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import watchfiles

log = logging.getLogger("beast.console")

DEBOUNCE_MS = 50


class Nudge:
    """Calls `on_change` (from its own thread) after files change in any of `folders`."""

    def __init__(
        self,
        folders: Sequence[Path],
        on_change: Callable[[], None],
        on_failure: Callable[[str], None] = lambda _why: None,
    ) -> None:
        self.folders = [f for f in folders if f.is_dir()]
        self.on_change = on_change
        self.on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self.folders and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="beast-nudge", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        try:
            for _changes in watchfiles.watch(
                *self.folders,
                stop_event=self._stop,
                debounce=DEBOUNCE_MS,
                recursive=False,
                raise_interrupt=False,
            ):
                self.on_change()
        except Exception as exc:  # inotify exhausted, a folder removed: the timer goes on
            log.warning("watching %s stopped: %s", self.folders, exc)
            self.on_failure(f"live updates from disk stopped ({exc}); refreshing on the timer")
