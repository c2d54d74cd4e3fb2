"""The model-directory watcher with real files, a real watcher thread and real validation.

RELIABILITY.md, "Model files and the watcher": a file written slowly or through a temp file
and a rename is registered once, when whole, with no rejection recorded for its halves; 50
rewrites register one version; garbage, pickle and tampered JSON are rejected with their
reason; models/ deleted and re-created is watched again; without inotify it polls; the
periodic rescan finds what no event announced. Everything is asserted through
`engine.models()`, what `beast models` shows.
"""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, Workspace
from engine.core.records import Artifact
from engine.server import watcher
from engine.server.watcher import ModelWatcher, WatchOptions
from tests.helpers import model_path, train_model

WAIT_S = 30.0  # generous: the first warm validator child imports XGBoost (~2 s, more on CI)


def model_bytes(tmp_path: Path, seed: int, rounds: int = 4) -> bytes:
    return train_model(tmp_path / f"seed-{seed}.json", seed=seed, rounds=rounds).read_bytes()


def artifacts_of(ws: Workspace) -> list[Artifact]:
    with closing(Engine(ws)) as engine:
        return list(engine.models().artifacts)


def by_file(ws: Workspace) -> dict[str, list[Artifact]]:
    out: dict[str, list[Artifact]] = {}
    for artifact in artifacts_of(ws):
        out.setdefault(Path(artifact.path).name, []).append(artifact)
    return out


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


@contextmanager
def watching(ws: Workspace, **options: Any) -> Iterator[ModelWatcher]:
    with ModelWatcher(ws, WatchOptions(**{"rescan_every_s": 3600.0, **options})) as running:
        yield running


def write_slowly(path: Path, data: bytes, chunks: int = 10, seconds: float = 1.0) -> None:
    step = len(data) // chunks + 1
    with path.open("wb") as out:
        for i in range(0, len(data), step):
            out.write(data[i : i + step])
            out.flush()
            time.sleep(seconds / chunks)


def tampered(data: bytes) -> bytes:
    """A split on a feature the model does not have: XGBoost would read out of bounds."""
    doc = json.loads(data)
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"][0] = 2**31 - 1
    return json.dumps(doc).encode()


