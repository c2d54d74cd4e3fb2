"""Registering model files: hostile bytes, hostile paths, duplicates and names.

Every refusal is checked three ways: the reason (a substring of the message), the registry
(no new valid artifact, no new version name), and the record (a file that got as far as
hashing is listed as rejected with its reason; one refused earlier is not recorded at all).
Validation spawns a child that imports XGBoost (~1.5 s), so most cases are chosen to be
refused before that import; the few that need XGBoost's verdict are one file each.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import pathlib
import pickle
import random
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
import xgboost as xgb

from engine import ArtifactRejected, BeastError, Conflict, Engine, Workspace
from engine.core.naming import split_filename
from engine.core.records import Artifact
from engine.registry import artifacts
from engine.registry.catalog import Naming, naming_for
from tests.helpers import FEATURES, beast, model_path, set_config, train_model

# -- helpers -------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def valid_state(engine: Engine) -> list[tuple[str, tuple[str, ...]]]:
    """What the registry vouches for: every valid artifact and the names it carries."""
    return sorted((a.sha256, a.versions) for a in engine.models().artifacts if a.status == "valid")


def by_sha(engine: Engine, digest: str) -> Artifact | None:
    return next((a for a in engine.models().artifacts if a.sha256 == digest), None)


def version_bytes(ws: Workspace, version: str = "v1.0") -> bytes:
    return model_path(ws, version).read_bytes()


def model_doc(ws: Workspace, version: str = "v1.0") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(version_bytes(ws, version))
    return doc


def first_tree(doc: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = doc["learner"]["gradient_booster"]["model"]["trees"][0]
    return tree


def set_registry(ws: Workspace, key: str, value: float) -> None:
    """Rewrite one `[registry]` value of config.toml (the default file has every key)."""
    set_config(ws, **{key: str(value)})


def assert_rejected(engine: Engine, path: Path, *needles: str, recorded: bool = True) -> str:
    """Register `path`, expect a refusal naming every needle, and check what was recorded."""
    before = valid_state(engine)
    data = path.read_bytes()
    with pytest.raises(ArtifactRejected) as info:
        engine.register(path)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert valid_state(engine) == before
    row = by_sha(engine, sha(data))
    if recorded:
        assert row is not None and row.status == "rejected", row
        assert row.reason is not None and all(n in row.reason for n in needles), row.reason
        assert row.versions == () and row.line is None
    else:
        assert row is None
    return message


def _forbidden(*_args: object, **_kwargs: object) -> NoReturn:
    raise AssertionError("the file was hashed, opened or validated")


@contextmanager
def no_file_access(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the block no Python-level open, no hashing and no child validation may happen."""
    with monkeypatch.context() as patch:
        patch.setattr(artifacts, "sha256_of", _forbidden)
        patch.setattr(artifacts, "validate_in_child", _forbidden)
        patch.setattr(io, "open", _forbidden)
        patch.setattr(builtins, "open", _forbidden)
        yield


@pytest.fixture
def edited_doc(registered: Workspace) -> dict[str, Any]:
    return model_doc(registered)


# -- bad bytes -----------------------------------------------------------------------------


