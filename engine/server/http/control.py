"""The mutations: POST /v1/deploy, /v1/rollback, /v1/promote, /v1/abort, a progressive
rollout's /v1/rollout/pause, /v1/rollout/resume, /v1/rollout/abort, and /v1/alerts/{id}/ack.

Each calls the `Engine` facade with the CLI's arguments, as the actor the body names (or the
client's address), and needs `Authorization: Bearer <token>` (engine.server.http.guard). A
mutation the engine refuses after its body passed the schema is refused by the state: 404 or
409.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from engine.core import text
from engine.core.errors import BeastError
from engine.core.records import Change, Expect
from engine.facade import Engine
from engine.server.http import schema
from engine.server.http.answers import json_response
from engine.server.http.api import Api
from engine.server.http.middleware import json_object
from engine.server.http.schema import ApiError


class Control:
    """The mutation handlers of one server process."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def _body(self, request: Request) -> dict[str, Any]:
        return await json_object(request, self.api.settings.max_body_bytes)

    def _actor(self, request: Request, named: str | None) -> str:
        client = request.client.host if request.client else "unknown"
        return f"{named} (api from {client})" if named else f"api client {client}"

    async def _mutate(self, fn: Callable[[Engine], Change], actor: str) -> Response:
        try:
            change = await run_in_threadpool(self.api.call_engine, fn, actor)
        except BeastError as exc:
            # The body passed the schema: what the engine still refuses, it refuses by the
            # state (nothing to roll back to, a verdict, a model file): 409, unless it is a
            # thing that does not exist (404) or a store that cannot answer (503).
            if exc.http_status in (400, 422):
                raise ApiError(409, str(exc)) from None
            raise
        return json_response(change.to_json())

    async def deploy(self, request: Request) -> Response:
        """POST /v1/deploy: as `beast deploy` (production at 100%, or an A/B candidate)."""
        body = schema.DEPLOY.parse(await self._body(request))
        path, version, model, traffic, ab_test, expect, revision, note, actor = body
        return await self._mutate(
            lambda e: e.deploy(
                path,
                version=version,
                model=model,
                traffic=traffic,
                ab_test=ab_test,
                note=note,
                expect=_expect(expect, revision),
            ),
            self._actor(request, actor),
        )

    async def rollback(self, request: Request) -> Response:
        """POST /v1/rollback: as `beast rollback [V]`."""
        body = schema.ROLLBACK.parse(await self._body(request))
        version, model, expect, revision, note, actor = body
        return await self._mutate(
            lambda e: e.rollback(version, model=model, note=note, expect=_expect(expect, revision)),
            self._actor(request, actor),
        )

    async def promote(self, request: Request) -> Response:
        """POST /v1/promote: as `beast promote NAME [--force]`."""
        body = schema.PROMOTE.parse(await self._body(request))
        name, force, expect, revision, note, actor = body
        return await self._mutate(
            lambda e: e.promote(
                name, force=bool(force), note=note, expect=_expect(expect, revision)
            ),
            self._actor(request, actor),
        )

    async def abort(self, request: Request) -> Response:
        """POST /v1/abort: as `beast abort NAME`."""
        name, expect, revision, note, actor = schema.ABORT.parse(await self._body(request))
        return await self._mutate(
            lambda e: e.abort(name, note=note, expect=_expect(expect, revision)),
            self._actor(request, actor),
        )

    async def rollout_pause(self, request: Request) -> Response:
        """POST /v1/rollout/pause: as `beast rollout pause NAME`."""
        name, note, actor = schema.ROLLOUT.parse(await self._body(request))
        return await self._mutate(
            lambda e: e.pause_rollout(name, note=note), self._actor(request, actor)
        )

    async def rollout_resume(self, request: Request) -> Response:
        """POST /v1/rollout/resume: as `beast rollout resume NAME`."""
        name, note, actor = schema.ROLLOUT.parse(await self._body(request))
        return await self._mutate(
            lambda e: e.resume_rollout(name, note=note), self._actor(request, actor)
        )

    async def rollout_abort(self, request: Request) -> Response:
        """POST /v1/rollout/abort: as `beast rollout abort NAME`."""
        name, note, actor = schema.ROLLOUT.parse(await self._body(request))
        return await self._mutate(
            lambda e: e.abort_rollout(name, note=note), self._actor(request, actor)
        )

    async def ack(self, request: Request) -> Response:
        """POST /v1/alerts/{id}/ack: as `beast alerts ack ID [--note TEXT]`."""
        alert_id = _alert_id(request.path_params["id"])
        note, actor = schema.ACK.parse(await self._body(request))
        alert = await run_in_threadpool(
            self.api.call_engine,
            lambda e: e.acknowledge_alert(alert_id, note=note),
            self._actor(request, actor),
        )
        return json_response(alert.to_json())


def _alert_id(raw: str) -> int:
    """The path's alert id: a positive integer (404 otherwise: no such alert)."""
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1 or len(raw) > 18:
        raise ApiError(404, f"no alert {text.escape(raw[:40])} (an alert id is a positive integer)")
    return int(raw)


def _expect(production: str | None, revision: int | None) -> Expect | None:
    if production is None and revision is None:
        return None
    return Expect(production=production, revision=revision)
