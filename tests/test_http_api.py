"""The HTTP API (engine/server/http/app.py) over httpx's ASGI transport: every route, every refusal.

Real models, a real workspace, the real router and prediction log: the client talks ASGI to
the application, whose lifespan opens and closes them exactly as under `beast engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.from_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from engine import Engine, Workspace
from engine.core import ids
from engine.core.errors import BeastError
from engine.server.http.app import Api, ApiSettings, create_app
from engine.server.http.token import TOKEN_ENV, configured_token, ensure_token, token_path
from tests.helpers import FEATURES, history_of, model_path
from tests.serving_helpers import logged

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
ROW = {"coverage": 0.8, "complexity": 0.3, "lint_density": 0.1, "duplication": 0.05, "churn": 0.4}
TEST = "ab-v2"


def deploy_with_test(ws: Workspace) -> None:
    """v1.0 in production, v2.0 as a 30% candidate of test ab-v2."""
    engine = Engine(ws, actor="tester")
    try:
        engine.deploy(model_path(ws, "v1.0"))
        engine.deploy(model_path(ws, "v2.0"), traffic=30, ab_test=TEST)
    finally:
        engine.close()


@pytest.fixture
def deployed(registered: Workspace) -> Workspace:
    deploy_with_test(registered)
    return registered


class ApiClient:
    """A synchronous httpx client over `httpx.ASGITransport`, with the app's lifespan run
    around it (startup on enter, shutdown on exit), on an event loop in a helper thread."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ApiClient:
        self.portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        self.portal.call(self._open)
        self._lifespan = self.portal.start_task_soon(self._run_lifespan)
        self._lifespan_message("lifespan.startup")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._lifespan_message("lifespan.shutdown")
            self._lifespan.result(timeout=30)
            self.portal.call(self.http.aclose)
        finally:
            self._stack.close()

    async def _open(self) -> None:
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        transport = httpx.ASGITransport(app=self.app)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    async def _run_lifespan(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        await self.app(scope, self._inbox.get, self._outbox.put)  # type: ignore[arg-type]

    def _lifespan_message(self, kind: str) -> None:
        self.portal.call(self._inbox.put, {"type": kind})
        answer = self.portal.call(self._outbox.get)
        assert answer["type"] == f"{kind}.complete", answer

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.portal.call(functools.partial(self.http.request, method, url, **kw))

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)


def client_for(ws: Workspace, **settings: Any) -> ApiClient:
    token = settings.pop("token", TOKEN)
    return ApiClient(create_app(ws, ApiSettings(**settings), token=token))


@pytest.fixture
def client(deployed: Workspace) -> Iterator[ApiClient]:
    with client_for(deployed) as c:
        yield c


def api_of(client: ApiClient) -> Api:
    api = client.app.state.api
    assert isinstance(api, Api)
    return api


def flush(client: ApiClient) -> None:
    log = api_of(client).log
    assert log is not None
    log.flush()


def rows_in_log(ws: Workspace) -> list[dict[str, Any]]:
    return logged(ws)


