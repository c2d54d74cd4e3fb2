"""The OpenAPI document is as strict as the server: schemathesis against a real engine.

`schemathesis run /openapi.json --checks all` (every check: no 5xx, status codes, content
types and response bodies as documented, schema-valid requests accepted and schema-violating
ones refused, 405 with Allow, the token where the document asks for it) against `beast
engine` on loopback, serving an A/B test, with its token. Bounded (ten examples per operation
and phase, a fixed seed: a few hundred requests, well under a minute); run from the repository
so that schemathesis.toml and its hook (a batch's keys, one per row) apply, as they do for
anyone who runs the same command here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import Engine, Workspace
from tests.helpers import REPO, assert_invariants, copy_workspace, model_path, train_model
from tests.test_engine_process import engine_env, running_engine

pytestmark = pytest.mark.slow

EXAMPLES = 10
SEED = 12


@pytest.fixture
def serving(_template: Workspace, tmp_path: Path) -> Workspace:
    ws = copy_workspace(_template, tmp_path / "ws" / ".beast-mode")
    engine = Engine(ws, actor="tester")
    other = ws.models_dir / "churn-risk-v1.0.json"
    train_model(other, seed=9, n_features=3, names=("age", "plan", "usage"))
    try:
        engine.deploy(model_path(ws, "v1.0"))
        engine.deploy(model_path(ws, "v2.0"), traffic=30, ab_test="ab-v2")
        engine.deploy(other)
    finally:
        engine.close()
    return ws


def test_schemathesis_finds_nothing_with_every_check(serving: Workspace, tmp_path: Path) -> None:
    with running_engine(serving, tmp_path) as (_proc, port, log):
        token = (serving.root / "api-token").read_text(encoding="utf-8").strip()
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            *("run", f"http://127.0.0.1:{port}/openapi.json"),
            *("--checks", "all"),
            *("--header", f"Authorization: Bearer {token}"),
            *("--max-examples", str(EXAMPLES), "--seed", str(SEED), "--no-color"),
        ]
        done = subprocess.run(
            command,
            cwd=str(REPO),
            env=engine_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-6000:]
        assert " passed" in output and "failure" not in output, output[-3000:]
        text = log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
    assert_invariants(serving)
