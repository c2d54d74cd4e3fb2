"""An early poll when a folder of the workspace changes on disk (a watchfiles nudge).

Every deployment change, by any process (a CLI in another terminal, the HTTP API, the daemon's
auto-pull), rewrites `deployments/history.json` (temp file, then rename); the watcher adds
files to `models/`. Watching those folders tells the console within ~50 ms, where its timer
would take up to a whole interval. Events are only hints: the poll reads the store as always,
and if watching fails the timer goes on alone.

The engine's `BackgroundThread`, not a Textual worker: it lives as long as the app, and a
worker that never completes would keep `App.workers.wait_for_complete()` from returning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import watchfiles

from engine import BackgroundThread

log = logging.getLogger("beast.console")

DEBOUNCE_MS = 50


class Nudge(BackgroundThread):
    """Calls `on_change` (from its own thread) after files change in any of `folders`."""

    thread_name = "beast-nudge"

    def __init__(
        self,
        folders: Sequence[Path],
        on_change: Callable[[], object],
        on_failure: Callable[[str], object] = lambda _why: None,
    ) -> None:
        super().__init__()
        self.folders = [f for f in folders if f.is_dir()]
        self.on_change = on_change
        self.on_failure = on_failure

    def start(self) -> Self:
        if self.folders:  # nothing to watch: the timer alone
            super().start()
        return self

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