def assert_error(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    assert "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), message


# -- predictions ------------------------------------------------------------------------------


def test_predict_one_row_by_name_and_as_a_list(client: ApiClient, deployed: Workspace) -> None:
    by_name = client.post("/v1/predict", json={"features": ROW})
    assert by_name.status_code == 200, by_name.text
    doc = by_name.json()
    assert set(doc) >= {"prediction_id", "score", "version", "experiment", "arm", "latency_ms"}
    assert ids.is_valid(doc["prediction_id"])
    assert isinstance(doc["score"], float) and doc["error"] is None
    assert doc["experiment"] == TEST
    assert (doc["version"], doc["arm"]) in {("v1.0", "production"), ("v2.0", "candidate")}
    # The same numbers as a list in the model's order give the same score on the same arm.
    as_list = client.post(
        "/v1/predict", json={"features": [ROW[n] for n in FEATURES], "key": "k-1"}
    ).json()
    again = client.post("/v1/predict", json={"features": ROW, "key": "k-1"}).json()
    assert as_list["version"] == again["version"] and as_list["score"] == again["score"]
    flush(client)
    logged = {r["pid"]: r for r in rows_in_log(deployed)}
    assert logged[doc["prediction_id"]]["version"] == doc["version"]


def test_a_key_sticks_to_its_arm_and_the_split_is_used(client: ApiClient) -> None:
    arms = {}
    for i in range(200):
        first = client.post("/v1/predict", json={"features": ROW, "key": f"user-{i}"}).json()
        arms[i] = first["arm"]
    for i in range(0, 200, 20):
        again = client.post("/v1/predict", json={"features": ROW, "key": f"user-{i}"}).json()
        assert again["arm"] == arms[i]
    candidates = sum(arm == "candidate" for arm in arms.values())
    assert 25 <= candidates <= 95  # 30% of 200 = 60; far outside this would be a broken split


def test_predict_batch(client: ApiClient, deployed: Workspace) -> None:
    rows = [dict(ROW, coverage=i / 100) for i in range(100)]
    keys = [f"k{i}" for i in range(100)]
    response = client.post("/v1/predict", json={"rows": rows, "keys": keys})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 100
    assert len({p["prediction_id"] for p in predictions}) == 100
    assert all(isinstance(p["score"], float) for p in predictions)
    as_lists = client.post(
        "/v1/predict", json={"rows": [[r[n] for n in FEATURES] for r in rows], "keys": keys}
    ).json()["predictions"]
    assert [p["score"] for p in as_lists] == [p["score"] for p in predictions]
    flush(client)
    logged = {r["pid"]: r for r in rows_in_log(deployed)}
    for p in predictions:
        assert logged[p["prediction_id"]]["version"] == p["version"]


def test_predict_names_the_model_line(client: ApiClient) -> None:
    ok = client.post("/v1/predict", json={"features": ROW, "model": "quality-predictor"})
    assert ok.status_code == 200
    assert_error(client.post("/v1/predict", json={"features": ROW, "model": "nope"}), 404, "nope")


def test_nothing_deployed_is_503(registered: Workspace) -> None:
    with client_for(registered) as client:
        assert_error(client.post("/v1/predict", json={"features": ROW}), 503, "deploy")


BAD_PREDICTIONS: list[tuple[str, bytes, int, str]] = [
    ("not json", b'{"features": [1, 2', 400, "json"),
    ("empty body", b"", 400, "empty"),
    ("a list, not an object", b"[1, 2, 3]", 422, "object"),
    ("NaN literal", b'{"features": [NaN, 0, 0, 0, 0]}', 422, "NaN"),
    ("Infinity literal", b'{"features": [Infinity, 0, 0, 0, 0]}', 422, "Infinity"),
    ("-Infinity literal", b'{"features": [-Infinity, 0, 0, 0, 0]}', 422, "Infinity"),
    ("too few", json.dumps({"features": [1, 2, 3, 4]}).encode(), 422, "5"),
    ("too many", json.dumps({"features": [1, 2, 3, 4, 5, 6]}).encode(), 422, "5"),
    ("missing name", json.dumps({"features": {"coverage": 1}}).encode(), 422, "missing"),
    ("unknown name", json.dumps({"features": dict(ROW, typo=1)}).encode(), 422, "typo"),
    ("string", json.dumps({"features": dict(ROW, churn="0.4")}).encode(), 422, "churn"),
    ("boolean", json.dumps({"features": dict(ROW, churn=True)}).encode(), 422, "churn"),
    ("null", json.dumps({"features": dict(ROW, churn=None)}).encode(), 422, "churn"),
    ("nested list", json.dumps({"features": [[1], 2, 3, 4, 5]}).encode(), 422, "coverage"),
    ("float32 overflow", json.dumps({"features": dict(ROW, churn=1e39)}).encode(), 422, "churn"),
    ("1e400 (inf)", b'{"features": [1e400, 0, 0, 0, 0]}', 422, "coverage"),
    ("features a string", json.dumps({"features": "1,2,3,4,5"}).encode(), 422, "features"),
    ("no features", json.dumps({"key": "k"}).encode(), 422, "features"),
    ("unknown field", json.dumps({"features": ROW, "modle": "x"}).encode(), 422, "modle"),
    ("key not a string", json.dumps({"features": ROW, "key": 7}).encode(), 422, "key"),
    ("empty batch", json.dumps({"rows": []}).encode(), 422, "empty"),
    ("rows and features", json.dumps({"rows": [ROW], "features": ROW}).encode(), 422, "features"),
    ("a key not text", json.dumps({"rows": [ROW], "keys": [3]}).encode(), 422, "keys[0]"),
    ("a control character", json.dumps({"features": ROW, "key": "a\x1b"}).encode(), 422, "key"),
    ("a model not a name", json.dumps({"features": ROW, "model": "a b"}).encode(), 422, "model"),
    ("duplicate key", b'{"features": [1, 2, 3, 4, 5], "features": [1]}', 422, "duplicate"),
    ("rows not a list", json.dumps({"rows": {"a": 1}}).encode(), 422, "rows"),
    ("bad row", json.dumps({"rows": [ROW, dict(ROW, churn="x")]}).encode(), 422, "row 1"),
    ("keys mismatch", json.dumps({"rows": [ROW, ROW], "keys": ["a"]}).encode(), 422, "keys"),
    ("too many rows", json.dumps({"rows": [[0, 0, 0, 0, 0]] * 10_001}).encode(), 422, "10000"),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000, 400, "json"),
    ("huge integer", b'{"features": [' + b"9" * 5000 + b", 0, 0, 0, 0]}", 400, "json"),
    ("not utf-8", b'{"features": "\xff\xfe"}', 400, "json"),
]