def test_whole_files_register_once_and_bad_ones_are_rejected_with_their_reason(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws, models = workspace, workspace.models_dir
    slow, renamed = model_bytes(tmp_path, 1), model_bytes(tmp_path, 2)
    with watching(ws):
        writer = threading.Thread(
            target=write_slowly, args=(model_path(ws, "v1.0"), slow), daemon=True
        )
        writer.start()
        temp = models / ".quality-predictor-v2.0.partial.json"
        write_slowly(temp, renamed, chunks=4, seconds=0.4)
        temp.rename(model_path(ws, "v2.0"))
        (models / "quality-predictor-v3.0.json").write_bytes(b"\x00\xffgarbage bytes")
        (models / "quality-predictor-v4.0.json").write_bytes(pickle.dumps({"weights": [1, 2]}))
        (models / "quality-predictor-v5.0.json").write_bytes(tampered(slow))
        (models / "quality-predictor-v6.0.json").write_bytes(b"")
        (models / "scratch.json.tmp").write_bytes(b"{half")
        (models / "notes.json~").write_bytes(b"{half")
        writer.join()
        wait_for(lambda: len(artifacts_of(ws)) >= 6, "six verdicts")
        time.sleep(2.5)  # past the quiet period: anything else would be recorded by now

    files = by_file(ws)
    assert set(files) == {f"quality-predictor-v{n}.0.json" for n in range(1, 7)}
    assert all(len(rows) == 1 for rows in files.values()), files
    valid = {name: rows[0] for name, rows in files.items() if rows[0].status == "valid"}
    assert {name: a.versions for name, a in valid.items()} == {
        "quality-predictor-v1.0.json": ("v1.0",),
        "quality-predictor-v2.0.json": ("v2.0",),
    }
    assert valid["quality-predictor-v1.0.json"].size == len(slow)  # registered whole
    reasons = {name: rows[0].reason or "" for name, rows in files.items() if name not in valid}
    assert "not UTF-8" in reasons["quality-predictor-v3.0.json"]
    assert "pickle is never loaded" in reasons["quality-predictor-v4.0.json"]
    assert "split index 2147483647" in reasons["quality-predictor-v5.0.json"]
    assert "empty file" in reasons["quality-predictor-v6.0.json"]


def test_fifty_rewrites_in_a_second_register_one_version_and_reject_nothing(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Each rewrite truncates the file and writes it in two halves: the watcher sees empty
    and half files between whole ones, and must neither reject those nor register twice."""
    data = model_bytes(tmp_path, 7)
    target = model_path(workspace, "v7.0")
    with watching(workspace):
        for _ in range(50):
            with target.open("wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                time.sleep(0.01)
                out.write(data[len(data) // 2 :])
            time.sleep(0.01)
        wait_for(lambda: artifacts_of(workspace), "the rewritten file's registration")
        time.sleep(2.5)  # past the quiet period: a rejection of a half would be recorded now
    (only,) = artifacts_of(workspace)
    assert only.status == "valid" and only.versions == ("v7.0",)
    assert only.sha256 == hashlib.sha256(data).hexdigest()


def test_models_dir_deleted_and_recreated_is_watched_again(
    workspace: Workspace, tmp_path: Path
) -> None:
    models = workspace.models_dir
    first, second = model_bytes(tmp_path, 1), model_bytes(tmp_path, 2)
    with watching(workspace):
        model_path(workspace, "v1.0").write_bytes(first)
        wait_for(lambda: artifacts_of(workspace), "v1.0")
        shutil.rmtree(models)
        time.sleep(0.3)
        models.mkdir()
        model_path(workspace, "v2.0").write_bytes(second)
        wait_for(lambda: len(artifacts_of(workspace)) == 2, "v2.0 in the new models/")
    names = sorted(a.versions for a in artifacts_of(workspace))
    assert names == [("v1.0",), ("v2.0",)]


def test_without_inotify_it_polls_with_a_warning_and_a_rescan_finds_missed_files(
    workspace: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_watch = watcher.watchfiles.watch
    asked: list[bool] = []

    def no_inotify(*paths: Any, **kwargs: Any) -> Any:
        asked.append(bool(kwargs.get("force_polling")))
        if not kwargs.get("force_polling"):  # what inotify_init1 says when none are left
            raise OSError(errno.EMFILE, "Too many open files (os error 24)")
        return real_watch(*paths, **kwargs)

    monkeypatch.setattr(watcher.watchfiles, "watch", no_inotify)
    # Written while no watcher runs: only the start-up scan can find it.
    model_path(workspace, "v1.0").write_bytes(model_bytes(tmp_path, 1))
    caplog.set_level("INFO", logger="beast.watcher")
    with watching(workspace, poll_delay_ms=100) as running:
        wait_for(lambda: artifacts_of(workspace), "the file written before the start")
        model_path(workspace, "v2.0").write_bytes(model_bytes(tmp_path, 2))
        wait_for(lambda: len(artifacts_of(workspace)) == 2, "a file seen by polling")
        assert running.polling
    assert asked[:2] == [False, True]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("polling" in w and "Too many open files" in w for w in warnings), warnings
    registered = [r.getMessage() for r in caplog.records if r.getMessage().startswith("regist")]
    assert len(registered) == 2, registered  # one log line per registration


def test_periodic_rescan_catches_a_file_no_event_announced(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def deaf(*_paths: Any, stop_event: threading.Event, rust_timeout: int, **_kw: Any) -> Any:
        """A watch whose events are all lost (an overflowed queue, a missed inotify)."""
        while not stop_event.wait(rust_timeout / 1000):
            yield set()

    monkeypatch.setattr(watcher.watchfiles, "watch", deaf)
    with watching(workspace, rescan_every_s=0.5):
        time.sleep(0.3)  # after the start-up scan
        model_path(workspace, "v1.0").write_bytes(model_bytes(tmp_path, 1))
        wait_for(lambda: artifacts_of(workspace), "the periodic rescan's registration")
    (only,) = artifacts_of(workspace)
    assert only.status == "valid" and only.versions == ("v1.0",)


def test_names_it_cannot_use_are_listed_as_unregistered_with_the_reason(
    registered: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = registered
    with closing(Engine(ws, actor="tester")) as engine:
        engine.deploy(model_path(ws, "v1.0"))
        engine.deploy(model_path(ws, "v2.0"), traffic=20, ab_test="ab-v2")
        before = engine.models().artifacts
    caplog.set_level("INFO", logger="beast.watcher")
    original = model_path(ws, "v2.0").read_bytes()
    with watching(ws):
        (ws.models_dir / "model.json").write_bytes(model_bytes(tmp_path, 8))
        # A new artifact under the name of the version in the running test: never mixed in.
        model_path(ws, "v2.0").write_bytes(model_bytes(tmp_path, 9))
        wait_for(
            lambda: sum("not registered" in r.getMessage() for r in caplog.records) >= 2,
            "both refusals in the log",
        )
    with closing(Engine(ws)) as engine:
        report = engine.models()
        status = engine.status()
    assert report.artifacts == before  # nothing registered, nothing rejected
    problems = dict(report.unregistered)
    assert "no model line and version in the file name" in (problems["model.json"] or "")
    candidate = next(d for d in status.deployments if d.role == "candidate")
    assert (candidate.version, candidate.experiment) == ("v2.0", "ab-v2")
    assert candidate.sha256 == next(a.sha256 for a in before if a.versions == ("v2.0",))
    refusal = next(r.getMessage() for r in caplog.records if "v2.0.json" in r.getMessage())
    assert "version v2.0 of quality-predictor is already registered for another file" in refusal
    model_path(ws, "v2.0").write_bytes(original)  # the teardown's doctor checks it, rightly
