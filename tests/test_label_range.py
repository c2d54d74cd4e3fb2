"""Feedback outside its model line's label range is refused (issue 12 §3; DESIGN.md §10).

The range is a setting of the line — `[lines.NAME] label_range = [lo, hi]` in config.toml, the
seed's score 0–100 by default — checked where feedback is recorded (engine.monitoring.feedback), so
the CLI refuses it as the HTTP API does: `beast feedback` exits 1 with one line, `--file` answers
each line. Before, any finite actual was stored (−1e6 and 1e30 for a 0–100 score).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Engine, Workspace
from engine.core import ids
from engine.core.config import DEFAULT_CONFIG_TOML, Config, LineSettings, parse_config
from engine.core.errors import ConfigError
from engine.monitoring import feedback as labels
from engine.store.sqlite.connection import SqliteStore
from tests.helpers import beast_here
from tests.serving_helpers import logged

LINE = "quality-predictor"


def test_the_default_is_the_seed_score_and_a_line_declares_its_own() -> None:
    assert parse_config(DEFAULT_CONFIG_TOML).line(LINE).label_range == (0.0, 100.0)
    config = parse_config(f"[lines.{LINE}]\nlabel_range = [-5, 1e3]\n[lines.other]\n")
    assert config.line(LINE) == LineSettings(label_range=(-5.0, 1000.0))
    assert config.line("other") == config.line("undeclared") == LineSettings()
    ranges = labels.Contracts.of_config(config)
    assert ranges.of(LINE).label_range == (-5.0, 1000.0)
    assert ranges.of("x").label_range == (0.0, 100.0)
    assert ranges.widest([LINE, "x"]) == (-5.0, 1000.0) and ranges.widest([]) == (0.0, 100.0)
    assert Config().lines == ()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (f"[lines.{LINE}]\nlabel_range = [100, 0]", ["label_range", "[100, 0]", "lo < hi"]),
        (f"[lines.{LINE}]\nlabel_range = [0]", ["label_range", "[0]"]),
        (f"[lines.{LINE}]\nlabel_range = [0, nan]", ["label_range", "nan"]),
        (f"[lines.{LINE}]\nlabel_range = [0, '100']", ["label_range", "'100'"]),
        (f"[lines.{LINE}]\nlabel_range = 100", ["label_range", "100"]),
        (
            f"[lines.{LINE}]\nlabels = 'score'",
            ["unknown key", f"lines.{LINE}.labels", "label_range"],
        ),
        (f"[lines.{LINE}]\ntask = 'multiclass'", [f"lines.{LINE}.task", "'multiclass'", "binary"]),
        (f"[lines.{LINE}]\nlabel = ''", [f"lines.{LINE}.label", "''", "column name"]),
        (f"[lines.{LINE}]\ntime = 'score'", ["label", "time", "'score'", "different columns"]),
        (
            f"[lines.{LINE}]\ntask = 'binary'\ntolerance_points = 3",
            [f"lines.{LINE}.tolerance_points", "3", "regression lines"],
        ),
        (
            f"[lines.{LINE}]\ndecision_threshold = 0.3",
            ["decision_threshold", "0.3", "binary lines"],
        ),
        (
            f"[lines.{LINE}]\ntask = 'binary'\ndecision_threshold = 1",
            ["decision_threshold", "1", "strictly between 0 and 1"],
        ),
        (
            f"[lines.{LINE}]\ntask = 'binary'\nlabel_range = [0, 100]",
            ["label_range", "[0, 100]", "[0, 1]"],
        ),
        ("[thresholds]\nauc = { min = 0.6, alert = 0.7 }", ["thresholds.auc.alert", "0.7"]),
        ("[lines]\nquality = 3", ["lines.quality", "table"]),
        ('[lines."a b"]\nlabel_range = [0, 1]', ["a b", "model line"]),
        ("[api]\nrequire_token = 'sometimes'", ["api.require_token", "sometimes", "always"]),
        ("[api]\nallowed_hosts = ['ok', 'not a host']", ["api.allowed_hosts", "not a host"]),
        ("[api]\nallowed_hosts = 'one'", ["api.allowed_hosts", "'one'"]),
        ("[api]\nallowed_host = []", ["unknown key api.allowed_host"]),
    ],
)
def test_bad_line_and_api_settings_are_refused_naming_key_and_value(
    text: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_line_declares_its_contract_and_undeclared_lines_are_the_seeds_regression() -> None:
    config = parse_config(
        "[thresholds]\ntolerance_points = 7\n"
        f"[lines.{LINE}]\nlabel = 'quality'\ntime = 'at'\n"
        "[lines.revert-risk]\ntask = 'binary'\nlabel = 'reverted'\ndecision_threshold = 0.4\n"
    )
    quality, risk, other = config.line(LINE), config.line("revert-risk"), config.line("other")
    assert (quality.task, quality.label, quality.time) == ("regression", "quality", "at")
    assert quality.tolerance_points == 7.0 and quality.label_range == (0.0, 100.0)
    assert (risk.task, risk.label, risk.time) == ("binary", "reverted", "observed_at")
    assert risk.binary and risk.decision_threshold == 0.4 and risk.label_range == (0.0, 1.0)
    assert (other.task, other.label, other.tolerance_points) == ("regression", "score", 7.0)
    assert Config().line("any").tolerance_points == 5.0


def test_api_settings_parse() -> None:
    config = parse_config(
        "[api]\nallowed_hosts = ['beast.internal', 'api.example.org:8443', '[::1]:9', '*']\n"
        "require_token = 'always'\n"
    )
    assert config.api.allowed_hosts == ("beast.internal", "api.example.org:8443", "[::1]:9", "*")
    assert config.api.require_token == "always"


def served_pid(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> str:
    out = beast_here(capsys, ws, "predict", "[0.5, 3, 1, 0.1, 0.2]", "--json")
    assert out.returncode == 0, out.stderr
    pid: str = json.loads(out.stdout)["prediction_id"]
    return pid


def test_beast_feedback_refuses_an_actual_outside_the_range(
    registered: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert beast_here(capsys, registered, "deploy", "--version", "v1.0").returncode == 0
    pid = served_pid(registered, capsys)
    for actual in ("101", "-0.5", "1e30", "-1000000"):
        out = beast_here(capsys, registered, "feedback", pid, actual)
        assert out.returncode == 1, out.stdout
        [line] = out.stderr.splitlines()
        assert "[0, 100]" in line and "Traceback" not in out.stderr
    assert [r["actual"] for r in logged(registered) if r["pid"] == pid] == [None]
    feedback = tmp_path / "actuals.csv"
    other = served_pid(registered, capsys)
    feedback.write_text(f"prediction_id,actual\n{pid},1e30\n{other},70\n{pid},100\n")
    done = beast_here(capsys, registered, "feedback", "--file", str(feedback), "--json")
    assert done.returncode == 1  # the out-of-range line is refused, the others answered
    answers = json.loads(done.stdout)
    assert [a["status"] for a in answers] == ["invalid", "recorded", "recorded"]
    assert "[0, 100]" in answers[0]["reason"]
    actual = {r["pid"]: r["actual"] for r in logged(registered)}
    assert (actual[pid], actual[other]) == (100, 70)


def test_a_declared_range_is_the_lines_own(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    with registered.config_path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n[lines.{LINE}]\nlabel_range = [-50, 500]\n")
    assert beast_here(capsys, registered, "deploy", "--version", "v1.0").returncode == 0
    pid = served_pid(registered, capsys)
    assert beast_here(capsys, registered, "feedback", pid, "450").returncode == 0
    refused = beast_here(capsys, registered, "feedback", served_pid(registered, capsys), "501")
    assert refused.returncode == 1 and "[-50, 500]" in refused.stderr and LINE in refused.stderr


def test_feedback_still_waiting_for_its_row_is_held_to_the_workspaces_lines(
    engine: Engine,
) -> None:
    """The line of a prediction still in a writer's buffer is not known yet: its feedback is
    held to the widest range of the lines the workspace has (a line only named in config.toml
    widens nothing)."""
    ranges = labels.Contracts(
        (
            (LINE, LineSettings(label_range=(0.0, 10.0))),
            ("not-registered", LineSettings(label_range=(5.0, 50.0))),
        )
    )
    store = SqliteStore(engine.workspace.db_path)
    try:
        assert labels.record(store, ids.new_id(), 10.0, ranges) == "pending"
        with pytest.raises(labels.OutOfRange, match=r"\[0, 10\]"):
            labels.record(store, ids.new_id(), 40.0, ranges)
        answers = labels.record_many(store, [(ids.new_id(), -1.0), (ids.new_id(), 1.0)], ranges)
        assert [a.status for a in answers] == ["invalid", "pending"]
        assert answers[0].http_status == 422
    finally:
        store.close()