@pytest.mark.parametrize(
    ("body", "status", "word"),
    [case[1:] for case in BAD_PREDICTIONS],
    ids=[case[0] for case in BAD_PREDICTIONS],
)
def test_bad_predictions_are_4xx_with_one_line(
    client: ApiClient, deployed: Workspace, body: bytes, status: int, word: str
) -> None:
    response = client.post("/v1/predict", content=body, headers=JSON)
    assert_error(response, status, word)
    # Nothing was logged for a refused request, and the server still serves.
    assert client.post("/v1/predict", json={"features": ROW}).status_code == 200
    flush(client)
    assert len(rows_in_log(deployed)) == 1


def test_body_limit_applies_before_parsing(client: ApiClient) -> None:
    big = b'{"features": [' + b"0, " * (1 << 20) + b"0]}"  # 3 MiB
    assert_error(client.post("/v1/predict", content=big, headers=JSON), 413, "limit")
    # Without Content-Length (chunked), the stream is cut at the cap as well.

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(32):  # 2 MiB
            yield b" " * 65536

    assert_error(client.post("/v1/predict", content=chunks(), headers=JSON), 413, "limit")
    assert_error(
        client.post("/v1/predict", content=b"{}", headers={**JSON, "content-length": "x"}),
        400,
        "length",
    )


# -- feedback ---------------------------------------------------------------------------------


def predict(client: ApiClient, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/predict", json={"features": ROW, **extra})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def test_feedback_recorded_duplicate_conflict_unknown(
    client: ApiClient, deployed: Workspace
) -> None:
    pid = predict(client)["prediction_id"]
    flush(client)
    first = client.post("/v1/feedback", json={"prediction_id": pid, "actual": 71.5})
    assert first.status_code == 200 and first.json() == {"prediction_id": pid, "status": "recorded"}
    again = client.post("/v1/feedback", json={"prediction_id": pid, "actual": 71.5})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    other = client.post("/v1/feedback", json={"prediction_id": pid, "actual": 12})
    assert_error(other, 409, "71.5")
    assert other.json()["status"] == "conflict"
    old = ids.new_id(int(time.time() * 1000) - 3_600_000)  # an hour old, never logged
    assert_error(client.post("/v1/feedback", json={"prediction_id": old, "actual": 1}), 404)
    assert_error(client.post("/v1/feedback", json={"prediction_id": "xyz", "actual": 1}), 404)
    assert [r["actual"] for r in rows_in_log(deployed) if r["pid"] == pid] == [71.5]


@pytest.mark.parametrize(
    ("document", "status", "word"),
    [
        ({"prediction_id": "PID", "actual": "70"}, 422, "number"),
        ({"prediction_id": "PID", "actual": True}, 422, "number"),
        ({"prediction_id": "PID", "actual": None}, 422, "actual is required"),
        ({"prediction_id": "PID"}, 422, "actual is required"),
        ({"prediction_id": "PID", "actual": 101}, 422, "[0, 100]"),
        ({"prediction_id": "PID", "actual": -1e6}, 422, "[0, 100]"),
        ({"prediction_id": "x" * 65, "actual": 50}, 422, "64"),
        ({"actual": 70}, 422, "prediction_id"),
        ({"prediction_id": 7, "actual": 70}, 422, "prediction_id"),
        ({"prediction_id": "PID", "actual": 70, "extra": 1}, 422, "extra"),
        ({"items": "nope"}, 422, "items"),
    ],
)
def test_bad_feedback_is_422(
    client: ApiClient, document: dict[str, Any], status: int, word: str
) -> None:
    pid = predict(client)["prediction_id"]
    flush(client)  # a logged prediction: the range is its line's
    body = json.loads(json.dumps(document).replace("PID", pid))
    assert_error(client.post("/v1/feedback", json=body), status, word)


