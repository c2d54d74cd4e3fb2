"""Change notices on SQLite: none. A change is seen by the router's poll of `PRAGMA
data_version`, which costs a page read of a local file and needs no notice."""

from __future__ import annotations

import threading


class PollFeed:
    """engine.store.replicas.ChangeFeed with no notices: each wait is the poll's interval."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout_s: float) -> bool:
        self._closed.wait(timeout_s)
        return False

    def close(self) -> None:
        self._closed.set()
