"""The HTTP API of the headless engine (DESIGN.md §4): Starlette, served by uvicorn.

Routes: `POST /v1/predict` (one row or a batch), `POST /v1/feedback` (one or a batch),
`GET /v1/status`, `GET /v1/monitor`, `GET /healthz`, `GET /metrics`, `GET /openapi.json`, and
the mutations `POST /v1/deploy|rollback|promote|abort` and `/v1/alerts/{id}/ack`, which
call the `Engine` facade with the CLI's arguments and need `Authorization: Bearer <token>`.

This module makes the application; each job has its module in engine/server/http/:
api (the process's state: facade, router, log; start and stop), refresh (the refresh
thread), middleware (door, errors and metrics around a handler; bodies), predict, feedback,
reads (status, monitor, healthz, metrics, openapi), control (the mutations), answers (JSON
and error bodies), settings; guard is the door (Host, Origin, token, Content-Type), schema
the request bodies (validation and the OpenAPI document, from one declaration), token the
token file.

Decisions:
- Starlette, not FastAPI: the request bodies are validated by our own code anyway (features
  by name against each line's schema, which no static pydantic model can describe), so
  FastAPI would add pydantic's per-request cost and nothing we use (measured on the same
  one-row endpoint: ~30% fewer requests/s, p50 +0.2 ms); the OpenAPI document is generated
  from the bodies' declarations instead.
- One Router and one PredictionLog per process, made in the lifespan; shutting the lifespan
  down flushes the log, so every acknowledged prediction is stored.
- A single-row prediction runs on the event loop (engine.server.http.predict says why), and
  `POST /v1/predict` is answered by a bare ASGI handler before Starlette's middleware and
  routing (`BeastApp`; the same door, limits and refusals, measured in predict's note).
  Everything that can wait on SQLite, a child process or a big body (batches, feedback,
  status, monitor, metrics, mutations) runs in the thread pool.
- Every refusal is a JSON `{"error": "one line"}` with a 4xx (BeastError.http_status); client
  text quoted in it is escaped, and no answer can fail to encode.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from engine.core.workspace import Workspace
from engine.server.http import schema
from engine.server.http.answers import error_response, json_response
from engine.server.http.api import Api
from engine.server.http.control import Control
from engine.server.http.feedback import Feedback
from engine.server.http.middleware import Handler, wrap
from engine.server.http.predict import PATH as PREDICT_PATH
from engine.server.http.predict import Predictions
from engine.server.http.reads import Reads
from engine.server.http.schema import ApiError
from engine.server.http.settings import SETTINGS_ENV, ApiSettings
from engine.server.http.token import configured_token


class BeastApp(Starlette):
    """Starlette, with `POST /v1/predict` handed to its bare ASGI handler first.

    Every other request — and this one when the app is mounted under a root path, where the
    path differs — goes through Starlette's middleware and routes as declared.
    """

    def __init__(self, *args: Any, predictions: Predictions, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._predict = predictions.asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == PREDICT_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            await self._predict(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    workspace: Workspace,
    settings: ApiSettings | None = None,
    *,
    token: str | None = None,
    api: Api | None = None,
) -> Starlette:
    """The ASGI application for one workspace. Nothing is opened until the lifespan starts."""
    api = api or Api(workspace, settings or ApiSettings(), token)
    predictions, feedback, reads, control = (
        Predictions(api),
        Feedback(api),
        Reads(api),
        Control(api),
    )
    handlers: dict[str, Handler] = {
        "predict": predictions.predict,
        "feedback": feedback.feedback,
        "status": reads.status,
        "monitor": reads.monitor,
        "healthz": reads.healthz,
        "metrics": reads.prometheus,
        "openapi": reads.openapi,
        "deploy": control.deploy,
        "rollback": control.rollback,
        "promote": control.promote,
        "abort": control.abort,
        "ack": control.ack,
        "rollout_pause": control.rollout_pause,
        "rollout_resume": control.rollout_resume,
        "rollout_abort": control.rollout_abort,
    }
    routes = [
        Route(op.path, wrap(api, op, handlers[op.name]), methods=[op.method])
        for op in schema.OPERATIONS
    ]

    async def unmatched(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        if "Allow" in headers:  # Starlette joins a set: the same order on every answer
            headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
        try:
            api.door.admit_host(request.scope["headers"])
        except ApiError as refused:
            status, detail, headers = refused.status, refused.message, {}
        else:
            detail = f"{detail}: {request.method} {request.url.path[:200]}"
            if status == 404:
                detail += " (see /openapi.json for the routes)"
        api.metrics.request("unmatched", request.method, status, 0.0)
        return error_response(status, detail, headers=headers)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        api.start()
        try:
            yield
        finally:
            api.stop()

    app = BeastApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: unmatched},
        predictions=predictions,
    )
    app.state.api = api
    return app


def app_from_env() -> Starlette:
    """The uvicorn factory for worker processes (`beast engine --workers N`).

    The workspace comes from `$BEAST_HOME` and the settings from `$BEAST_ENGINE_SETTINGS`
    (set by `beast engine`); the token is read here, so it never travels in the environment
    unless the operator put it there.
    """
    workspace = Workspace.locate()
    raw = os.environ.get(SETTINGS_ENV)
    settings = ApiSettings.from_env(raw) if raw else ApiSettings()
    return create_app(workspace, settings, token=configured_token(workspace))


__all__ = [
    "SETTINGS_ENV",
    "Api",
    "ApiSettings",
    "BeastApp",
    "app_from_env",
    "create_app",
    "error_response",
    "json_response",
]
