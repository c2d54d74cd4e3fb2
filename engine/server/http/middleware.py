"""What runs around every handler: the door, error mapping, request metrics; reading bodies.

Limits come before parsing: the door first (engine.server.http.guard), then the body read
against a byte cap (413); JSON's `NaN`/`Infinity` literals and duplicate keys are refused
(422). Every refusal is a JSON `{"error": "one line"}` with a 4xx, and a client that hangs up
before its body arrived is one INFO line, never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

from engine.core.errors import BeastError
from engine.server.http import schema
from engine.server.http.answers import error_response
from engine.server.http.api import Api
from engine.server.http.schema import ApiError, kind, parse_json

log = logging.getLogger("beast.api")

Handler = Callable[[Request], Awaitable[Response]]

CLIENT_GONE = 499  # counted in metrics for a client that hung up (nginx's convention)
# Bodies above this are parsed (and small batches scored) in a worker thread, so that one
# big request does not stall the event loop for the other clients.
PARSE_INLINE_BYTES = 64 * 1024


def wrap(api: Api, op: schema.Operation, handler: Handler) -> Handler:
    """The door, error mapping and request metrics around one handler."""
    metrics, door, route = api.metrics, api.door, op.name
    post, mutation = op.method == "POST", op.mutation

    async def endpoint(request: Request) -> Response:
        start = time.perf_counter()
        try:
            door.admit(request.scope["headers"], post=post, mutation=mutation)
            response = await handler(request)
        except Exception as exc:
            response = refusal(exc, route, request.method, request.url.path)
        metrics.request(route, request.method, response.status_code, time.perf_counter() - start)
        return response

    return endpoint


def refusal(exc: Exception, route: str, method: str, path: str) -> Response:
    """The answer to a handler's exception (call it while the exception is being handled:
    an unexpected one is logged with its traceback)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, headers=exc.headers, extra=exc.extra)
    if isinstance(exc, BeastError):
        return error_response(exc.http_status, str(exc))
    if isinstance(exc, ClientDisconnect):
        # Nobody is left to answer; one line, no traceback (it is not our fault).
        log.info("client disconnected during %s %s", method, path)
        return Response(status_code=CLIENT_GONE)
    # Never a traceback to the client; the log keeps it (no body, no token).
    log.exception("internal error in %s %s", method, route)
    return error_response(500, "internal error (see the engine's log)")


async def body(request: Request, limit: int) -> bytes:
    """The body, read against the size cap before anything parses it (413 past it)."""
    return await read_body(request.receive, request.headers.get("content-length"), limit)


async def read_body(receive: Receive, declared: str | bytes | None, limit: int) -> bytes:
    """The body from ASGI `receive`, against the size cap: a declared Content-Length past it
    is refused before a byte is read, and reading stops at the first byte past it (413)."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if size > limit:
            raise ApiError(413, f"body of {size} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client hung up
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object (422 for anything else), parsed off the loop when big."""
    return await parsed_object(await body(request, limit))


async def parsed_object(raw: bytes) -> dict[str, Any]:
    """A read body as a JSON object (422 for anything else), parsed off the loop when big."""
    if len(raw) > PARSE_INLINE_BYTES:
        document = await run_in_threadpool(parse_json, raw)
    else:
        document = parse_json(raw)
    if type(document) is not dict:
        raise ApiError(422, f"the body must be a JSON object, got {kind(document)}")
    return document
