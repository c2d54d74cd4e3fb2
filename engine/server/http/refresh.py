"""The server's refresh thread: routes re-read off the request path, log counters carried.

The router re-reads the deployment state when a predict call finds its snapshot older than
`refresh_s`; refreshing here at twice that rate means no request pays for a SQLite query or
a model load. On PostgreSQL the thread waits on the store's change notices (LISTEN) instead
of sleeping: a change committed by any replica is served here within milliseconds, and the
poll still runs between notices, should one be lost with its connection.

The same thread carries the prediction log's counters to Prometheus and turns
rows the writer dropped into an alert (resolved once drops stop).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from engine.core.errors import BeastError
from engine.server.replica import REPLICA_ENV

if TYPE_CHECKING:
    from engine.server.http.api import Api  # the Api starts this thread: a type only
    from engine.store.replicas import ChangeFeed

log = logging.getLogger("beast.api")
LEADER_CHECK_S = 1.0
STOP_CHECK_S = 0.25


class Refresher:
    """One server process's refresh thread (started and stopped by its `Api`)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drop_alert_open = False
        self._leader_checked = -LEADER_CHECK_S

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="beast-api-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        engine = self.api.engine
        if engine is None:
            return
        # Opened and closed by this thread only: a LISTEN connection is not shared.
        feed = engine.store.changes()
        try:
            self._rounds(feed)
        finally:
            feed.close()

    def _rounds(self, feed: ChangeFeed) -> None:
        api = self.api
        warned: str | None = None
        problems: dict[str, str] = {}
        reported_drops = 0
        every = api.settings.refresh_s / 2
        due = time.monotonic() + every
        while not self._stop.is_set():
            # Waits are short whatever `refresh_s` is: `stop` must not wait for a long poll.
            notified = feed.wait(max(0.0, min(STOP_CHECK_S, due - time.monotonic())))
            router, plog = api.router, api.log
            if self._stop.is_set() or router is None or plog is None:
                return
            if not notified and time.monotonic() < due:
                continue
            due = time.monotonic() + every
            self._check_leader()
            try:
                # A notice means another replica changed the state: reload whatever its
                # change counter says (the poll, without a notice, trusts the counter).
                router.refresh(force=notified)
                warned = api.store_problem = None
            except BeastError as exc:
                api.store_problem = str(exc)
                if str(exc) != warned:  # once per distinct problem, not twice a second
                    log.warning("cannot refresh the deployed models: %s", exc)
                    warned = str(exc)
            except Exception:  # keep refreshing whatever happened once
                log.exception("route refresh failed")
            now = router.problems()
            for line, why in now.items():
                if problems.get(line) != why:
                    log.warning("model line %s keeps its last routes: %s", line, why)
            for line in problems.keys() - now.keys():
                log.info("model line %s serves its current deployment again", line)
            problems = now
            stats = plog.stats()
            api.metrics.sync_log(stats)
            reported_drops = self._alert_drops(stats.dropped, reported_drops)

    def _check_leader(self) -> None:
        """In a worker process: whether its replica leads, read from the store once a second."""
        api = self.api
        replica = os.environ.get(REPLICA_ENV)
        if api.leader is not None or replica is None:
            return
        if time.monotonic() - self._leader_checked < LEADER_CHECK_S:
            return
        self._leader_checked = time.monotonic()
        try:
            leader = api.call_engine(lambda engine: engine.leader())
        except BeastError:
            return  # the store's trouble is the route refresh's to report
        api.leading = leader is not None and leader.id == replica

    def _alert_drops(self, dropped: int, reported: int) -> int:
        """Turn rows this process's writer dropped into an alert (and resolve it after).

        Returns the drop count now reported. A failure to record the alert (the disk that
        is full for the log is full for alerts too) is retried on the next round.
        """
        if dropped == reported and not self._drop_alert_open:
            return reported
        try:
            self.api.call_engine(
                lambda engine: engine.monitoring.note_log_drops(dropped - reported, dropped)
            )
        except BeastError as exc:
            log.warning("cannot record the dropped-rows alert: %s", exc)
            return reported
        self._drop_alert_open = dropped > reported
        return dropped
