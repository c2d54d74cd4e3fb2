"""POST /v1/predict: one row (`features`) or a batch (`rows`), routed and logged.

A single-row prediction runs on the event loop: handing it to a thread costs more than it
takes (measured: ~25–40% fewer requests/s through run_in_threadpool, with 1 and with 8
clients). A batch is scored and encoded in the thread pool. A prediction the model fails is
still logged, and answered 500 with its prediction_id.

The route is served by a bare ASGI handler (`Predictions.asgi`, called by the app before
Starlette's middleware and routing): Starlette's Request, Response, routing and middleware
took ~180 of ~680 µs a request (cProfile of a one-worker server; XGBoost ~255 µs of it).
With the handler, pooled ids and the row buffer, the app's own CPU per one-row request,
scoring aside, is 73 µs where it was 116 µs (in-process ASGI calls, a loaded 2-core machine).
The handler passes the same door, body limits, parsing and refusals as every other route
(`middleware.refusal`); the route stays declared in Starlette too, which answers it whenever
the app is mounted under a root path, so both must answer alike
(tests/test_http_hot_route.py holds them to it).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engine.core.errors import BeastError
from engine.server.http import schema
from engine.server.http.answers import dumps, one_line
from engine.server.http.api import Api
from engine.server.http.middleware import json_object, parsed_object, read_body, refusal
from engine.server.http.schema import ApiError
from engine.serving.router import Prediction, Router

PATH = "/v1/predict"
JSON_TYPE = "application/json"
_JSON = (b"content-type", JSON_TYPE.encode())
_CONTENT_LENGTH = b"content-length"
_MIDDLES_MAX = 256  # (version, line, experiment, arm) fragments kept (a handful in practice)


class Predictions:
    """The predict handler of one server process."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.settings = api.settings
        self.metrics = api.metrics

    async def predict(self, request: Request) -> Response:
        """POST /v1/predict: one row (`features`) or a batch (`rows`)."""
        document = await json_object(request, self.settings.max_body_bytes)
        router = self.api.serving()
        if "rows" in document:
            return await self._predict_batch(document, router)
        prediction = await self._predict_one(document, router)
        return Response(prediction_body(prediction), _status(prediction), media_type=JSON_TYPE)

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/predict as a bare ASGI application: what `middleware.wrap(predict)` does
        through Starlette — door, body cap, strict JSON, refusals, metrics — without building
        a Request, a Response or a route match for the one-row answer."""
        start = time.perf_counter()
        try:
            headers = scope["headers"]
            self.api.door.admit(headers, post=True, mutation=False)
            declared = None
            for name, value in headers:
                if name == _CONTENT_LENGTH:
                    declared = value
                    break
            raw = await read_body(receive, declared, self.settings.max_body_bytes)
            document = await parsed_object(raw)
            router = self.api.serving()
            if "rows" in document:
                response = await self._predict_batch(document, router)
            else:
                prediction = await self._predict_one(document, router)
                body, status = prediction_body(prediction), _status(prediction)
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(_CONTENT_LENGTH, b"%d" % len(body)), _JSON],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                self.metrics.request("predict", "POST", status, time.perf_counter() - start)
                return
        except Exception as exc:
            response = refusal(exc, "predict", "POST", PATH)
        await response(scope, receive, send)
        self.metrics.request("predict", "POST", response.status_code, time.perf_counter() - start)

    async def _predict_one(self, document: dict[str, Any], router: Router) -> Prediction:
        features, key, model = schema.PREDICT.parse(document)
        try:
            if self.settings.predict_inline:
                prediction = router.predict(features, key=key, model=model)
            else:
                prediction = await run_in_threadpool(router.predict, features, key=key, model=model)
        except BeastError as exc:
            raise routing_refusal(exc) from None
        self.metrics.served((prediction,))
        return prediction

    async def _predict_batch(self, document: dict[str, Any], router: Router) -> Response:
        rows, keys, model = schema.PREDICT_BATCH.parse(document)
        if len(rows) > self.settings.max_rows:
            raise ApiError(
                422, f"{len(rows)} rows is over the limit of {self.settings.max_rows} per request"
            )
        if keys is not None and len(keys) != len(rows):
            raise ApiError(422, f"predict: {len(keys)} keys for {len(rows)} rows (one per row)")

        def work() -> tuple[list[Prediction], bytes, int]:
            predictions = router.predict_batch(rows, keys=keys, model=model)
            failed = [p for p in predictions if p.error is not None]
            out: dict[str, Any] = {}
            if failed:
                out["error"] = one_line(
                    f"{len(failed)} of {len(predictions)} rows failed: {failed[0].error}"
                )
            out["predictions"] = [p.to_json() for p in predictions]
            return predictions, dumps(out), len(failed)

        try:
            predictions, body, failed = await run_in_threadpool(work)
        except BeastError as exc:
            raise routing_refusal(exc) from None
        self.metrics.served(predictions)
        return Response(body, 500 if failed else 200, media_type=JSON_TYPE)


def _status(prediction: Prediction) -> int:
    # Logged like any prediction; 500 tells the client there is no score, and the
    # prediction_id lets it correlate with the log and the alerts.
    return 200 if prediction.error is None else 500


_middles: dict[tuple[str, str, str | None, str], str] = {}


def prediction_body(p: Prediction) -> bytes:
    """`dumps(p.to_json())`, byte for byte, for a scored prediction at a fraction of its cost:
    the fields a route fixes (version, line, experiment, arm) are encoded once per route, the
    id is hex and both numbers are finite floats, written as JSON writes them (`repr`)."""
    pid, score, latency = p.prediction_id, p.score, p.latency_ms
    if (
        p.error is not None
        or type(score) is not float
        or type(latency) is not float
        or score - score != 0.0  # NaN or ±inf: dumps refuses them, and so must this
        or latency - latency != 0.0
        or not (pid.isascii() and pid.isalnum())  # an id needs no escaping (ours are hex)
    ):
        return dumps(p.to_json())
    fixed = (p.version, p.line, p.experiment, p.arm)
    middle = _middles.get(fixed)
    if middle is None:
        if len(_middles) >= _MIDDLES_MAX:
            _middles.clear()
        middle = _middles[fixed] = (
            f',"version":{dumps(p.version).decode()},"line":{dumps(p.line).decode()},'
            f'"experiment":{dumps(p.experiment).decode()},"arm":{dumps(p.arm).decode()},'
            '"latency_ms":'
        )
    return (
        f'{{"prediction_id":"{pid}","score":{score!r}{middle}{round(latency, 4)!r},"error":null}}'
    ).encode()


def routing_refusal(exc: BeastError) -> BeastError | ApiError:
    """The router's plain refusal ("several model lines are deployed: name one") is the
    request's fault once the body passed the schema: a 422; others keep their status."""
    if type(exc) is BeastError:
        return ApiError(422, f"predict: model is required: {exc}")
    return exc


__all__ = ["PATH", "Predictions", "prediction_body", "routing_refusal"]
