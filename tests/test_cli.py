"""The `beast` command's contract: exit codes, one-line refusals, JSON documents, seed spellings.

The tests of what a process does (a workspace it creates, BEAST_HOME, a missing workspace, a bad
config, `--debug`'s traceback) run the real `beast` subprocess; those of what the command prints
and returns run its entry point in this process (`beast_here`: ~2 s of imports saved per call,
some 45 calls here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Workspace
from tests.helpers import beast, beast_here


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {text!r}"
    assert "Traceback" not in text
    return lines[0]


def test_init_creates_the_workspace_and_is_idempotent(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "w")
    first = beast(ws, "init")
    assert first.returncode == 0, first.stderr
    for part in ("config.toml", "models", "deployments", "data", "deployments/history.json"):
        assert (ws.root / part).exists(), part
    again = beast(ws, "init")
    assert again.returncode == 0 and "already initialised" in again.stdout


def test_beast_home_selects_the_workspace(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "home")
    beast(ws, "init")
    out = beast(None, "status", "--json", env={"BEAST_HOME": str(ws.root)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["deployments"] == []


def test_missing_workspace_is_one_line_exit_1(tmp_path: Path) -> None:
    out = beast(Workspace(tmp_path / "nowhere"), "status")
    assert out.returncode == 1
    assert "beast init" in one_line(out.stderr)


def test_bad_config_is_refused_naming_key_and_value(registered: Workspace) -> None:
    good = registered.config_path.read_text()
    registered.config_path.write_text("[thresholds]\naccuracy = { min = 2, alert = 0.75 }\n")
    out = beast(registered, "status")
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert "thresholds.accuracy.min" in line and "2" in line
    registered.config_path.write_text(good)


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["deploy", "--traffic", "ten"],
        ["promote"],
        ["deploy", "--status", "--promote", "x"],
        ["history", "--limit", "many"],
    ],
)
def test_usage_errors_exit_2(
    registered: Workspace, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = beast_here(capsys, registered, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr


def test_refusals_are_one_line_exit_1_and_debug_shows_traceback(registered: Workspace) -> None:
    out = beast(registered, "rollback")
    assert out.returncode == 1
    assert one_line(out.stderr).startswith("beast: nothing is deployed")
    debug = beast(registered, "--debug", "rollback")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_seed_spellings_work(registered: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    models = registered.models_dir
    assert (
        beast_here(
            capsys,
            registered,
            "deploy",
            str(models / "quality-predictor-v1.0.json"),
            "--version",
            "v1.0",
        ).returncode
        == 0
    )
    out = beast_here(
        capsys,
        registered,
        "deploy",
        str(models / "quality-predictor-v3.0.json"),
        "--version",
        "v3.0",
        "--traffic",
        "10",
        "--ab-test",
        "retrain-v3",
    )
    assert out.returncode == 0, out.stderr
    status = beast_here(capsys, registered, "deploy", "--status")
    assert status.returncode == 0 and "retrain-v3" in status.stdout and "90%" in status.stdout
    refused = beast_here(capsys, registered, "deploy", "--promote", "retrain-v3")
    assert refused.returncode == 1 and "--force" in one_line(refused.stderr)
    assert (
        beast_here(capsys, registered, "deploy", "--promote", "retrain-v3", "--force").returncode
        == 0
    )
    assert beast_here(capsys, registered, "deploy", "--rollback").returncode == 0
    rolled = beast_here(capsys, registered, "deploy", "--rollback", "v3.0", "--json")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["history"]["to_state"]["production"] == "v3.0"


def test_status_json_contract(registered: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    beast_here(capsys, registered, "deploy", "--version", "v1.0")
    beast_here(
        capsys, registered, "deploy", "--version", "v2.0", "--traffic", "20", "--ab-test", "exp"
    )
    doc = json.loads(beast_here(capsys, registered, "status", "--json").stdout)
    rows = {d["version"]: d for d in doc["deployments"]}
    assert rows["v1.0"]["role"] == "production" and rows["v1.0"]["traffic"] == 80
    assert rows["v2.0"]["role"] == "candidate" and rows["v2.0"]["traffic"] == 20
    assert rows["v2.0"]["experiment"] == "exp" and rows["v1.0"]["experiment"] == "exp"
    (exp,) = doc["experiments"]
    assert {k: exp[k] for k in ("name", "status", "control", "candidate", "traffic")} == {
        "name": "exp",
        "status": "running",
        "control": "v1.0",
        "candidate": "v2.0",
        "traffic": 20,
    }
    assert "verdict" in exp and doc["health"] == "no data"


def test_models_and_history_json_contracts(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    beast_here(capsys, registered, "deploy", "--version", "v1.0", "--note", "first one")
    models = json.loads(beast_here(capsys, registered, "models", "--json").stdout)["models"]
    assert {m["version"] for m in models} == {"v1.0", "v2.0", "v3.0", "v4.0"}
    for m in models:
        assert m["status"] == "valid" and m["reason"] is None and m["n_features"] == 5
        assert len(m["sha256"]) == 64 and Path(m["path"]).is_file()
    history = json.loads(beast_here(capsys, registered, "history", "--json").stdout)
    assert [h["action"] for h in history] == ["deploy"]
    assert history[0]["note"] == "first one" and history[0]["actor"]


def test_stale_expectation_is_refused_with_retry(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    beast_here(capsys, registered, "deploy", "--version", "v1.0")
    beast_here(capsys, registered, "deploy", "--version", "v2.0")
    out = beast_here(capsys, registered, "rollback", "--expect", "v1.0")
    assert out.returncode == 1
    assert "state changed since you looked, retry" in one_line(out.stderr)


def test_doctor_names_a_broken_invariant(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    beast_here(capsys, registered, "deploy", "--version", "v1.0")
    ok = beast_here(capsys, registered, "doctor")
    assert ok.returncode == 0 and "all invariants hold" in ok.stdout
    # Tamper with the deployed artifact's bytes: invariant 4 must be named.
    path = registered.models_dir / "quality-predictor-v1.0.json"
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"num_trees"', b'"num_trees" ', 1))
    broken = beast_here(capsys, registered, "doctor")
    assert broken.returncode == 1
    assert "invariant 4 broken" in broken.stdout and "invariant 4" in one_line(broken.stderr)
    path.unlink()
    missing = beast_here(capsys, registered, "doctor")
    assert missing.returncode == 1 and "missing" in one_line(missing.stderr)
    path.write_bytes(original)


def test_doctor_repairs_a_stale_export(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    beast_here(capsys, registered, "deploy", "--version", "v1.0")
    registered.history_export_path.write_text("[]\n")
    warned = beast_here(capsys, registered, "doctor")
    assert warned.returncode == 0 and "behind" in warned.stdout
    repaired = beast_here(capsys, registered, "doctor", "--repair")
    assert repaired.returncode == 0 and "warning" not in repaired.stdout


def test_backup_copies_and_never_overwrites(
    registered: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beast_here(capsys, registered, "deploy", "--version", "v1.0")
    dest = tmp_path / "backup.db"
    first = beast_here(capsys, registered, "backup", str(dest))
    assert first.returncode == 0, first.stderr
    assert dest.is_file()
    again = beast_here(capsys, registered, "backup", str(dest))
    assert again.returncode == 1 and "already exists" in one_line(again.stderr)


def test_every_help_page_renders(registered: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    top = beast_here(capsys, registered, "--help")
    assert top.returncode == 0, top.stderr
    commands = [
        "init",
        "deploy",
        "status",
        "rollback",
        "promote",
        "abort",
        "history",
        "models",
        "register",
        "backup",
        "restore",
        "doctor",
        "monitor",
        "predict",
        "feedback",
    ]
    for command in commands:
        out = beast_here(capsys, registered, command, "--help")
        assert out.returncode == 0 and "usage: beast" in out.stdout, (command, out.stderr)
        assert "%%" not in out.stdout


def test_feedback_file_answers_each_line(
    registered: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beast_here(capsys, registered, "deploy", "--version", "v1.0")
    out = beast_here(capsys, registered, "predict", "[0.5, 3, 1, 0.1, 0.2]", "--json")
    assert out.returncode == 0, out.stderr
    pid = json.loads(out.stdout)["prediction_id"]
    feedback = tmp_path / "actuals.csv"
    feedback.write_text(f"prediction_id,actual\n{pid},70\n{pid},70\n{'0' * 32},5\n")
    done = beast_here(capsys, registered, "feedback", "--file", str(feedback), "--json")
    assert done.returncode == 1  # the unknown id is refused, the others answered
    statuses = [r["status"] for r in json.loads(done.stdout)]
    assert statuses == ["recorded", "duplicate", "not found"]
    again = beast_here(capsys, registered, "feedback", pid, "71")
    assert again.returncode == 1 and "already has actual" in again.stderr
