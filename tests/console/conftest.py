"""Console fixtures: real workspaces with deployments and a running A/B test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from console.gateway import Gateway
from engine import Engine, Workspace


@pytest.fixture
def serving(registered: Workspace) -> Workspace:
    """v1.0 then v2.0 deployed: production v2.0, a rollback would go to v1.0."""
    engine = Engine(registered, actor="setup")
    try:
        engine.deploy(version="v1.0")
        engine.deploy(version="v2.0")
    finally:
        engine.close()
    return registered


@pytest.fixture
def testing(serving: Workspace) -> Workspace:
    """Production v2.0 at 90% and v3.0 as the candidate of A/B test `retrain-v3` at 10%."""
    engine = Engine(serving, actor="setup")
    try:
        engine.deploy(version="v3.0", traffic=10, ab_test="retrain-v3")
    finally:
        engine.close()
    return serving


@pytest.fixture
def gateway(serving: Workspace) -> Iterator[Gateway]:
    gw = Gateway(serving, actor="console-test")
    yield gw
    gw.close()
