"""The seed guide's deployment half, command for command, through the installed `beast` script.

Runs in a temporary project directory with the default `./.beast-mode` workspace and real
XGBoost models trained here; every step is checked against `beast status --json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine import Workspace
from tests.helpers import assert_invariants, beast_json_here, train_model

BEAST = str(Path(sys.executable).parent / "beast")


def run(project: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BEAST_HOME"}
    out = subprocess.run(
        [BEAST, *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if ok:
        assert out.returncode == 0, f"beast {' '.join(args)}: {out.stderr}"
    return out


def status(project: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(run(project, "status", "--json").stdout)
    return doc


def serving(project: Path) -> dict[str, tuple[str, float]]:
    """Who serves what, by `beast status --json` run in this process: a check after a step,
    not a step of the guide (each a cold process cost ~2 s; `status` above is a real one)."""
    doc = beast_json_here(Workspace(project / ".beast-mode"), "status", "--json")
    return {d["version"]: (d["role"], d["traffic"]) for d in doc["deployments"]}


def test_seed_guide_deployment_sequence(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    run(project, "init")
    models = project / ".beast-mode" / "models"
    for seed, name in enumerate(
        [
            "quality-predictor-v1.0.json",
            "quality-predictor-v3-advanced.json",
            "quality-predictor-v3.1.ubj",
        ],
        start=1,
    ):
        train_model(models / name, seed=seed, rounds=4 + seed)

    # Baseline at 100% (the guide's first command, with the baseline model).
    run(project, "deploy", ".beast-mode/models/quality-predictor-v1.0.json", "--version", "v1.0")
    assert serving(project) == {"v1.0": ("production", 100)}

    # "Deploy with A/B testing (10% traffic to new model)".
    run(
        project,
        "deploy",
        ".beast-mode/models/quality-predictor-v3-advanced.json",
        "--version",
        "v3.0",
        "--traffic",
        "10",
        "--ab-test",
        "retrain-v3",
    )
    assert serving(project) == {"v1.0": ("production", 90), "v3.0": ("candidate", 10)}

    # "Check deployment status".
    text = run(project, "deploy", "--status").stdout
    assert "retrain-v3" in text and "candidate" in text

    # "Promote A/B test winner": no verdict exists yet, so it says why and needs --force.
    refused = run(project, "deploy", "--promote", "retrain-v3", ok=False)
    assert refused.returncode == 1 and "--force" in refused.stderr
    run(project, "deploy", "--promote", "retrain-v3", "--force")
    assert serving(project) == {"v3.0": ("production", 100)}
    doc = status(project)
    assert doc["experiments"][0]["status"] == "promoted"
    names = {m["version"] for m in json.loads(run(project, "models", "--json").stdout)["models"]}
    assert "v3.0" in names

    # "Rollback to previous version", then "Rollback to Specific Version".
    run(project, "deploy", "--rollback")
    assert serving(project) == {"v1.0": ("production", 100)}
    run(project, "deploy", "--rollback", "v3.0")
    assert serving(project) == {"v3.0": ("production", 100)}

    # "Create A/B Test" with the UBJ model at 20%, then promote it.
    run(
        project,
        "deploy",
        ".beast-mode/models/quality-predictor-v3.1.ubj",
        "--version",
        "v3.1",
        "--traffic",
        "20",
        "--ab-test",
        "v3-vs-v3.1",
    )
    assert serving(project) == {"v3.0": ("production", 80), "v3.1": ("candidate", 20)}
    run(project, "deploy", "--promote", "v3-vs-v3.1", "--force")
    assert serving(project) == {"v3.1": ("production", 100)}

    # "All deployments are tracked in .beast-mode/deployments/history.json".
    exported = json.loads((project / ".beast-mode/deployments/history.json").read_text())
    assert [h["action"] for h in exported] == [
        "deploy",
        "ab_start",
        "promote",
        "rollback",
        "rollback",
        "ab_start",
        "promote",
    ]
    history = json.loads(run(project, "history", "--json").stdout)
    assert history == exported

    # "Model Not Loading": `ml:status` → beast models shows what serves.
    text = run(project, "models").stdout
    assert "ab-winner-v3-vs-v3.1" in text and "production" in text
    doctor = run(project, "doctor")
    assert "all invariants hold" in doctor.stdout
    assert_invariants(Workspace(project / ".beast-mode"))