def test_feedback_literal_nan_is_refused(client: ApiClient) -> None:
    pid = predict(client)["prediction_id"]
    body = f'{{"prediction_id": "{pid}", "actual": NaN}}'.encode()
    assert_error(client.post("/v1/feedback", content=body, headers=JSON), 422, "NaN")


def test_feedback_before_the_log_flushes_is_accepted_then_matched(deployed: Workspace) -> None:
    # A writer that would wait an hour: the prediction stays in its buffer until flushed.
    with client_for(deployed, log_interval_s=3600) as client:
        pid = predict(client)["prediction_id"]
        early = client.post("/v1/feedback", json={"prediction_id": pid, "actual": 64})
        assert early.status_code == 202 and early.json()["status"] == "pending"
        assert rows_in_log(deployed) == []
        flush(client)
        [row] = rows_in_log(deployed)
        assert row["pid"] == pid and row["actual"] == 64
        later = client.post("/v1/feedback", json={"prediction_id": pid, "actual": 64})
        assert later.status_code == 200 and later.json()["status"] == "duplicate"


def test_feedback_batch_answers_each_item(client: ApiClient, deployed: Workspace) -> None:
    pids = [predict(client)["prediction_id"] for _ in range(3)]
    flush(client)
    client.post("/v1/feedback", json={"prediction_id": pids[2], "actual": 10})
    old = ids.new_id(int(time.time() * 1000) - 3_600_000)
    items = [
        {"prediction_id": pids[0], "actual": 50},
        {"prediction_id": pids[1], "actual": 60.5},
        {"prediction_id": pids[2], "actual": 11},  # conflicts with 10
        {"prediction_id": old, "actual": 1},
        {"prediction_id": pids[0], "actual": 101},  # outside the line's label range
    ]
    response = client.post("/v1/feedback", json={"items": items})
    assert response.status_code == 200, response.text
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == ["recorded", "recorded", "conflict", "not found", "invalid"]
    assert response.json()["counts"] == {"recorded": 2, "conflict": 1, "not found": 1, "invalid": 1}
    assert "[0, 100]" in response.json()["results"][4]["error"]
    actual = {r["pid"]: r["actual"] for r in rows_in_log(deployed)}
    assert [actual[p] for p in pids] == [50, 60.5, 10]
    too_many = {"items": [{"prediction_id": pids[0], "actual": 1}] * 10_001}
    assert_error(client.post("/v1/feedback", json=too_many), 422, "10000")
    # A malformed item refuses the whole body, like any schema violation: nothing recorded.
    for bad in ({"prediction_id": pids[1], "actual": "x"}, "not an object", {"actual": 1}):
        malformed = {"items": [{"prediction_id": pids[0], "actual": 50}, bad]}
        assert_error(client.post("/v1/feedback", json=malformed), 422, "items[1]")


# -- reading routes ---------------------------------------------------------------------------


def test_status_is_the_cli_document(client: ApiClient, deployed: Workspace) -> None:
    engine = Engine(deployed)
    try:
        expected = engine.status().to_json()
    finally:
        engine.close()
    response = client.get("/v1/status")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(expected))


def test_healthz_reports_the_log_writer(client: ApiClient) -> None:
    predict(client)
    flush(client)
    doc = client.get("/healthz").json()
    assert doc["status"] == "ok" and doc["pid"] == os.getpid()
    assert doc["log"]["written"] == 1 and doc["log"]["dropped"] == 0 and doc["log"]["queued"] == 0
    assert doc["serving"]["quality-predictor"]["candidate"] == "v2.0"


def test_monitor_document(client: ApiClient) -> None:
    for _ in range(5):
        predict(client)
    flush(client)
    response = client.get("/v1/monitor")
    assert response.status_code == 200, response.text
    doc = response.json()
    assert {v["version"] for v in doc["versions"]} == {"v1.0", "v2.0"}
    for v in doc["versions"]:
        for field in ("role", "traffic", "predictions", "labelled", "accuracy", "mae"):
            assert field in v
        assert set(v["latency_ms"]) == {"p50", "p95", "p99"}
        assert {"error_rate", "drift", "health"} <= set(v)
    assert sum(v["predictions"] for v in doc["versions"]) == 5
    assert client.get("/v1/monitor?window=24h").status_code == 200
    assert_error(client.get("/v1/monitor?window=7y"), 422, "window")


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and found == labels:
            return float(value)
    raise AssertionError(f"no {name} {labels} in /metrics")


