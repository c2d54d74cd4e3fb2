"""One source for every number: `beast monitor --json` and `/v1/monitor` are the same
`MonitorReport.to_json()`, at full precision; `beast monitor`'s text shows the same report's
predictions and labelled predictions per arm, rounded for people."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from engine import Engine
from tests.helpers import beast
from tests.test_http_api import client_for
from tests.test_monitoring import feed


@pytest.fixture
def testing(engine: Engine) -> Engine:
    """v1.0 in production, v2.0 the candidate of test t, 301 and 103 labelled predictions."""
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=20, ab_test="t")
    feed(engine, "v1.0", 301, within=0.8, experiment="t")
    feed(engine, "v2.0", 103, within=0.9, experiment="t", arm="candidate")
    return engine


def monitor_json(engine: Engine, *args: str) -> dict[str, Any]:
    out = beast(engine.workspace, "monitor", "--json", *args)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert isinstance(document, dict)
    return document


def test_the_cli_and_the_api_serve_one_document(testing: Engine) -> None:
    from_cli = monitor_json(testing)  # evaluates: alerts synced before the API reads them
    with client_for(testing.workspace) as client:
        response = client.get("/v1/monitor")
    assert response.status_code == 200, response.text
    from_api = response.json()
    assert from_cli.pop("generated_at") and from_api.pop("generated_at")
    assert from_cli == from_api


def test_json_keeps_full_precision(testing: Engine) -> None:
    document = monitor_json(testing, "--readonly")
    production = next(v for v in document["versions"] if v["version"] == "v1.0")
    assert production["accuracy"] == 241 / 301  # not 0.8007
    report = testing.report()
    [test] = document["experiments"]
    verdict = report.experiments[0].verdict
    assert test["verdict_detail"]["diff"] == verdict.diff
    assert test["verdict_detail"]["p"] == verdict.p
    assert test["verdict_detail"]["lo"] == verdict.lo and test["verdict_detail"]["hi"] == verdict.hi
    assert test["arms"]["control"]["mae"] == report.experiments[0].control.mae


def test_the_text_shows_predictions_and_labelled_per_arm(testing: Engine) -> None:
    document = monitor_json(testing, "--readonly")
    out = beast(testing.workspace, "monitor", "--readonly")
    assert out.returncode == 0, out.stderr
    arms = document["experiments"][0]["arms"]
    header = next(line for line in out.stdout.splitlines() if "ARM" in line)
    assert re.split(r"\s{2,}", header.strip())[:4] == ["ARM", "VERSION", "PRED", "LABELLED"]
    for arm, version in (("control", "v1.0"), ("candidate", "v2.0")):
        row = next(line for line in out.stdout.splitlines() if line.strip().startswith(arm))
        cells = re.split(r"\s{2,}", row.strip())
        figures = arms[arm]
        assert cells[:4] == [arm, version, str(figures["predictions"]), str(figures["labelled"])]
        assert cells[4] == f"{figures['accuracy']:.3f}"  # three significant digits
    assert "0.80066" not in out.stdout
