"""This engine as one replica among those sharing its state store: its row in `replicas`, its
heartbeat, and whether it leads.

Every second the heartbeat thread asks the store's leadership (engine.store.replicas) whether
this process leads — PostgreSQL: it holds or takes a session advisory lock; SQLite: always —
and records it with `seen_at` every two seconds (at once when it changes). The evaluator and
the retraining scheduler (engine.server.daemon) run their rounds only while `leading` is set,
so exactly one replica pulls candidates, fires alerts, reaps and starts jobs. A leader killed
outright loses its lock with its connection; another replica's next try (≤ 1 s later, plus
the moment the server takes to end the dead session) leads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from engine.core.background import BackgroundThread, Trouble
from engine.core.clock import utc_now
from engine.core.errors import BeastError
from engine.core.workspace import Workspace
from engine.store.base import Store
from engine.store.opening import open_store
from engine.store.replicas import Leadership, Replica

log = logging.getLogger("beast.engine")

# Set by `beast engine` for its worker processes (`--workers N`): the replica they serve for.
REPLICA_ENV = "BEAST_REPLICA_ID"
TRY_EVERY_S = 1.0  # how often a follower tries the leadership (and a leader checks it)
BEAT_EVERY_S = 2.0  # how often seen_at is renewed (engine.store.replicas.STALE_S: 10 s)
PRUNE_AFTER_S = 86_400.0  # the leader forgets replicas unseen for a day


def replica_id() -> str:
    """This process as a replica: host/pid (readable in `beast status`, unique while it runs)."""
    return f"{socket.gethostname()}/{os.getpid()}"


class ReplicaHeart(BackgroundThread):
    """The heartbeat and leadership thread of one `beast engine`."""

    thread_name = "beast-replica"

    def __init__(self, workspace: Workspace, address: str | None) -> None:
        super().__init__()
        self.workspace = workspace
        self.address = address
        self.id = replica_id()
        self.leading = threading.Event()

    def is_leader(self) -> bool:
        """Whether this replica leads now (what the periodic work and /healthz ask)."""
        return self.leading.is_set()

    def _run(self) -> None:
        store = open_store(self.workspace.db_path)
        leadership = store.leadership()
        trouble = Trouble(log, "replica heartbeat")
        announced = False
        last_beat = -BEAT_EVERY_S
        try:
            while True:
                leads = leadership.try_lead()
                changed = leads != self.leading.is_set()
                if changed:
                    self._flip(leads)
                try:
                    if not announced:
                        self._announce(store)
                        announced = True
                    if changed or time.monotonic() - last_beat >= BEAT_EVERY_S:
                        self._beat(store, leads)
                        last_beat = time.monotonic()
                except BeastError as exc:
                    trouble.failed(str(exc))
                else:
                    trouble.done()
                if self._stop.wait(TRY_EVERY_S):
                    break
        finally:
            self._leave(store, leadership, announced)

    def _flip(self, leads: bool) -> None:
        if leads:
            self.leading.set()
            log.info("replica %s leads: it runs alerts, auto-pull and retraining", self.id)
        else:
            self.leading.clear()
            log.warning("replica %s no longer leads", self.id)

    def _announce(self, store: Store) -> None:
        now = utc_now()
        me = Replica(self.id, socket.gethostname(), os.getpid(), self.address, now, now, None)
        with store.write() as tx:
            tx.replicas.announce(me)

    def _beat(self, store: Store, leads: bool) -> None:
        with store.write() as tx:
            tx.replicas.heartbeat(self.id, utc_now(), leading=leads)
            if leads:
                cutoff = time.time() - PRUNE_AFTER_S
                tx.replicas.prune(seen_before=_stamp(cutoff))

    def _leave(self, store: Store, leadership: Leadership, announced: bool) -> None:
        self.leading.clear()
        leadership.release()
        if announced:
            try:
                with store.write() as tx:
                    tx.replicas.leave(self.id)
            except BeastError as exc:  # it will read as unseen, then be pruned
                log.warning("could not remove replica %s from the store: %s", self.id, exc)
        store.close()


def _stamp(epoch_s: float) -> str:
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(epoch_s, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