def test_metrics_count_per_version_without_feature_values(
    client: ApiClient, deployed: Workspace
) -> None:
    secret = {**ROW, "coverage": 0.123456789}
    answers = [
        client.post("/v1/predict", json={"features": secret, "key": f"secret-key-{i}"}).json()
        for i in range(40)
    ]
    client.post("/v1/predict", json={"features": [1, 2]})  # a 422
    flush(client)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for version, arm in (("v1.0", "production"), ("v2.0", "candidate")):
        sent = sum(a["version"] == version for a in answers)
        labels = {"line": "quality-predictor", "version": version, "arm": arm}
        assert metric(text, "beast_predictions_total", **labels) == sent
        assert metric(text, "beast_prediction_latency_seconds_count", **labels) == sent
    refused = {"route": "predict", "method": "POST", "code": "422"}
    assert metric(text, "beast_http_requests_total", **refused) == 1
    assert metric(text, "beast_prediction_log_written_rows_total") == 40
    assert metric(text, "beast_prediction_log_dropped_rows_total") == 0
    assert metric(text, "beast_monitor_up") == 1
    assert metric(
        text,
        "beast_version_window_predictions",
        line="quality-predictor",
        version="v1.0",
        role="production",
    ) == sum(a["version"] == "v1.0" for a in answers)
    assert "0.123456" not in text and "secret-key" not in text
    label_names = set(re.findall(r"(\w+)=\"", text))
    assert label_names <= {
        "line",
        "version",
        "arm",
        "role",
        "route",
        "method",
        "code",
        "status",
        "le",
        "quantile",
        "metric",
        "severity",
        "beast_version_health",
        "beast_health",
    }


def test_openapi_covers_every_route(client: ApiClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    routes = [r for r in client.app.routes if isinstance(r, Route)]
    assert routes
    for route in routes:
        assert route.path in doc["paths"], route.path
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        assert methods <= set(doc["paths"][route.path]), route.path
    assert set(doc["paths"]) == {r.path for r in routes}
    for path in doc["paths"].values():
        for operation in path.values():
            for response in operation["responses"].values():
                for media in response.get("content", {}).values():
                    ref = media["schema"].get("$ref")
                    if ref:
                        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]


def test_unknown_route_and_wrong_method_are_json(client: ApiClient) -> None:
    assert_error(client.get("/v2/predict"), 404, "openapi")
    wrong = client.get("/v1/predict")
    assert_error(wrong, 405)
    assert wrong.headers["allow"] == "POST"
    assert client.request("PUT", "/v1/status").headers["allow"] == "GET, HEAD"


# -- mutations and tokens ---------------------------------------------------------------------


def test_mutations_need_the_token(client: ApiClient, deployed: Workspace) -> None:
    body = {"name": TEST}
    missing = client.post("/v1/abort", json=body)
    assert_error(missing, 401, "bearer")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_error(client.post("/v1/abort", json=body, headers={"Authorization": "Bearer no"}), 401)
    assert_error(client.post("/v1/abort", json=body, headers={"Authorization": TOKEN}), 401)
    assert_error(
        client.post("/v1/abort", json=body, headers={"Authorization": f"Basic {TOKEN}"}), 401
    )
    # Nothing changed.
    assert client.get("/v1/status").json()["experiments"][0]["status"] == "running"
    # Reading routes need no token on loopback.
    assert client.get("/v1/status").status_code == 200


