"""Fixtures: fresh workspaces, a template workspace with registered real models (validation
runs in a child process that imports XGBoost, so it is done once per session and copied), and
an invariant check after every test that used a workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Engine, Workspace
from tests.helpers import assert_invariants, copy_workspace, model_path, train_model

VERSIONS = ("v1.0", "v2.0", "v3.0", "v4.0")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEAST_HOME", raising=False)
    monkeypatch.delenv("SSH_CLIENT", raising=False)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A fresh, initialised workspace; its invariants are checked after the test."""
    ws = Workspace(tmp_path / ".beast-mode")
    engine, _ = Engine.init(ws)
    engine.close()
    yield ws
    assert_invariants(ws)


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("template") / ".beast-mode")
    engine, _ = Engine.init(ws)
    for seed, version in enumerate(VERSIONS, start=1):
        path = train_model(model_path(ws, version), seed=seed, rounds=3 + seed)
        engine.register(path)
    engine.close()
    return ws


@pytest.fixture
def registered(_template: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace with four real models registered (v1.0–v4.0 of quality-predictor)."""
    ws = copy_workspace(_template, tmp_path / "ws" / ".beast-mode")
    yield ws
    assert_invariants(ws)


@pytest.fixture
def engine(registered: Workspace) -> Iterator[Engine]:
    eng = Engine(registered, actor="tester")
    yield eng
    eng.close()
