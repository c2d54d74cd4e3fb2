"""README "Your own model", run as written: its code blocks are read from the README and run in
order, in a new directory, by real processes (`bash` for the shell blocks, one command a
process; this interpreter for the notebook blocks), on a CSV of changes with the user's own
column names (`reverted`, `at`). Each test below checks one step's contract; the walkthrough
runs once per module.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.demo import sample_data
from tests.helpers import REPO, assert_invariants, beast_json_here, once_per_run

SECTION = "## Your own model"
LINE = "revert-risk"
# The commands the issue names, exactly: the README must hold each of them as written.
CONTRACT = (
    "beast init",
    "beast register models/revert-risk-v1.0.json --reference ref.csv",
    "beast deploy models/revert-risk-v1.0.json",
    "beast deploy models/revert-risk-v2.0.json --reference ref.csv --traffic 20 "
    "--ab-test deeper-trees",
    "beast predict --csv new-changes.csv --json > predictions.json",
    "beast feedback --file labels.csv",
    "beast monitor --model revert-risk",
    "beast promote deeper-trees --force",
    "beast rollback --model revert-risk",
    "beast retrain --check --model revert-risk",
    "beast retrain --force --model revert-risk",
)


@dataclass(frozen=True)
class Block:
    language: str  # "sh" or "python"
    text: str


@dataclass(frozen=True)
class Ran:
    command: str
    returncode: int
    stdout: str
    stderr: str

    def why(self) -> str:
        return f"{self.command!r} exited {self.returncode}: {self.stderr.strip()[-600:]}"


def readme_blocks() -> list[Block]:
    """The fenced code blocks of the README's "Your own model" section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index(SECTION + "\n")
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end != -1 else len(readme)]
    return [
        Block(m.group(1), m.group(2))
        for m in re.finditer(r"```(sh|python)\n(.*?)```", section, flags=re.DOTALL)
    ]


def shell_commands(text: str) -> list[str]:
    """One command per line; a here-document stays with the line that opens it."""
    commands: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        heredoc = re.search(r"<<'?(\w+)'?", line)
        if heredoc:
            body = [line]
            for more in lines:
                body.append(more)
                if more == heredoc.group(1):
                    break
            commands.append("\n".join(body))
        else:
            commands.append(line)
    return commands


def _write_changes(path: Path, n: int, *, seed: int, drift: float = 0.0) -> None:
    """The user's own CSV: the generator's changes under the user's column names."""
    samples = sample_data.generate_reverts(n, seed=seed, drift=drift)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*sample_data.REVERT_FEATURES, "reverted", "at"])
        for row, label, when in zip(
            samples.features, samples.reverted, samples.merged_at, strict=True
        ):
            writer.writerow([f"{v:.6g}" for v in row] + [int(label), when])


# After these README steps the test also takes the state as JSON (later steps change it).
SNAPSHOTS = {
    "beast status": "beast status --json",
    "beast monitor --model revert-risk": "beast monitor --model revert-risk --window 24h --json",
}


@dataclass(frozen=True)
class Walkthrough:
    project: Path
    ran: tuple[Ran, ...]
    snapshots: dict[str, Any]

    def snapshot(self, command: str) -> Any:
        assert command in self.snapshots, f"the README no longer runs {command!r}"
        return self.snapshots[command]

    def step(self, command: str) -> Ran:
        found = [r for r in self.ran if r.command == command]
        assert found, f"the README no longer runs {command!r}"
        return found[0]

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.project)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Walkthrough:
    """The walkthrough, run once per test run (both xdist workers read the one run)."""
    root = once_per_run(tmp_path_factory, "own-model", _walk)
    doc = json.loads((root / "walkthrough.json").read_text(encoding="utf-8"))
    ran = tuple(Ran(**r) for r in doc["ran"])
    return Walkthrough(Path(doc["project"]), ran, doc["snapshots"])


