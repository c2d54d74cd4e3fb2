"""What is deployed is what was validated: DESIGN.md §5 invariant 4, enforced at deploy time.

Deploy, an A/B start and a rollback refuse a version whose artifact file is gone or whose
sha256 no longer matches (before, only `beast doctor` noticed). What already serves keeps
serving. And the warm validator the watcher uses keeps the validator's isolation: a child
that dies takes nothing else with it, a hung one is killed with its group.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from engine import BeastError, Engine, Workspace
from engine.monitoring import artifact_alerts
from engine.registry import artifacts
from engine.registry.warm_validator import WarmValidator
from engine.store.sqlite.tx import SqliteTx
from tests.helpers import beast, model_path, production, train_model


def test_deploy_refuses_a_missing_or_altered_artifact_and_nothing_changes(
    engine: Engine, registered: Workspace
) -> None:
    engine.deploy(model_path(registered, "v1.0"))
    v2, v3 = model_path(registered, "v2.0"), model_path(registered, "v3.0")
    v2_bytes, v3_bytes = v2.read_bytes(), v3.read_bytes()
    v2.unlink()
    with pytest.raises(BeastError, match=r"cannot deploy quality-predictor/v2\.0: .* missing"):
        engine.deploy(version="v2.0")
    train_model(v3, seed=99)  # other bytes under the registered name
    with pytest.raises(BeastError, match=r"v3\.0: .* no longer has its registered sha256"):
        engine.deploy(version="v3.0", traffic=10, ab_test="ab-v3")
    assert production(engine) == "v1.0" and not engine.status().experiments
    assert len(engine.history()) == 1

    v2.write_bytes(v2_bytes)
    engine.deploy(version="v2.0")
    v1 = model_path(registered, "v1.0")
    v1_bytes = v1.read_bytes()
    v1.unlink()
    result = beast(registered, "rollback")
    assert result.returncode == 1 and "v1.0" in result.stderr and "missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert production(engine) == "v2.0"
    v1.write_bytes(v1_bytes)
    engine.rollback()  # the file is back as registered: allowed again
    assert production(engine) == "v1.0"
    v3.write_bytes(v3_bytes)


def forked_children(server: int) -> list[int]:
    text = Path(f"/proc/{server}/task/{server}/children").read_text()
    return [int(p) for p in text.split()]


def test_warm_validator_survives_a_dying_child_and_kills_a_hung_one(
    registered: Workspace, tmp_path: Path
) -> None:
    model = model_path(registered, "v1.0")
    digest = artifacts.sha256_of(model)
    validator = WarmValidator().start()
    try:
        assert validator(model, "json", 60, expected_sha256=digest).ok  # warm from here on
        fifo = tmp_path / "never-written.json"
        os.mkfifo(fifo)  # the child blocks reading it, like a child stuck in XGBoost
        outcome: list[artifacts.Validation] = []
        asking = threading.Thread(target=lambda: outcome.append(validator(fifo, "json", 60)))
        asking.start()
        server = validator._server
        assert server is not None
        deadline = time.monotonic() + 10
        while not forked_children(server.pid):
            assert time.monotonic() < deadline, "no child was forked"
            time.sleep(0.01)
        (child,) = forked_children(server.pid)
        os.kill(child, 11)  # SIGSEGV, as a model that crashes XGBoost would
        asking.join(timeout=10)
        assert outcome and "crashed XGBoost (SIGSEGV)" in (outcome[0].reason or "")
        assert validator._server is server and server.poll() is None  # the server lives on
        start = time.monotonic()
        assert validator(model, "json", 60, expected_sha256=digest).ok
        assert time.monotonic() - start < 5  # no new server, no XGBoost import

        hung = validator(fifo, "json", 0.5)
        assert hung.reason == "validation timed out after 0.5s"
        assert server.poll() is not None  # killed with its group, the hung child with it
        assert validator(model, "json", 60, expected_sha256=digest).ok  # a new server
    finally:
        validator.close()


def test_cli_deploy_of_a_missing_artifact_is_one_line(registered: Workspace) -> None:
    with closing(Engine(registered)) as engine:
        engine.deploy(model_path(registered, "v1.0"))
    saved = model_path(registered, "v2.0").read_bytes()
    model_path(registered, "v2.0").unlink()
    try:
        result = beast(registered, "deploy", "--version", "v2.0")
    finally:
        model_path(registered, "v2.0").write_bytes(saved)
    assert result.returncode == 1
    assert result.stderr.startswith("beast: cannot deploy quality-predictor/v2.0")
    assert "Traceback" not in result.stderr


def test_the_artifact_alert_reads_a_file_again_only_when_its_stat_changed(
    engine: Engine, registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.deploy(version="v1.0")
    path = model_path(registered, "v1.0")
    reads: list[Path] = []
    real = artifacts.sha256_of
    monkeypatch.setattr(artifacts, "sha256_of", lambda p: reads.append(p) or real(p))
    # As if the file had been written long ago: its ctime is settled.
    later = time.time_ns() + 2 * artifact_alerts.SETTLED_NS
    monkeypatch.setattr(artifact_alerts.time, "time_ns", lambda: later)

    def firing() -> list[str]:
        with engine.store.write_sql() as conn:
            artifact_alerts.sync(SqliteTx(conn), registered.models_dir)
            rows = conn.execute(
                "SELECT message FROM alerts WHERE metric = 'artifact' AND resolved_at IS NULL"
            ).fetchall()
        return [r[0] for r in rows]

    assert firing() == [] and firing() == [] and firing() == []
    assert reads == [path]  # hashed once, then known by its unchanged stat

    # Other bytes of the same size, the mtime put back: the ctime still moves.
    original = path.read_bytes()
    st = path.stat()
    path.write_bytes(bytes(b ^ 0xFF for b in original[:64]) + original[64:])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    alerts = firing()
    assert len(alerts) == 1 and "no longer has its registered sha256" in alerts[0]
    assert reads == [path, path]
    path.write_bytes(original)
    assert firing() == []