def test_abort_rollback_deploy_promote_over_http(client: ApiClient, deployed: Workspace) -> None:
    stale = client.post("/v1/abort", json={"name": TEST, "expect": "v9.9"}, headers=AUTH)
    assert_error(stale, 409, "state changed")
    assert_error(client.post("/v1/abort", json={"name": "nope"}, headers=AUTH), 404, "nope")
    assert_error(client.post("/v1/abort", json={}, headers=AUTH), 422, "name")
    done = client.post(
        "/v1/abort", json={"name": TEST, "expect": "v1.0", "note": "from a test"}, headers=AUTH
    )
    assert done.status_code == 200, done.text
    change = done.json()
    assert change["changed"] is True and change["history"]["action"] == "abort"
    assert change["history"]["note"] == "from a test"
    assert "api" in change["history"]["actor"]
    # The router picks the change up without a restart: only v1.0 serves now.
    deadline = time.monotonic() + 5
    while client.get("/healthz").json()["serving"]["quality-predictor"]["candidate"]:
        assert time.monotonic() < deadline, "the abort was not picked up"
        time.sleep(0.05)
    assert all(predict(client)["version"] == "v1.0" for _ in range(20))

    deployed_v3 = client.post(
        "/v1/deploy",
        json={"version": "v3.0", "traffic": 10, "ab_test": "ab-v3", "actor": "alice"},
        headers=AUTH,
    )
    assert deployed_v3.status_code == 200, deployed_v3.text
    assert deployed_v3.json()["history"]["actor"].startswith("alice")
    refused = client.post("/v1/promote", json={"name": "ab-v3"}, headers=AUTH)
    assert 400 <= refused.status_code < 500, refused.text
    forced = client.post("/v1/promote", json={"name": "ab-v3", "force": True}, headers=AUTH)
    assert forced.status_code == 200, forced.text
    back = client.post("/v1/rollback", json={"expect": "v3.0"}, headers=AUTH)
    assert back.status_code == 200, back.text
    assert back.json()["history"]["to_state"]["production"] == "v1.0"
    named = client.post("/v1/rollback", json={"version": "v2.0"}, headers=AUTH)
    assert named.status_code == 200
    assert_error(client.post("/v1/rollback", json={"version": "v7"}, headers=AUTH), 404)
    for body in (
        {"version": "v2.0", "traffic": 250, "ab_test": "t"},
        {"version": "v2.0", "traffic": 5.125, "ab_test": "t"},
        {"version": "v2.0", "traffic": 5},
        {"version": "v2.0", "ab_test": "t"},
    ):
        assert_error(client.post("/v1/deploy", json=body, headers=AUTH), 422, "traffic")
    assert_error(client.post("/v1/deploy", json={}, headers=AUTH), 422, "path")
    # Refused by what the workspace holds, not by the body's shape: 409.
    assert_error(client.post("/v1/deploy", json={"path": "../../etc/passwd"}, headers=AUTH), 409)
    assert_error(client.post("/v1/promote", json={"name": 3}, headers=AUTH), 422, "name")
    history = history_of(deployed)
    actions = [h.action for h in history][-5:]
    assert actions == ["abort", "ab_start", "promote", "rollback", "rollback"]


def test_without_a_configured_token_mutations_are_off(deployed: Workspace) -> None:
    with client_for(deployed, token=None) as client:
        assert_error(
            client.post("/v1/abort", json={"name": TEST}, headers=AUTH), 403, "no API token"
        )
        assert client.post("/v1/predict", json={"features": ROW}).status_code == 200


def test_beyond_loopback_every_request_needs_the_token(deployed: Workspace) -> None:
    with client_for(deployed, token_everywhere=True) as client:
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/metrics"),
            ("GET", "/v1/status"),
            ("GET", "/openapi.json"),
            ("POST", "/v1/predict"),
            ("POST", "/v1/feedback"),
        ):
            assert_error(client.request(method, path, json={"features": ROW}), 401)
        assert client.get("/healthz", headers=AUTH).status_code == 200
        ok = client.post("/v1/predict", json={"features": ROW}, headers=AUTH)
        assert ok.status_code == 200


def test_token_file_is_created_private_and_reused(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert configured_token(registered) is None
    token, created = ensure_token(registered)
    assert created and len(token) >= 40
    path = token_path(registered)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(registered) == (token, False)
    assert configured_token(registered) == token
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment")
    assert configured_token(registered) == "from-the-environment"
    monkeypatch.setenv(TOKEN_ENV, "  ")
    with pytest.raises(BeastError, match="empty"):
        configured_token(registered)
    monkeypatch.delenv(TOKEN_ENV)
    path.chmod(0o644)
    with pytest.raises(BeastError, match="chmod 600"):
        configured_token(registered)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(BeastError, match="empty"):
        configured_token(registered)


def test_no_answer_can_fail_to_encode() -> None:
    """A lone surrogate that reaches an answer is escaped as JSON allows, never a 500."""
    from engine.server.http.app import error_response, json_response

    answer = json_response({"prediction_id": "a\ud800b"})
    assert json.loads(answer.body) == {"prediction_id": "a\ud800b"}
    refusal = error_response(422, "unknown field '\ud800'\nsecond line \x1b[2J")
    message = json.loads(refusal.body)["error"]
    assert message.isprintable() and "\\ud800" in message and "\\x1b" in message
