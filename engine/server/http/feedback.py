"""POST /v1/feedback: the actual value for a prediction, or a batch of them.

Feedback writes go through their own store connection (the `Api`'s feedback store), so a
slow status or monitor never delays them; a batch is one transaction with an answer per item.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from engine.core import text
from engine.core.errors import Conflict, NotFound
from engine.monitoring import feedback as labels
from engine.server.http import schema
from engine.server.http.answers import json_response, one_line
from engine.server.http.api import Api
from engine.server.http.middleware import json_object
from engine.server.http.schema import ApiError


class Feedback:
    """The feedback handler of one server process."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.settings = api.settings
        self.metrics = api.metrics

    async def feedback(self, request: Request) -> Response:
        """POST /v1/feedback: the actual value for a prediction, or a batch of them."""
        document = await json_object(request, self.settings.max_body_bytes)
        if "items" in document:
            return await self._feedback_batch(document)
        pid, actual = schema.FEEDBACK.parse(document)
        try:
            status = await run_in_threadpool(self._label_one, pid, actual)
        except NotFound as exc:
            self.metrics.feedback_outcome("not found")
            raise ApiError(
                404, str(exc), extra={"prediction_id": pid, "status": "not found"}
            ) from None
        except Conflict as exc:
            self.metrics.feedback_outcome("conflict")
            raise ApiError(
                409, str(exc), extra={"prediction_id": pid, "status": "conflict"}
            ) from None
        except labels.OutOfRange as exc:
            self.metrics.feedback_outcome("invalid")
            raise ApiError(
                422, str(exc), extra={"prediction_id": pid, "status": "invalid"}
            ) from None
        self.metrics.feedback_outcome(status)
        return json_response(
            {"prediction_id": pid, "status": status}, 202 if status == "pending" else 200
        )

    def _label_one(self, pid: str, actual: float | bool) -> str:
        api = self.api
        store = api.feedback_store()
        with api.feedback_lock:
            return labels.record(store, pid, actual, api.contracts)

    def _label_many(self, items: list[tuple[str, object]]) -> list[labels.Outcome]:
        api = self.api
        store = api.feedback_store()
        with api.feedback_lock:
            return labels.record_many(store, items, api.contracts)

    async def _feedback_batch(self, document: dict[str, Any]) -> Response:
        """All items in one transaction; every item gets its own answer (200 overall).

        A malformed item (not {prediction_id, actual}, wrong types) refuses the whole body
        (422) like any schema violation; what depends on the state — unknown id, conflict,
        outside the line's label range — is answered per item.
        """
        (items,) = schema.FEEDBACK_BATCH.parse(document)
        # false/true are labels only while a binary line is deployed (as /openapi.json says).
        flags = [i for i, (_, actual) in enumerate(items) if isinstance(actual, bool)]
        if flags and not self.api.context().binary:
            raise ApiError(
                422,
                f"items[{flags[0]}].actual must be a number, got bool (false/true label binary "
                "lines; none is deployed)",
            )
        if len(items) > self.settings.max_rows:
            raise ApiError(422, f"{len(items)} items is over the limit of {self.settings.max_rows}")
        outcomes = await run_in_threadpool(self._label_many, items) if items else []
        results: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for outcome in outcomes:
            answer: dict[str, Any] = {
                "prediction_id": outcome.prediction_id,
                "status": outcome.status,
                "code": outcome.http_status,
            }
            if outcome.message is not None:
                answer["error"] = one_line(text.escape(outcome.message))
            results.append(answer)
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        for status, n in counts.items():
            self.metrics.feedback_outcome(status, n)
        return json_response({"results": results, "counts": counts})
