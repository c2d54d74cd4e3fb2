"""One HTTP server process's state: the engine facade, the router, the prediction log.

`Api.start` opens them (the lifespan's startup: loads the deployed models) and starts the
refresh thread (engine.server.http.refresh); `Api.stop` flushes the log, so every
acknowledged prediction is stored. Handlers (predict, feedback, reads, control) reach them
through the accessors here, which answer 503 while the engine starts or stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from engine.core.identity import current_actor
from engine.core.workspace import Workspace
from engine.facade import Engine
from engine.monitoring import feedback as labels
from engine.server import prometheus as prom
from engine.server.http import schema
from engine.server.http.guard import Door
from engine.server.http.refresh import Refresher
from engine.server.http.schema import ApiError
from engine.server.http.settings import ApiSettings
from engine.server.http.token import token_path
from engine.serving.log_process import open_prediction_log
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router
from engine.store.base import Store
from engine.store.opening import open_store

log = logging.getLogger("beast.api")

T = TypeVar("T")

STARTING = "the engine is starting or stopping"


class Api:
    """One server process's state: the router, the prediction log, the engine facade."""

    def __init__(
        self, workspace: Workspace, settings: ApiSettings, token: str | None = None
    ) -> None:
        self.workspace = workspace
        self.settings = settings
        self.token = token
        self.door = Door(
            allowed_hosts=settings.allowed_hosts,
            token=token,
            token_everywhere=settings.token_everywhere,
            token_file=str(token_path(workspace)),
        )
        self.metrics = prom.ApiMetrics()
        self.engine: Engine | None = None
        self.router: Router | None = None
        self.log: PredictionLog | None = None
        self.tolerance = 0.0
        self.contracts = labels.Contracts()
        self.started_at = time.time()
        self.store_problem: str | None = None  # the last route refresh's store error
        # The facade holds one SQLite connection: one caller at a time (mutations are rare).
        self._engine_lock = threading.Lock()
        # Feedback writes use their own connection, so a slow status never delays them.
        self.feedback_lock = threading.Lock()
        self._feedback_store: Store | None = None
        self._refresher: Refresher | None = None
        # Whether this replica leads: the daemon's heartbeat thread answers in its process
        # (`beast engine`); a worker process (`--workers N`) reads its replica's row instead,
        # once a second on the refresh thread, into `leading`.
        self.leader: Callable[[], bool] | None = None
        self.leading = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the engine, the prediction log and the router (loads the deployed models)."""
        if self.router is not None:
            return
        engine = Engine(self.workspace, actor=f"{current_actor()} (api)")
        try:
            self.workspace.require()
            config = engine.config
            self.tolerance = config.thresholds.tolerance_points
            self.contracts = labels.Contracts.of_config(config)
            plog = open_prediction_log(
                self.workspace.db_path,
                tolerance=self.tolerance,
                interval=self.settings.log_interval_s,
            )
        except BaseException:
            engine.close()
            raise
        try:
            router = Router(engine, log=plog, refresh_s=self.settings.refresh_s)
        except BaseException:
            plog.close()
            engine.close()
            raise
        self.engine, self.log, self.router = engine, plog, router
        self._feedback_store = open_store(self.workspace.db_path)
        self._refresher = Refresher(self)
        self._refresher.start()
        routes = ", ".join(
            f"{r.line}: {r.production.ref.name}"
            + (f" + {r.candidate.ref.name} ({r.candidate_bp / 100:g}%)" if r.candidate else "")
            for r in router.routes().values()
        )
        log.info("serving %s (%s)", self.workspace.root, routes or "nothing deployed yet")

    def stop(self) -> None:
        """Flush the prediction log and close everything (the lifespan's shutdown)."""
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None
        if self.log is not None:
            self.log.close()  # writes everything still queued
            stats = self.log.stats()
            self.metrics.sync_log(stats)
            log.info("prediction log flushed: %d written, %d dropped", stats.written, stats.dropped)
        if self.router is not None:
            self.router.close()
        if self._feedback_store is not None:
            self._feedback_store.close()
        if self.engine is not None:
            self.engine.close()
        self.router = self.log = self.engine = self._feedback_store = None
        self.metrics.process_exit()

    # -- what handlers reach -----------------------------------------------------------------

    def is_leader(self) -> bool:
        """Whether the replica this process serves for leads (/healthz's `leader`)."""
        return self.leader() if self.leader is not None else self.leading

    def serving(self) -> Router:
        """The router (503 while the engine starts or stops)."""
        if self.router is None:
            raise ApiError(503, STARTING)
        return self.router

    def feedback_store(self) -> Store:
        """The feedback writers' own store (503 while the engine starts or stops)."""
        if self._feedback_store is None:
            raise ApiError(503, STARTING)
        return self._feedback_store

    def call_engine(self, fn: Callable[[Engine], T], actor: str | None = None) -> T:
        """`fn(engine)`, one caller at a time, acting as `actor` when given."""
        if self.engine is None:
            raise ApiError(503, STARTING)
        with self._engine_lock:
            engine = self.engine
            before = engine.actor
            if actor is not None:
                engine.actor = actor
            try:
                return fn(engine)
            finally:
                engine.actor = before

    def context(self) -> schema.Context:
        """What /openapi.json says that depends on this engine: lines, label range, limits."""
        routes = self.router.routes() if self.router is not None else {}
        return schema.Context(
            lines={line: route.schema for line, route in sorted(routes.items())},
            label_range=self.contracts.widest(routes),
            binary=self.contracts.any_binary(routes),
            max_rows=self.settings.max_rows,
            max_body_bytes=self.settings.max_body_bytes,
            token_everywhere=self.settings.token_everywhere,
        )

    def readiness(self) -> tuple[str, str | None]:
        """("ok" | "degraded" | "unready", why): can this process serve predictions?

        unready (503): the store is unusable, or nothing can serve (nothing deployed, or no
        deployed line could load); degraded (200): serving, but a line keeps its last routes
        or the log writer failed. Cheap (a stat and what the router already knows), so a load
        balancer may ask often.
        """
        router, plog = self.router, self.log
        if router is None or plog is None:
            return "unready", STARTING
        problem = self.store_unusable()
        if problem is not None:
            return "unready", problem
        routes, problems = router.routes(), router.problems()
        if not routes:
            if problems:
                line, why = sorted(problems.items())[0]
                return "unready", f"no model line can serve: {line}: {why}"
            return "unready", "nothing is deployed: deploy a model first"
        if problems:
            line, why = sorted(problems.items())[0]
            return "degraded", f"model line {line} keeps its last routes: {why}"
        last_error = plog.stats().last_error
        if last_error is not None:
            return "degraded", f"the prediction log writer failed: {last_error}"
        return "ok", None

    def store_unusable(self) -> str | None:
        """Why the store cannot be used now, or None."""
        # The log writer keeps its connection open for the process's life: its store knows
        # whether the file on disk is still the database it writes (deleted, emptied or
        # replaced under a running engine, the open connections go on with the old one).
        plog = self.log
        problem = plog.store.file_problem() if plog is not None else None
        return problem or self.store_problem
