"""The one-row predict path's shortcuts answer exactly as the long way does.

`POST /v1/predict` is answered by a bare ASGI handler before Starlette (engine.server.http.predict);
the route stays declared in Starlette, which answers it under a root path. Both must give the
same status, headers and body for every request, good or refused. The pieces the handler uses
instead of the general ones are held to them too: the prediction's body to `dumps(to_json())`,
the preallocated row buffer to `features.row`, the pooled ids to UUIDv7 with 74 random bits.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from engine import Workspace
from engine.core import ids
from engine.server.http.answers import dumps
from engine.server.http.predict import prediction_body
from engine.serving import features
from engine.serving.router import Prediction
from tests.test_http_api import JSON, ROW, TOKEN, ApiClient, client_for, deploy_with_test
from tests.test_serving import INPUTS, SCHEMA

LONG = "the bodies' declarations, Starlette's routing and middleware"


@pytest.fixture
def deployed(registered: Workspace) -> Workspace:
    deploy_with_test(registered)
    return registered


def _pair(client: ApiClient) -> tuple[httpx.AsyncClient, list[int]]:
    """A second client over the same app and engine that always takes Starlette's route, and
    a count of the requests the bare handler answered for the first."""
    app = client.app
    hot = app._predict  # type: ignore[attr-defined]
    answered: list[int] = []

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        answered.append(1)
        await hot(scope, receive, send)

    app._predict = counted  # type: ignore[attr-defined]
    starlette_only = functools.partial(Starlette.__call__, app)

    async def make() -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=starlette_only)
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    return client.portal.call(make), answered


def _both(client: ApiClient, slow: httpx.AsyncClient, **kw: Any) -> tuple[Any, Any]:
    kw.setdefault("headers", JSON)
    fast = client.post("/v1/predict", **kw)
    long = client.portal.call(functools.partial(slow.request, "POST", "/v1/predict", **kw))
    return fast, long


def _same(fast: httpx.Response, long: httpx.Response) -> dict[str, Any]:
    assert fast.status_code == long.status_code, (fast.text, long.text)
    for name in ("content-type", "content-length", "www-authenticate"):
        if name == "content-length" and fast.status_code < 400:
            continue  # the ids and latencies differ, and so may the length
        assert fast.headers.get(name) == long.headers.get(name), name
    a: dict[str, Any] = fast.json()
    b: dict[str, Any] = long.json()
    for doc in (a, b):
        for item in doc.get("predictions", [doc]):
            if "prediction_id" in item:
                assert ids.is_valid(item.pop("prediction_id"))
                assert item.pop("latency_ms") >= 0
                item.pop("arm"), item.pop("version"), item.pop("score")  # random arm
    assert a == b
    return a


REQUESTS: list[dict[str, Any]] = [
    {"json": {"features": ROW}},
    {"json": {"features": list(ROW.values()), "key": "user-1"}},
    {"json": {"features": ROW, "model": "quality-predictor"}},
    {"json": {"rows": [ROW, list(ROW.values())], "keys": ["a", None]}},
    {"json": {"rows": [ROW], "keys": ["a", "b"]}},
    {"json": {"rows": [ROW] * 4}},  # over the client's max_rows of 3
    {"json": {"features": {**ROW, "bogus": 1}}},
    {"json": {"features": {**ROW, "churn": "x"}}},
    {"json": {"features": [1, 2]}},
    {"json": {"features": ROW, "model": "nope"}},
    {"json": {"features": ROW, "key": 7}},
    {"json": {"features": ROW, "colour": "red"}},
    {"json": {"key": "k"}},
    {"json": [ROW]},
    {"content": b""},
    {"content": b"{"},
    {"content": b'{"features": {"coverage": NaN}}'},
    {"content": b'{"features": 1, "features": 2}'},
    {"content": b"\xff\xfe"},
    {"content": b"x" * 5000},  # over the client's 4,096-byte cap
    {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
    {"content": b"{}", "headers": {**JSON, "Content-Type": "application/json; charset=latin-1"}},
    {"json": {"features": ROW}, "headers": {**JSON, "Host": "evil.example"}},
    {"json": {"features": ROW}, "headers": {**JSON, "Origin": "https://evil.example"}},
    {"json": {"features": ROW}, "headers": {**JSON, "Origin": "null"}},
    {"json": {"features": ROW}, "headers": {**JSON, "Sec-Fetch-Site": "cross-site"}},
    {"json": {"features": ROW}, "headers": {**JSON, "Origin": "http://localhost:8000"}},
]


@pytest.fixture
def pair(deployed: Workspace) -> Iterator[tuple[ApiClient, httpx.AsyncClient, list[int]]]:
    with client_for(deployed, max_rows=3, max_body_bytes=4096) as client:
        slow, answered = _pair(client)
        try:
            yield client, slow, answered
        finally:
            client.portal.call(slow.aclose)


def test_the_bare_handler_answers_every_request_as_starlettes_route_does(
    pair: tuple[ApiClient, httpx.AsyncClient, list[int]],
) -> None:
    client, slow, answered = pair
    statuses = set()
    for request in REQUESTS:
        fast, long = _both(client, slow, **request)
        _same(fast, long)
        statuses.add(fast.status_code)
    assert len(answered) == len(REQUESTS)  # every one took the bare handler
    assert statuses == {200, 400, 403, 404, 413, 415, 421, 422}, statuses
    # Both count in the same metric: twice each request, under route="predict".
    metrics = client.get("/metrics").text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("beast_http_requests_total{") and 'route="predict"' in line
    )
    assert counted == 2 * len(REQUESTS)


def test_other_methods_and_paths_still_go_through_starlette(
    pair: tuple[ApiClient, httpx.AsyncClient, list[int]],
) -> None:
    client, _slow, answered = pair
    got = client.get("/v1/predict")
    assert got.status_code == 405 and got.headers["allow"] == "POST"
    assert client.post("/v1/predict/", json={"features": ROW}).status_code in (307, 404)
    assert client.get("/healthz").status_code == 200
    assert answered == []


def test_the_token_is_required_on_the_bare_handler_when_it_is_everywhere(
    deployed: Workspace,
) -> None:
    with client_for(deployed, token_everywhere=True) as client:
        slow, answered = _pair(client)
        try:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                fast, long = _both(
                    client, slow, json={"features": ROW}, headers={**JSON, **headers}
                )
                assert _same(fast, long)["error"]
                assert fast.status_code == 401 and fast.headers["www-authenticate"]
            auth = {**JSON, "Authorization": f"Bearer {TOKEN}"}
            fast, long = _both(client, slow, json={"features": ROW}, headers=auth)
            assert fast.status_code == 200 and _same(fast, long)["line"] == "quality-predictor"
            assert len(answered) == 4
        finally:
            client.portal.call(slow.aclose)


NAMES = st.text(max_size=12) | st.sampled_from(["v1.0", "quality-predictor", 'q"\\\u2028é'])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10)


@settings(max_examples=400, deadline=None)
@given(
    st.builds(
        Prediction,
        st.text(max_size=34) | st.just(ids.new_id()),
        st.none() | FLOATS,
        NAMES,
        NAMES,
        st.none() | NAMES,
        st.sampled_from(["production", "candidate"]),
        st.floats(min_value=0, max_value=1e6) | st.floats(allow_nan=True),
        st.none() | st.text(max_size=20),
    )
)
def test_a_predictions_body_is_what_json_dumps_writes(p: Prediction) -> None:
    try:
        expected = dumps(p.to_json())
    except ValueError:  # NaN or infinity: refused both ways (an internal error)
        with pytest.raises(ValueError):
            prediction_body(p)
        return
    assert prediction_body(p) == expected
    assert json.loads(prediction_body(p))["score"] == p.score


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_the_row_buffer_holds_what_row_returns_or_refuses_alike(value: Any) -> None:
    try:
        expected = np.array([features.row(SCHEMA, value)], dtype=np.float32)
    except features.InvalidFeatures as exc:
        with pytest.raises(features.InvalidFeatures) as caught:
            features.row_buffer(SCHEMA, value)
        assert str(caught.value) == str(exc)
        return
    x = features.row_buffer(SCHEMA, value)
    assert x.dtype == np.float32 and x.shape == (1, SCHEMA.width) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, expected)
    assert features.row_buffer(SCHEMA, value) is x  # preallocated: one per thread and width


def test_pooled_ids_are_uuid7_with_74_random_bits_each_seen_both_ways() -> None:
    drawn = [ids.new_id(1234) for _ in range(3000)]  # more than one refill of the pool
    assert len(set(drawn)) == len(drawn)
    ones = [0] * 128
    for pid in drawn:
        parsed = uuid.UUID(pid)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert ids.is_valid(pid) and ids.issued_ms(pid) == 1234
        assert ids.from_key(*ids.key(pid)) == pid
        for bit in range(128):
            ones[bit] += parsed.int >> (127 - bit) & 1
    fixed = set(range(48)) | set(range(48, 52)) | {64, 65}  # time, version, variant
    assert [b for b in range(128) if b not in fixed and not 0 < ones[b] < len(drawn)] == []
    assert sum(1 for b in range(128) if b not in fixed) == 74
    # Random bits look random: each set in about half the ids (±6 sigma).
    sigma = math.sqrt(len(drawn)) / 2
    assert all(abs(ones[b] - len(drawn) / 2) < 6 * sigma for b in range(128) if b not in fixed)