def _truncated_json(ws: Workspace) -> bytes:
    data = version_bytes(ws)
    return data[: len(data) // 2]


def _ubj(ws: Workspace) -> bytes:
    booster = xgb.Booster(model_file=str(model_path(ws, "v1.0")))
    return bytes(booster.save_raw("ubj"))


def _random_ubj(_ws: Workspace) -> bytes:
    return b"{" + random.Random(7).randbytes(4096)


def _pickled_booster(ws: Workspace) -> bytes:
    return pickle.dumps(xgb.Booster(model_file=str(model_path(ws, "v1.0"))))


BAD_BYTES: dict[str, tuple[str, Callable[[Workspace], bytes], tuple[str, ...]]] = {
    "empty": (".json", lambda ws: b"", ("empty file",)),
    "blank": (".json", lambda ws: b" \n\t\n", ("empty file",)),
    "truncated-json": (".json", _truncated_json, ("not valid JSON",)),
    "hello": (".json", lambda ws: b'{"hello": 1}', ("not an XGBoost model", "'learner'")),
    "json-list": (".json", lambda ws: b"[1, 2, 3]", ("not an XGBoost model",)),
    "latin1": (".json", lambda ws: b'{"a": "\xe9"}', ("not UTF-8",)),
    "deep-json": (".json", lambda ws: b"[" * 100_000, ("nested too deeply",)),
    "version-text": (
        ".json",
        lambda ws: b'{"learner": {}, "version": "3.2.0"}',
        ("bad 'version' field",),
    ),
    "pickle-dict": (".json", lambda ws: pickle.dumps({"learner": 1}), ("pickle",)),
    "pickle-booster": (".json", _pickled_booster, ("pickle", "never loaded")),
    "pickle-as-ubj": (".ubj", lambda ws: pickle.dumps([1, 2]), ("pickle",)),
    "pickle-protocol-0": (".json", lambda ws: pickle.dumps({"a": 1}, protocol=0), ("JSON",)),
    "random-ubj": (".ubj", _random_ubj, ("not valid UBJSON",)),
    "truncated-ubj": (".ubj", lambda ws: _ubj(ws)[:-100], ("not valid UBJSON", "truncated")),
    "ubj-trailing": (".ubj", lambda ws: _ubj(ws) + b"}", ("trailing",)),
    "json-named-ubj": (".ubj", lambda ws: json.dumps(model_doc(ws)).encode(), ("UBJSON",)),
}


@pytest.mark.parametrize("case", list(BAD_BYTES))
def test_bad_bytes_are_rejected_and_recorded(
    engine: Engine, registered: Workspace, case: str
) -> None:
    suffix, make, needles = BAD_BYTES[case]
    path = write(model_path(registered, "v9", suffix), make(registered))
    assert_rejected(engine, path, *needles)
    assert not [p for p, _ in engine.models().unregistered if p == path.name]


class _TouchOnLoad:
    """Unpickling this creates `marker`: proof of whether anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.marker,))


class _MkdirOnLoad(_TouchOnLoad):
    """The same for protocol 0, which cannot name Path.touch: `os.mkdir(marker)`."""

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (os.mkdir, (str(self.marker),))


PICKLES: dict[str, tuple[type[_TouchOnLoad], int, str]] = {
    "protocol-5-json": (_TouchOnLoad, 5, ".json"),
    "protocol-4-ubj": (_TouchOnLoad, 4, ".ubj"),
    "protocol-0-json": (_MkdirOnLoad, 0, ".json"),
}


@pytest.mark.parametrize("case", list(PICKLES))
def test_pickle_is_never_unpickled(
    engine: Engine, registered: Workspace, tmp_path: Path, case: str
) -> None:
    maker, protocol, suffix = PICKLES[case]
    # The payload is live: unpickling a twin of it does create its marker.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(maker(control), protocol=protocol))
    assert control.exists()

    marker = tmp_path / "pwned-marker"
    payload = pickle.dumps(maker(marker), protocol=protocol)
    path = write(model_path(registered, "v9", suffix), payload)
    reason = "pickle" if payload[:1] == b"\x80" else "not valid JSON"
    assert_rejected(engine, path, reason)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        ("split-huge", ("split index 2147483647 is not a feature",)),
        ("split-negative", ("split index -5 is not a feature",)),
        ("cycle-to-root", ("points back to the root (a cycle)",)),
        ("shared-node", ("is reached twice",)),
        ("child-out-of-range", ("child 1000000 is outside the tree",)),
        ("parent-out-of-range", ("its parent is recorded as 1000000",)),
        ("tree-info", ("tree_info[0] is 5",)),
        ("leaf-vector", ("leaf vector of size 1000000",)),
        ("categories", ("categories of node 0",)),
        ("num-feature-7", ("5 feature names for num_feature 7",)),
        ("num-feature-1", ("is not a feature of a model with 1 features",)),
        ("num-feature-huge", ("num_feature is 2000000000, over the 1000000 accepted",)),
        ("num-feature-text", ("no readable num_feature",)),
        ("multi-class", ("a multi-class model", "7 classes")),
        ("iteration-indptr", ("iteration_indptr does not index",)),
    ],
)
def test_hand_edited_models_that_crash_xgboost_are_refused_first(
    engine: Engine,
    registered: Workspace,
    edited_doc: dict[str, Any],
    edit: str,
    needles: tuple[str, ...],
) -> None:
    """Measured on XGBoost 3.2, the tree edits below, handed to XGBoost, kill the process
    (SIGSEGV, or SIGABRT on heap corruption) or load and then predict from out-of-bounds
    memory; the header edits make it allocate per claimed feature or answer several values
    per row. The child refuses all of them from the parsed document, naming the problem,
    before XGBoost is even imported."""
    doc, tree = edited_doc, first_tree(edited_doc)
    params = doc["learner"]["learner_model_param"]
    model = doc["learner"]["gradient_booster"]["model"]
    if edit == "split-huge":
        tree["split_indices"][0] = 2**31 - 1
    elif edit == "split-negative":
        tree["split_indices"][0] = -5
    elif edit == "cycle-to-root":
        tree["left_children"][tree["left_children"][0]] = 0
        tree["right_children"][tree["left_children"][0]] = 0
    elif edit == "shared-node":
        tree["left_children"][2] = 1
    elif edit == "child-out-of-range":
        tree["left_children"][0] = 10**6
    elif edit == "parent-out-of-range":
        tree["parents"][tree["left_children"][0]] = 10**6
    elif edit == "tree-info":
        model["tree_info"] = [5] * len(model["tree_info"])
    elif edit == "leaf-vector":
        tree["tree_param"]["size_leaf_vector"] = "1000000"
    elif edit == "categories":
        tree["split_type"][0] = 1
        tree.update(
            categories_nodes=[0], categories_segments=[10**9], categories_sizes=[5], categories=[1]
        )
    elif edit == "num-feature-7":
        params["num_feature"] = "7"
    elif edit == "num-feature-1":
        params["num_feature"] = "1"
        doc["learner"]["feature_names"] = doc["learner"]["feature_names"][:1]
        doc["learner"]["feature_types"] = doc["learner"]["feature_types"][:1]
    elif edit == "num-feature-huge":
        params["num_feature"] = "2000000000"
        doc["learner"]["feature_names"] = []
    elif edit == "num-feature-text":
        params["num_feature"] = "five"
    elif edit == "multi-class":
        params["num_class"] = "7"
    elif edit == "iteration-indptr":
        model["iteration_indptr"] = [0, 10**6, *model["iteration_indptr"][2:]]
    path = write(model_path(registered, "v9"), json.dumps(doc).encode())
    message = assert_rejected(engine, path, *needles)
    assert "crashed" not in message


def test_model_saved_by_newer_xgboost_names_both_versions(
    engine: Engine, registered: Workspace, edited_doc: dict[str, Any]
) -> None:
    edited_doc["version"] = [9, 0, 0]
    path = write(model_path(registered, "v9"), json.dumps(edited_doc).encode())
    assert_rejected(engine, path, "9.0.0", f"installed {xgb.__version__}")


# -- feature schema ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_features", "names", "needles"),
    [
        (7, None, ("it has 7 features", "quality-predictor has 5")),
        (
            5,
            ("complexity", "coverage", "lint_density", "duplication", "churn"),
            ("feature 0 is 'complexity'", "expects 'coverage'"),
        ),
        (
            5,
            ("coverage", "complexity", "lint_density", "duplication", "age"),
            ("feature 4 is 'age'", "expects 'churn'"),
        ),
    ],
    ids=["count", "order", "name"],
)
def test_feature_schema_mismatch_is_refused_at_registration(
    engine: Engine,
    registered: Workspace,
    n_features: int,
    names: tuple[str, ...] | None,
    needles: tuple[str, ...],
) -> None:
    path = train_model(model_path(registered, "v9"), seed=9, n_features=n_features, names=names)
    assert_rejected(engine, path, *needles)


# -- the size cap: before hashing or parsing -----------------------------------------------


def test_file_over_the_cap_is_refused_before_it_is_read(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_registry(registered, "max_artifact_mb", 0.001)
    path = write(model_path(registered, "v9"), version_bytes(registered, "v2.0") + b" ")
    with closing(Engine(registered)) as engine:
        before = engine.models().artifacts
        engine.config  # noqa: B018 - read config.toml before the no-open zone
        with no_file_access(monkeypatch), pytest.raises(ArtifactRejected) as info:
            engine.register(path)
        assert "over the 1.0 KiB cap" in str(info.value)
        assert "registry.max_artifact_mb" in str(info.value)
        report = engine.models()
        assert report.artifacts == before
        assert dict(report.unregistered)[path.name] == str(info.value)


def test_two_gigabyte_file_is_refused_by_its_size(
    engine: Engine, registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_path(registered, "v9")
    with path.open("wb") as handle:
        handle.truncate(2 * 1024**3)  # sparse: no disk used
    before = engine.models().artifacts
    engine.config  # noqa: B018
    with no_file_access(monkeypatch), pytest.raises(ArtifactRejected) as info:
        engine.register(path)
    assert "2.0 GiB is over the 512.0 MiB cap" in str(info.value)
    assert engine.models().artifacts == before


# -- the child: crash, hang, garbage -------------------------------------------------------


DYING_CHILDREN: dict[str, tuple[str, str]] = {
    "segv": ("kill -SEGV $$", "crashed XGBoost (SIGSEGV)"),
    "abrt": ("kill -ABRT $$", "crashed XGBoost (SIGABRT)"),
    "realtime-signal": ("kill -40 $$", "crashed XGBoost (signal 40)"),
    "exit-3": ("echo boom >&2; exit 3", "validator failed (exit 3): boom"),
    "silent": ("exit 0", "no readable answer"),
    "not-an-object": ("echo '[1, 2]'", "no readable answer"),
}


@pytest.mark.parametrize("case", list(DYING_CHILDREN))
def test_child_that_dies_rejects_the_file_and_the_engine_carries_on(
    engine: Engine,
    registered: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """The validator child stands in for XGBoost dying: it is a shell that kills itself.

    (The hand-edited models that crashed XGBoost 3.2 are refused before it runs, see above,
    so a real crash cannot be produced on demand any more.)"""
    script, needle = DYING_CHILDREN[case]
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    fake.chmod(0o755)
    path = write(model_path(registered, "v9"), b'{"stands": "in"}')
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(fake))
        assert_rejected(engine, path, needle)
    # Still alive and still working: the same engine registers a real file afterwards.
    copy_path = write(registered.models_dir / "copy.json", version_bytes(registered, "v2.0"))
    assert engine.register(copy_path).new is False


def _children_reading(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline.split(b"\0"):
                found.append(int(proc.name))
    return found


def test_timeout_rejects_then_a_retry_registers_named_from_the_file(workspace: Workspace) -> None:
    """A fresh workspace: the line and version come from the file name alone."""
    path = train_model(workspace.models_dir / "quality-predictor-v3-advanced.json", seed=3)
    set_registry(workspace, "validation_timeout_s", 0.01)
    with closing(Engine(workspace)) as engine:
        message = assert_rejected(engine, path, "timed out after 0.01s")
        assert "crashed" not in message and engine.lines() == []
    assert _children_reading(path) == []  # the whole child process group was killed

    set_registry(workspace, "validation_timeout_s", 60)
    with closing(Engine(workspace)) as engine:
        reg = engine.register(path)
        assert reg.new and reg.version is not None
        assert (reg.version.line, reg.version.name) == ("quality-predictor", "v3-advanced")
        assert engine.lines() == ["quality-predictor"]
        row = by_sha(engine, sha(path.read_bytes()))
        assert row is not None and row.status == "valid" and row.reason is None
        assert row.id == reg.artifact.id  # the rejected row became the valid one


def test_validation_refuses_bytes_that_changed_after_hashing(registered: Workspace) -> None:
    path = write(model_path(registered, "v9"), b'{"hello": 1}')
    changed = artifacts.validate_in_child(path, "json", 30, expected_sha256="0" * 64)
    assert not changed.ok and changed.reason is not None
    assert "changed while it was being validated" in changed.reason
    same = artifacts.validate_in_child(path, "json", 30, expected_sha256=sha(b'{"hello": 1}'))
    assert same.reason is not None and "not an XGBoost model" in same.reason
    assert same.sha256 == sha(b'{"hello": 1}')


def test_file_finished_between_hashing_and_validation_is_not_registered_under_the_old_hash(
    engine: Engine, registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer finishes the file after the engine hashed its first 100 bytes: the child
    then judges the whole (valid) file, and the verdict must not be filed under the hash
    of the half."""
    whole = version_bytes(registered, "v2.0")
    path = write(model_path(registered, "v9"), whole[:100])
    real_sha256_of = artifacts.sha256_of

    def hash_then_writer_finishes(target: Path) -> str:
        digest = real_sha256_of(target)
        if target == path.resolve():
            target.write_bytes(whole)
        return digest

    monkeypatch.setattr(artifacts, "sha256_of", hash_then_writer_finishes)
    before = valid_state(engine)
    with pytest.raises(ArtifactRejected, match="changed while it was being validated"):
        engine.register(path)
    assert valid_state(engine) == before


# -- paths given by a user -----------------------------------------------------------------


def _outside_file(ws: Workspace) -> Path:
    outside = ws.root.parent / "etc" / "passwd"
    write(outside, version_bytes(ws))  # a real model, so only its location refuses it
    return outside


def _symlink_out(ws: Workspace) -> str:
    link = model_path(ws, "v9")
    link.symlink_to(_outside_file(ws))
    return str(link)


def _symlink_dir_out(ws: Workspace) -> str:
    (ws.models_dir / "shared").symlink_to(_outside_file(ws).parent)
    return "shared/passwd"


def _symlink_loop(ws: Workspace) -> str:
    (ws.models_dir / "a.json").symlink_to(ws.models_dir / "b.json")
    (ws.models_dir / "b.json").symlink_to(ws.models_dir / "a.json")
    return "a.json"


def _directory(ws: Workspace) -> str:
    model_path(ws, "v9").mkdir()
    return model_path(ws, "v9").name


def _fifo(ws: Workspace) -> str:
    os.mkfifo(model_path(ws, "v9"))  # opening it would block: a refusal proves no open
    return model_path(ws, "v9").name


def _pkl(ws: Workspace) -> str:
    write(model_path(ws, "v9", ".pkl"), version_bytes(ws))
    return model_path(ws, "v9", ".pkl").name


def _dotdot(ws: Workspace) -> str:
    _outside_file(ws)
    return "../../etc/passwd"


def _dotdot_through_models(ws: Workspace) -> str:
    _outside_file(ws)
    return "../../.beast-mode/models/../../etc/passwd"


PATHS: dict[str, tuple[Callable[[Workspace], str], str]] = {
    "dotdot": (_dotdot, "outside"),
    "dotdot-through-models": (_dotdot_through_models, "outside"),
    "absolute": (lambda ws: "/etc/passwd", "outside"),
    "workspace-config": (lambda ws: str(ws.config_path), "outside"),
    "symlink-out": (_symlink_out, "outside"),
    "symlinked-dir-out": (_symlink_dir_out, "outside"),
    "symlink-loop": (_symlink_loop, "refused path"),
    "file-url": (lambda ws: "file:///etc/passwd", "not a URL"),
    "file-url-into-models": (
        lambda ws: f"file://{model_path(ws, 'v1.0')}",
        "not a URL",
    ),
    "nul-byte": (lambda ws: "quality-predictor-v1.0.json\x00.txt", "NUL byte"),
    "5000-characters": (lambda ws: "q" * 4995 + ".json", "5000 characters"),
    "300-character-name": (lambda ws: "q" * 300 + ".json", "too long"),
    "nonexistent": (lambda ws: "quality-predictor-v9.json", "no such file"),
    "directory": (_directory, "not a regular file"),
    "directory-outside": (lambda ws: str(ws.root), "outside"),
    "models-itself": (lambda ws: ".", "not a regular file"),
    "fifo": (_fifo, "not a regular file"),
    "pickle-extension": (_pkl, "unsupported extension .pkl"),
}


@pytest.mark.parametrize("case", list(PATHS))
def test_hostile_paths_are_refused_before_any_open(
    engine: Engine, registered: Workspace, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    make, needle = PATHS[case]
    raw = make(registered)
    monkeypatch.chdir(registered.models_dir)
    before = engine.models().artifacts
    engine.config  # noqa: B018 - config.toml is read before the no-open zone
    with no_file_access(monkeypatch), pytest.raises(BeastError) as info:
        engine.register(raw)
    message = str(info.value)
    assert needle in message
    assert "\x00" not in message and len(message) < 1000
    assert engine.models().artifacts == before


def test_symlink_inside_models_to_a_file_inside_models_is_followed(
    engine: Engine, registered: Workspace
) -> None:
    link = registered.models_dir / "latest.json"
    link.symlink_to(model_path(registered, "v2.0"))
    reg = engine.register(link)
    assert reg.new is False and reg.version is not None and reg.version.name == "v2.0"
    assert reg.artifact.path == str(model_path(registered, "v2.0"))


# -- same bytes, names, conflicts ----------------------------------------------------------


def test_same_bytes_twice_is_one_artifact_and_names_can_be_added(
    engine: Engine, registered: Workspace
) -> None:
    path = train_model(model_path(registered, "v3.1", ".ubj"), seed=31)
    first = engine.register(path)
    assert first.new and first.version is not None
    assert (first.version.line, first.version.name) == ("quality-predictor", "v3.1")
    assert first.artifact.format == "ubj" and first.artifact.n_features == 5
    assert first.artifact.feature_names == FEATURES

    copy_path = registered.models_dir / "same-bytes.ubj"
    shutil.copyfile(path, copy_path)
    assert [p for p, _ in engine.models().unregistered] == []  # a copy is registered already
    second = engine.register(copy_path)
    assert second.new is False
    assert second.artifact.sha256 == first.artifact.sha256 == sha(path.read_bytes())
    assert second.version is not None and second.version.name == "v3.1"
    assert second.artifact.versions == ("v3.1",)

    named = engine.register(copy_path, version="v3.1-alt")
    assert named.new is False and named.artifact.id == first.artifact.id
    assert named.artifact.versions == ("v3.1", "v3.1-alt")
    assert sum(a.sha256 == first.artifact.sha256 for a in engine.models().artifacts) == 1

    before = valid_state(engine)
    with pytest.raises(Conflict, match=r"version v1\.0 of quality-predictor is already registered"):
        engine.register(copy_path, version="v1.0")
    with pytest.raises(Conflict, match="already registered in model line quality-predictor"):
        engine.register(copy_path, model="other-line", version="v1")
    assert valid_state(engine) == before


def test_explicit_version_wins_over_the_file_name(engine: Engine, registered: Workspace) -> None:
    path = write(model_path(registered, "v7"), version_bytes(registered, "v2.0"))
    reg = engine.register(path, version="v8")
    assert reg.version is not None and reg.version.name == "v8"
    assert reg.artifact.versions == ("v2.0", "v8")
    assert "v7" not in {v for a in engine.models().artifacts for v in a.versions}


@pytest.mark.parametrize("where", ["fresh", "registered"])
def test_unnamed_file_without_version_is_refused_asking_for_it(
    workspace: Workspace,
    registered: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    ws = workspace if where == "fresh" else registered
    doc = model_doc(registered)
    path = write(ws.models_dir / "model.json", json.dumps(doc, indent=1).encode())  # new bytes
    with closing(Engine(ws)) as engine:
        before = engine.models().artifacts
        monkeypatch.setattr(artifacts, "validate_in_child", _forbidden)
        with pytest.raises(BeastError, match=r"pass --version V"):
            engine.register(path)
        assert engine.models().artifacts == before
        problem = dict(engine.models().unregistered)["model.json"]
        assert problem is not None and "no model line and version in the file name" in problem


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("quality-predictor-v3-advanced.json", ("quality-predictor", "v3-advanced")),
        ("quality-predictor-v3.1.ubj", ("quality-predictor", "v3.1")),
        ("quality-predictor-v1.0.json", ("quality-predictor", "v1.0")),
        ("quality-predictor-v2.JSON", ("quality-predictor", "v2")),
        ("quality_predictor_v4.json", ("quality_predictor", "v4")),
        ("churn-model-v10-rc1.ubj", ("churn-model", "v10-rc1")),
        ("a-v1-v2.json", ("a", "v1-v2")),
        ("v5.json", (None, "v5")),
        ("model.json", ("model", None)),
        ("quality-predictor.json", ("quality-predictor", None)),
        ("quality-predictor-1.0.json", ("quality-predictor-1.0", None)),
        ("quality-predictor-vnext.json", ("quality-predictor-vnext", None)),
    ],
)
def test_split_filename(name: str, expected: tuple[str | None, str | None]) -> None:
    assert split_filename(Path(name)) == expected


@pytest.mark.parametrize(
    ("name", "version", "model", "lines", "expected"),
    [
        ("quality-predictor-v7.json", "v8", None, [], Naming("quality-predictor", "v8")),
        ("quality-predictor-v7.json", None, "other", [], Naming("other", "v7")),
        ("v5.json", None, None, ["quality-predictor"], Naming("quality-predictor", "v5")),
        ("v5.json", None, None, ["a", "b"], Naming(None, "v5")),
        ("model.json", None, None, [], Naming("model", None)),
    ],
)
def test_naming_for(
    name: str, version: str | None, model: str | None, lines: list[str], expected: Naming
) -> None:
    assert naming_for(Path(name), version=version, model=model, lines=lines) == expected


def test_bad_version_name_is_refused(engine: Engine, registered: Workspace) -> None:
    path = write(model_path(registered, "v7"), version_bytes(registered, "v2.0"))
    before = valid_state(engine)
    with pytest.raises(BeastError, match="invalid version name"):
        engine.register(path, version="../v8")
    assert valid_state(engine) == before


# -- `beast models --json` -----------------------------------------------------------------


def test_beast_models_json_lists_valid_rejected_and_unregistered(
    engine: Engine, registered: Workspace
) -> None:
    rejected = write(model_path(registered, "v9"), b'{"hello": 1}')
    with pytest.raises(ArtifactRejected):
        engine.register(rejected)
    loose = train_model(model_path(registered, "v6"), seed=6)  # written, not registered
    write(registered.models_dir / "notes.txt", b"not a model")
    engine.close()

    result = beast(registered, "models", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    rows = {row["sha256"]: row for row in document["models"]}
    for row in rows.values():
        assert {"version", "path", "sha256", "status", "reason", "n_features"} <= set(row)
        assert row["status"] in ("valid", "rejected")

    for version in ("v1.0", "v2.0", "v3.0", "v4.0"):
        path = model_path(registered, version)
        row = rows[sha(path.read_bytes())]
        assert row["version"] == version and row["path"] == str(path)
        assert (row["status"], row["reason"], row["n_features"]) == ("valid", None, 5)

    bad = rows[sha(b'{"hello": 1}')]
    assert (bad["status"], bad["version"], bad["n_features"]) == ("rejected", None, None)
    assert "not an XGBoost model" in bad["reason"] and bad["path"] == str(rejected)

    unregistered = {row["path"]: row["problem"] for row in document["unregistered"]}
    assert unregistered[loose.name] is None
    assert "unsupported extension .txt" in unregistered["notes.txt"]
    assert rejected.name not in unregistered


def test_beast_register_refusal_is_one_line_and_exit_1(registered: Workspace) -> None:
    path = write(model_path(registered, "v9"), b"")
    result = beast(registered, "register", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "empty file" in result.stderr
    assert "Traceback" not in result.stderr