def _walk(root: Path) -> None:
    """Run the README's blocks in `root`; what each printed, into root/walkthrough.json."""
    home = root / "home"
    home.mkdir()
    _write_changes(home / "changes.csv", 4000, seed=21)
    _write_changes(home / "new-changes.csv", 600, seed=22, drift=0.3)
    project = root / "revert-risk"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "BEAST_HOME": str(project),
    }
    env.pop("BEAST_MODE_ACTOR", None)
    ran: list[Ran] = []
    snapshots: dict[str, Any] = {}
    for block in readme_blocks():
        if block.language == "python":
            cwd = project if project.is_dir() else root
            done = subprocess.run(
                [sys.executable, "-c", block.text],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            ran.append(Ran(block.text, done.returncode, done.stdout, done.stderr))
            continue
        for command in shell_commands(block.text):
            cwd = project if project.is_dir() else root
            # `cd` lasts for its own line: every later command runs in the project directory.
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            ran.append(Ran(command, done.returncode, done.stdout, done.stderr))
            if command in SNAPSHOTS:
                # Between README steps, not a step: read in this process.
                snapshots[command] = beast_json_here(
                    Workspace(project), *shlex.split(SNAPSHOTS[command])[1:]
                )
    doc = {"project": str(project), "ran": [asdict(r) for r in ran], "snapshots": snapshots}
    (root / "walkthrough.json").write_text(json.dumps(doc), encoding="utf-8")


def test_the_readme_holds_the_walkthroughs_commands_as_the_issue_names_them() -> None:
    commands = [c for b in readme_blocks() if b.language == "sh" for c in shell_commands(b.text)]
    for expected in CONTRACT:
        assert expected in commands, f"README 'Your own model' lacks {expected!r}"
    config = next(c for c in commands if c.startswith("cat >> config.toml"))
    for key in ("[lines.revert-risk]", 'task = "binary"', 'label = "reverted"', 'time = "at"'):
        assert key in config.splitlines()
    notebook = [b.text for b in readme_blocks() if b.language == "python"]
    assert any("XGBClassifier" in text and "save_model" in text for text in notebook)


def test_init_and_the_notebook_train_two_classifiers(walkthrough: Walkthrough) -> None:
    assert walkthrough.step("beast init").returncode == 0
    notebooks = [r for r in walkthrough.ran if "XGBClassifier" in r.command]
    assert notebooks and notebooks[0].returncode == 0, notebooks[0].why()
    for version in ("v1.0", "v2.0"):
        booster = xgb.Booster()
        booster.load_model(str(walkthrough.project / "models" / f"revert-risk-{version}.json"))
        config = json.loads(booster.save_config())
        assert config["learner"]["objective"]["name"] == "binary:logistic"
        assert list(booster.feature_names or ()) == list(sample_data.REVERT_FEATURES)
    assert (walkthrough.project / "ref.csv").is_file()


def test_the_line_is_declared_binary_with_the_users_columns(walkthrough: Walkthrough) -> None:
    engine = Engine(walkthrough.workspace)
    try:
        line = engine.config.line(LINE)
    finally:
        engine.close()
    assert (line.task, line.label, line.time) == ("binary", "reverted", "at")


def test_register_with_reference_data_stores_the_baseline(walkthrough: Walkthrough) -> None:
    ran = walkthrough.step("beast register models/revert-risk-v1.0.json --reference ref.csv")
    assert ran.returncode == 0, ran.why()
    assert "baseline from reference ref.csv" in ran.stdout  # the baseline names its source


def test_deploy_and_an_ab_test_with_the_second_model(walkthrough: Walkthrough) -> None:
    assert walkthrough.step("beast deploy models/revert-risk-v1.0.json").returncode == 0
    ab = walkthrough.step(
        "beast deploy models/revert-risk-v2.0.json --reference ref.csv --traffic 20 "
        "--ab-test deeper-trees"
    )
    assert ab.returncode == 0, ab.why()
    status = walkthrough.step("beast status")
    assert status.returncode == 0
    deployments = walkthrough.snapshot("beast status")["deployments"]
    roles = {(d["version"], d["role"], d["traffic"]) for d in deployments}
    assert roles == {("v1.0", "production", 80), ("v2.0", "candidate", 20)}
    assert {d["experiment"] for d in deployments} == {"deeper-trees"}
    assert {d["baseline"] for d in deployments} == {"reference"}  # both from ref.csv


def test_predict_on_the_users_csv_ignores_label_and_time(walkthrough: Walkthrough) -> None:
    ran = walkthrough.step("beast predict --csv new-changes.csv --json > predictions.json")
    assert ran.returncode == 0, ran.why()
    assert "reverted" in ran.stderr and "at" in ran.stderr  # it says which columns it ignored
    served = json.loads((walkthrough.project / "predictions.json").read_text())
    assert len(served) == 600
    assert all(0 <= p["score"] <= 1 and p["line"] == LINE for p in served)
    assert {p["arm"] for p in served} == {"production", "candidate"}


def test_labels_fed_back_and_monitored_with_binary_metrics(walkthrough: Walkthrough) -> None:
    labels = [r for r in walkthrough.ran if "labels.csv" in r.command and "import" in r.command]
    assert labels and labels[0].returncode == 0, labels[0].why()
    feedback = walkthrough.step("beast feedback --file labels.csv")
    assert feedback.returncode == 0, feedback.why()
    monitor = walkthrough.step("beast monitor --model revert-risk")
    assert monitor.returncode == 0, monitor.why()
    report = walkthrough.snapshot("beast monitor --model revert-risk")
    versions = {v["version"]: v for v in report["versions"]}
    assert sum(v["windows"]["24h"]["labelled"] for v in versions.values()) == 600
    for figures in versions.values():
        window = figures["windows"]["24h"]
        assert {"auc", "log_loss", "precision", "recall", "brier"} <= window.keys()
        assert figures["baseline"]["source"] == "reference"
    assert "auc" in monitor.stdout


def test_promote_then_rollback(walkthrough: Walkthrough) -> None:
    promoted = walkthrough.step("beast promote deeper-trees --force")
    assert promoted.returncode == 0, promoted.why()
    assert "v2.0" in promoted.stdout
    rolled = walkthrough.step("beast rollback --model revert-risk")
    assert rolled.returncode == 0, rolled.why()
    engine = Engine(walkthrough.workspace)
    try:
        history = [h.action for h in engine.history(LINE)]
        production = {d.version for d in engine.status().deployments if d.role == "production"}
        test = engine.experiment("deeper-trees")
    finally:
        engine.close()
    assert history[-2:] == ["promote", "rollback"]
    assert production == {"v1.0"} and test.status == "promoted"


def test_retrain_check_lists_the_users_csv_and_retraining_uses_it(
    walkthrough: Walkthrough,
) -> None:
    assert walkthrough.step("cp changes.csv data/").returncode == 0
    check = walkthrough.step("beast retrain --check --model revert-risk")
    assert check.returncode == 0, check.why()
    assert "changes.csv" in check.stdout and "4000" in check.stdout.replace(",", "")
    job = walkthrough.step("beast retrain --force --model revert-risk")
    assert job.returncode == 0, job.why()
    assert walkthrough.step("beast jobs").returncode == 0
    engine = Engine(walkthrough.workspace)
    try:
        (latest, *_) = engine.jobs(model=LINE)
    finally:
        engine.close()
    assert latest.status == "succeeded", latest
    assert_invariants(walkthrough.workspace)


def test_a_regressor_offered_to_the_binary_line_is_refused(walkthrough: Walkthrough) -> None:
    rng = np.random.default_rng(3)
    x = rng.random((200, len(sample_data.REVERT_FEATURES))).astype(np.float32)
    booster = xgb.train(
        {"objective": "reg:squarederror", "nthread": 1},
        xgb.DMatrix(x, label=x.sum(axis=1), feature_names=list(sample_data.REVERT_FEATURES)),
        num_boost_round=3,
    )
    path = walkthrough.project / "models" / "revert-risk-v9.0.json"
    booster.save_model(str(path))
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "register", "models/revert-risk-v9.0.json"],
        cwd=walkthrough.project,
        env={**os.environ, "BEAST_HOME": str(walkthrough.project)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "reg:squarederror" in done.stderr
