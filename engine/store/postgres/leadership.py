"""Leadership on PostgreSQL: a session advisory lock held on a connection of its own.

Not a pool's connection: the lock belongs to the session, so it must live exactly as long as
the connection this process keeps for it. When the process dies (`kill -9` included) the
kernel closes its socket, the server ends the session and the lock is free at once; another
replica's next try (every second) takes it. A connection that silently goes away (a network
partition) is bounded on both sides by TCP keepalives (set for the session, so the server
drops a dead leader's session within ~10 s instead of its system default of two hours), and
the leader itself steps down the moment its own check of the connection fails.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import psycopg

from engine.store.postgres.locks import LEADER_LOCK

CONNECT_TIMEOUT_S = 10
# Seconds: either side gives up on a silent peer after idle + interval × count (10 s).
_SESSION_KEEPALIVE = (
    "SET tcp_keepalives_idle = 4; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3"
)

log = logging.getLogger("beast.store")


def dedicated_connection(url: str, name: str) -> psycopg.Connection[Any]:
    """A connection of its own (never the pool's), in autocommit, with TCP keepalives set on
    both ends so that a silent network ends its session within seconds."""
    conn = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=name,
        keepalives=1,
        keepalives_idle=4,
        keepalives_interval=2,
        keepalives_count=3,
    )
    conn.execute(_SESSION_KEEPALIVE)
    return conn


class AdvisoryLeadership:
    """engine.store.replicas.Leadership on one PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    def try_lead(self) -> bool:
        """Take the lock if free, or check the connection that holds it is alive.

        A leader whose connection failed steps down (its lock went with the session); a
        follower's dead connection is replaced at once and the lock tried on the new one.
        """
        for retry in (False, True):
            try:
                conn = self._connection()
                if self._held:
                    conn.execute("SELECT 1")
                else:
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                    self._held = bool(row and row[0])
                return self._held
            except psycopg.Error as exc:
                held = self._held
                self._drop()
                if held:
                    log.warning("lost the leader's connection to PostgreSQL: %s", exc)
                if held or retry:
                    return False
        return False

    def release(self) -> None:
        """Unlock and close: the next replica to try leads."""
        if self._held and self._conn is not None:
            with suppress(psycopg.Error):  # now, rather than when the server ends the session
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK,))
        self._drop()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._held = False
            self._conn = dedicated_connection(self.url, "beast-leadership")
        return self._conn

    def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()  # ends the session: the server frees the lock
