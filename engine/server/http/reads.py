"""The read routes: GET /v1/status, /v1/monitor, /healthz, /metrics and /openapi.json.

Everything that can wait on SQLite (status, monitor, metrics) runs in the thread pool;
/healthz is cheap (a stat and what the router already knows), so a load balancer may ask
often.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from engine.core import text
from engine.core.errors import BeastError
from engine.facade import Engine
from engine.monitoring import rollups as rollup_metrics
from engine.server import prometheus as prom
from engine.server.http import schema
from engine.server.http.answers import json_response
from engine.server.http.api import Api
from engine.server.http.schema import ApiError

log = logging.getLogger("beast.api")


class Reads:
    """The read handlers of one server process."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def status(self, request: Request) -> Response:
        """GET /v1/status: the `beast status --json` document."""
        document = await run_in_threadpool(self.api.call_engine, lambda e: e.status().to_json())
        return json_response(document)

    async def monitor(self, request: Request) -> Response:
        """GET /v1/monitor?window=1h&model=LINE: the `beast monitor --json` document."""
        window = request.query_params.get("window", "1h")
        if window not in rollup_metrics.WINDOWS:
            raise ApiError(
                422,
                f"unknown window '{text.escape(window[:20])}' "
                f"(use {', '.join(rollup_metrics.WINDOWS)})",
            )
        model = request.query_params.get("model")
        if model is not None:  # given, even empty: a name, as the document says
            model = schema.MODEL.check(model, "model")
        document = await run_in_threadpool(self.monitor_document, window, model)
        return json_response(document)

    def monitor_document(self, window: str = "1h", model: str | None = None) -> dict[str, Any]:
        """The `beast monitor --json` document (for /v1/monitor and /metrics' gauges)."""

        def report(engine: Engine) -> dict[str, Any]:
            return engine.report(window=window, model=model).to_json()

        return self.api.call_engine(report)

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: readiness (200 ok or degraded; 503 unready or starting), and how the
        prediction log writer is doing."""
        router, plog = self.api.router, self.api.log
        if router is None or plog is None:
            return json_response(
                {"status": "starting", "pid": os.getpid(), "leader": self.api.is_leader()}, 503
            )
        status, reason = self.api.readiness()
        stats = plog.stats()
        return json_response(
            {
                "status": status,
                "reason": reason,
                "problems": router.problems(),
                "pid": os.getpid(),
                "leader": self.api.is_leader(),
                "uptime_s": round(time.time() - self.api.started_at, 3),
                "log": {
                    "queued": stats.queued,
                    "written": stats.written,
                    "dropped": stats.dropped,
                    "last_error": stats.last_error,
                    "log_writer_restarts": stats.restarts,
                },
                "serving": {
                    r.line: {
                        "production": r.production.ref.name,
                        "candidate": r.candidate.ref.name if r.candidate else None,
                        "candidate_traffic": r.candidate_bp / 100,
                        "experiment": r.experiment,
                        "revision": r.revision,
                    }
                    for r in router.routes().values()
                },
            },
            503 if status == "unready" else 200,
        )

    async def prometheus(self, request: Request) -> Response:
        """GET /metrics: Prometheus text exposition."""
        body = await run_in_threadpool(self._render_metrics)
        return Response(body, media_type=prom.CONTENT_TYPE)

    def _render_metrics(self) -> bytes:
        if self.api.log is not None:
            self.api.metrics.sync_log(self.api.log.stats())
        monitor: dict[str, Any] | None = None
        problem: str | None = None
        try:
            monitor = self.monitor_document()
        except (BeastError, ApiError) as exc:
            problem = str(exc)
            log.warning("monitoring gauges left out of /metrics: %s", problem)
        except Exception:  # the serving series are still worth a scrape
            problem = "internal error"
            log.exception("monitoring gauges left out of /metrics")
        return self.api.metrics.render(monitor, problem)

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: the OpenAPI 3.1 document, from the bodies that validate requests."""
        return json_response(schema.openapi_document(self.api.context()))
