"""Change notifications on PostgreSQL: LISTEN on a connection of its own.

Migration 0012 sends `NOTIFY beast_changes` from a trigger on every history row, so the
notification is part of the change's transaction: it is delivered when (and only if) the
change commits, to every replica listening. A replica whose listening connection drops
reconnects on its next wait and answers True once (it may have missed a change meanwhile);
the router's poll of its change counter stays the fallback either way.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

import psycopg

from engine.store.postgres.leadership import dedicated_connection

CHANNEL = "beast_changes"


class ListenFeed:
    """engine.store.replicas.ChangeFeed on one PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, timeout_s: float) -> bool:
        """True when a change was notified within `timeout_s` (or the feed was re-opened)."""
        deadline = time.monotonic() + timeout_s
        try:
            if self._conn is None or self._conn.closed:
                self._conn = dedicated_connection(self.url, "beast-listen")
                self._conn.execute(f"LISTEN {CHANNEL}")
                return True
            notified = any(True for _ in self._conn.notifies(timeout=timeout_s, stop_after=1))
            if notified:  # a burst of changes is one refresh: take what else has arrived
                for _ in self._conn.notifies(timeout=0.0):
                    pass
            return notified
        except psycopg.Error:
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))  # the poll goes on meanwhile
            return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()
