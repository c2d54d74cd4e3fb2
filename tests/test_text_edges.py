"""Text at the edges (issue 12 §1 and §4): refused where a user chooses it, escaped wherever
text from a file name or the store is printed — the CLI, the engine's log.

Every unsafe value here was accepted (and printed raw) before `engine.core.text` was wired in: a
note with a newline forged a second `beast history` row, `ESC[2J` cleared the terminal, a lone
surrogate key cost its prediction (the log writer could not encode it), a version name with a
trailing newline passed the name rule.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sqlite3
import time
from pathlib import Path

import pytest

from engine import Engine, Workspace
from engine.core import identity, text
from engine.core.errors import BeastError, NotFound
from engine.core.naming import check_name
from engine.core.records import Expect
from engine.monitoring import feedback as labels
from engine.server import daemon
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.tx import SqliteTx
from tests.helpers import beast, beast_here, history_of, model_path, train_model
from tests.serving_helpers import logged_count, serving

ROW = [0.8, 0.3, 0.1, 0.05, 0.4]
BAD_NOTES = ["two\nlines", "\x1b[2J", "x\u202ey", "lone \ud800"]
# What a terminal must never receive raw from us.
RAW = ("\x1b", "\u202e", "\r", "\x9b")


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert "Traceback" not in stderr and "internal error" not in stderr
    return lines[0]


def assert_printable(output: str) -> None:
    for char in RAW:
        assert char not in output, f"raw {char!r} printed: {output!r}"


@pytest.fixture
def ab(registered: Workspace) -> Workspace:
    """Production v2.0, v3.0 the candidate of A/B test `t1` at 10%; v4.0 registered."""
    engine = Engine(registered, actor="setup")
    try:
        engine.deploy(version="v1.0")
        engine.deploy(version="v2.0")
        engine.deploy(version="v3.0", traffic=10, ab_test="t1")
    finally:
        engine.close()
    return registered


# -- refused where it is chosen: the facade (every door: CLI, console, HTTP) -----------------


@pytest.mark.parametrize("bad", BAD_NOTES)
def test_facade_refuses_an_unsafe_note_on_every_mutation_and_writes_nothing(
    ab: Workspace, bad: str
) -> None:
    before = history_of(ab)
    engine = Engine(ab, actor="tester")
    try:
        calls = [
            lambda: engine.deploy(version="v4.0", note=bad),
            lambda: engine.deploy(model_path(ab, "v4.0"), note=bad),
            lambda: engine.rollback(note=bad),
            lambda: engine.promote("t1", force=True, note=bad),
            lambda: engine.abort("t1", note=bad),
            lambda: engine.abort("t1", note="fine", actor=bad),
        ]
        for call in calls:
            with pytest.raises(text.TextRefused) as caught:
                call()
            message = str(caught.value)
            assert message.startswith(("note: ", "actor: ")), message
            assert text.escape(message) == message
    finally:
        engine.close()
    assert history_of(ab) == before


def test_a_long_note_is_refused_and_the_limit_is_kept(ab: Workspace) -> None:
    engine = Engine(ab, actor="tester")
    try:
        with pytest.raises(text.TextRefused, match="note: is longer than"):
            engine.abort("t1", note="x" * (text.MAX_NOTE_CHARS + 1))
        change = engine.abort("t1", note="é" * text.MAX_NOTE_CHARS)
    finally:
        engine.close()
    assert change.entry is not None and change.entry.note == "é" * text.MAX_NOTE_CHARS


@pytest.mark.parametrize("bad", ["\ud800", "a\nb", "\x1b[2J", "v\u202e1"])
def test_facade_refuses_unsafe_names_before_any_lookup(ab: Workspace, bad: str) -> None:
    """A lone surrogate reached SQLite (UnicodeEncodeError, an internal error) or came back
    raw in a NotFound message; now each is a one-line TextRefused (422) or a name refusal."""
    engine = Engine(ab, actor="tester")
    try:
        calls = [
            lambda: engine.deploy(version=bad),
            lambda: engine.deploy(version="v4.0", model=bad),
            lambda: engine.deploy(version="v4.0", expect=Expect(production=bad)),
            lambda: engine.deploy(version="v4.0", traffic=5, ab_test=bad),
            lambda: engine.rollback(bad),
            lambda: engine.rollback(model=bad),
            lambda: engine.promote(bad),
            lambda: engine.abort(bad),
            lambda: engine.experiment(bad),
            lambda: engine.history(bad),
            lambda: engine.lineage(bad),
            lambda: engine.rollback_target(model=bad),
            lambda: engine.jobs(model=bad),
            lambda: engine.register(model_path(ab, "v4.0"), version=bad),
            lambda: engine.feedback(bad, 50),
        ]
        for call in calls:
            with pytest.raises(BeastError) as caught:
                call()
            message = str(caught.value)
            assert text.escape(message) == message, message
            message.encode("utf-8")
    finally:
        engine.close()


@pytest.mark.parametrize("bad", ["a\nb", "\x1b[2J", "\ud800", "\u202eevil", "x" * 201])
def test_an_unsafe_actor_is_refused_when_given_or_set(registered: Workspace, bad: str) -> None:
    with pytest.raises(text.TextRefused, match=r"^actor: "):
        Engine(registered, actor=bad)
    engine = Engine(registered, actor="fine")
    try:
        with pytest.raises(text.TextRefused, match=r"^actor: "):
            engine.actor = bad  # the HTTP API names the caller this way
        assert engine.actor == "fine"
    finally:
        engine.close()


def test_the_os_user_and_ssh_client_are_escaped_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "bob\x1b[2J\n")
    monkeypatch.setenv("SSH_CLIENT", "203.0.113.5\u202e 22 22")
    actor = identity.current_actor()
    assert actor == "bob\\x1b[2J\\n via 203.0.113.5\\u202e"
    assert text.problem(actor, limit=text.MAX_NAME_CHARS) is None
    monkeypatch.setenv("USER", "u" * 500)
    monkeypatch.setenv("LOGNAME", "u" * 500)
    assert len(identity.current_actor()) <= text.MAX_NAME_CHARS


@pytest.mark.parametrize("bad", ["v5\n", "v5\n\n", "\nv5", "v 5", "v\u202e5", "\ud800"])
def test_check_name_refuses_a_trailing_newline_and_other_unsafe_names(bad: str) -> None:
    """`$` matched before a final newline: `--version $'v5\\n'` was registered as `v5\\n`."""
    with pytest.raises(BeastError) as caught:
        check_name("version", bad)
    message = str(caught.value)
    assert text.escape(message) == message
    assert check_name("version", "v5.0-rc+1_b") == "v5.0-rc+1_b"


# -- the router: keys and model names ---------------------------------------------------------


@pytest.mark.parametrize("bad", ["\ud800", "repo\n42", "\x1b[2J", "a\u2066b"])
def test_router_refuses_an_unsafe_key_and_logs_nothing(ab: Workspace, bad: str) -> None:
    before = logged_count(ab)
    with serving(ab) as (router, _log):
        with pytest.raises(text.TextRefused, match=r"^key: "):
            router.predict(ROW, key=bad)
        with pytest.raises(text.TextRefused, match=r"^key: "):
            router.predict_batch([ROW, ROW], keys=["fine", bad])
        ok = router.predict(ROW, key="repo-42 ✓")
        assert ok.score is not None
    assert logged_count(ab) == before + 1


def test_router_refuses_an_unsafe_model_name_cleanly(ab: Workspace) -> None:
    with serving(ab) as (router, _log):
        with pytest.raises(text.TextRefused, match=r"^model: "):
            router.predict(ROW, model="\ud800")
        with pytest.raises(NotFound) as caught:
            router.predict(ROW, model="other-line")
        assert "other-line" in str(caught.value)


def test_router_refuses_an_over_long_key(ab: Workspace) -> None:
    with serving(ab) as (router, _log):
        with pytest.raises(BeastError, match="longer than 1024"):
            router.predict(ROW, key="k" * 1025)
        assert router.predict(ROW, key="k" * 1024).score is not None


# -- feedback ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\ud800", "\x1b[2J", "7" * 31 + "\n", "\u202e" * 3])
def test_feedback_with_an_unsafe_id_is_a_clean_answer(ab: Workspace, bad: str) -> None:
    store = SqliteStore(ab.db_path)
    try:
        with pytest.raises(BeastError) as caught:
            labels.record(store, bad, 50.0, labels.Contracts())
        assert text.escape(str(caught.value)) == str(caught.value)
        answers = labels.record_many(store, [(bad, 50.0), ("0" * 32, 50.0)], labels.Contracts())
    finally:
        store.close()
    assert [a.status for a in answers] == ["invalid", "not found"]
    shown, message = answers[0].prediction_id, answers[0].message or ""
    assert shown == text.escape(bad)
    assert answers[0].http_status == 422 and message.startswith("prediction id: ")
    json.dumps([a._asdict() for a in answers], ensure_ascii=False).encode("utf-8")


# -- the CLI: refusals are one line, output is escaped ----------------------------------------


@pytest.mark.parametrize("bad", ["two\nlines", "\x1b[2J"])
def test_cli_mutations_refuse_an_unsafe_note_in_one_line(
    ab: Workspace, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = history_of(ab)
    for args in (
        ["deploy", "--version", "v4.0"],
        ["rollback"],
        ["promote", "t1", "--force"],
        ["abort", "t1"],
    ):
        out = beast_here(capsys, ab, *args, "--note", bad)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        line = one_line(out.stderr)
        assert line.startswith("beast: note: a control character"), line
        assert_printable(out.stderr + out.stdout)
    assert history_of(ab) == before


def test_cli_predict_refuses_a_lone_surrogate_key(ab: Workspace) -> None:
    # An argument that is not valid UTF-8 reaches Python as a lone surrogate (surrogateescape).
    before = logged_count(ab)
    out = beast(ab, "predict", json.dumps(ROW), "--key", "k\udcff")
    assert out.returncode == 1, out.stdout
    assert "key: a lone UTF-16 surrogate (U+DCFF) at position 1" in one_line(out.stderr)
    assert logged_count(ab) == before


def test_cli_feedback_ids_are_refused_and_echoed_escaped(
    ab: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = beast_here(capsys, ab, "feedback", "\x1b[2J", "50")
    assert out.returncode == 1
    assert_printable(out.stdout + out.stderr)
    assert "\\x1b[2J" in out.stderr and "U+001B" in out.stderr
    feedback = tmp_path / "labels.csv"
    feedback.write_text("prediction_id,actual\nok\u202e,1\n\x1b[31mred,2\n", encoding="utf-8")
    out = beast_here(capsys, ab, "feedback", "--file", str(feedback), "--json")
    assert out.returncode == 1
    assert_printable(out.stdout + out.stderr)
    answers = json.loads(out.stdout)
    assert [a["status"] for a in answers] == ["invalid", "invalid"]
    assert [a["prediction_id"] for a in answers] == ["ok\\u202e", "\\x1b[31mred"]


def rewrite_history_row(ws: Workspace, *, note: str, actor: str, entry: int = 1) -> None:
    """Make a history row (and who deployed production) look written before the edge check
    existed: history is append-only and line_state moves only forward, so their guarding
    triggers are dropped for the rewrite and put back as they were."""
    guards = ("history_append_only_update", "line_state_arms_update")
    conn = sqlite3.connect(ws.db_path)
    try:
        marks = ", ".join("?" for _ in guards)
        saved = conn.execute(
            f"SELECT name, sql FROM sqlite_master WHERE name IN ({marks})", guards
        ).fetchall()
        assert len(saved) == len(guards)
        with conn:
            for name, _sql in saved:
                conn.execute(f"DROP TRIGGER {name}")
            conn.execute(
                "UPDATE history SET note = ?, actor = ? WHERE id = ?", (note, actor, entry)
            )
            conn.execute("UPDATE line_state SET production_by = ?", (actor,))
            for _name, sql in saved:
                conn.execute(sql)
    finally:
        conn.close()
    # The export never rewrites a row it already holds (history.json only grows), so the
    # rewritten history is exported afresh, as it would have been when it was written.
    ws.history_export_path.unlink()
    engine = Engine(ws)
    try:
        engine.export_history()
    finally:
        engine.close()


def test_history_and_status_print_old_rows_escaped(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = Engine(registered, actor="setup")
    try:
        engine.deploy(version="v1.0", note="placeholder")
    finally:
        engine.close()
    note, actor = "fine\n2  forged  root  deploy\x1b[2J", "eve\u202etoor"
    rewrite_history_row(registered, note=note, actor=actor)

    out = beast_here(capsys, registered, "history")
    assert out.returncode == 0, out.stderr
    assert_printable(out.stdout)
    assert len(out.stdout.strip().splitlines()) == 2  # the header and the one row
    assert "fine\\n2  forged  root  deploy\\x1b[2J" in out.stdout
    assert "eve\\u202etoor" in out.stdout

    out = beast_here(capsys, registered, "history", "--json")
    assert_printable(out.stdout)
    (row,) = json.loads(out.stdout)
    assert (row["note"], row["actor"]) == (note, actor)  # JSON escapes: nothing is lost

    out = beast_here(capsys, registered, "status")
    assert out.returncode == 0, out.stderr
    assert_printable(out.stdout)
    assert "eve\\u202etoor" in out.stdout


EVIL_NAMES = ("evil\nline-v9.0.json", "evil\u202egnp-v9.1.json", "evil\x1b[2J-v9.2.json")


@pytest.fixture
def evil_files(registered: Workspace) -> list[Path]:
    return [
        train_model(registered.models_dir / name, seed=40 + i) for i, name in enumerate(EVIL_NAMES)
    ]


def test_models_prints_evil_file_names_escaped_and_register_refuses_them(
    registered: Workspace, evil_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = beast_here(capsys, registered, "models")
    assert out.returncode == 0, out.stderr
    assert_printable(out.stdout)
    assert "evil\\nline-v9.0.json" in out.stdout
    assert "evil\\u202egnp-v9.1.json" in out.stdout
    assert "evil\\x1b[2J-v9.2.json" in out.stdout
    assert not any(line.startswith("line-v9.0") for line in out.stdout.splitlines())

    out = beast_here(capsys, registered, "models", "--json")
    assert_printable(out.stdout)
    listed = {u["path"]: u["problem"] for u in json.loads(out.stdout)["unregistered"]}
    assert set(EVIL_NAMES) <= set(listed)
    assert all("file name" in (listed[name] or "") for name in EVIL_NAMES)

    for path in evil_files:
        out = beast_here(
            capsys, registered, "register", str(path), "--model", "evil", "--version", "v9"
        )
        assert out.returncode == 1
        assert "file name: " in one_line(out.stderr)
        assert_printable(out.stdout + out.stderr)
    engine = Engine(registered)
    try:
        assert "evil" not in engine.lines()
    finally:
        engine.close()


def test_register_refuses_a_version_with_a_trailing_newline(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    train_model(model_path(registered, "v5.0"), seed=55)
    out = beast_here(
        capsys, registered, "register", str(model_path(registered, "v5.0")), "--version", "v5\n"
    )
    assert out.returncode == 1
    assert "invalid version name 'v5\\n'" in one_line(out.stderr)


def test_refusals_quoting_a_path_are_escaped(
    registered: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    out = beast_here(capsys, registered, "register", "missing\x1b[2J\n.json")
    assert out.returncode == 1
    assert "missing\\x1b[2J\\n.json" in out.stderr
    assert_printable(out.stderr)


def test_cli_json_output_escapes_bidi_and_c1_but_stays_the_same_json() -> None:
    doc = {"a": "x\u202ey\x9b\u2028", "b": ["\ud800", "ünï ✓"], "c": "line\nbreak"}
    shown = text.dumps(doc)
    assert_printable(shown)
    assert "ünï ✓" in shown
    assert json.loads(shown) == doc


# -- the engine's log -----------------------------------------------------------------------


def _formatter() -> logging.Formatter:
    """The formatter `beast engine` installs, built from its own logging config."""
    config = daemon.log_config("info")
    configurator = logging.config.DictConfigurator(config)
    formatter: logging.Formatter = configurator.configure_formatter(config["formatters"]["plain"])
    return formatter


def test_the_log_formatter_escapes_messages_and_keeps_tracebacks_readable() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter())
    logger = logging.getLogger("beast.test-escaping")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("rejected %s: %s", "evil\nline-v9.0.json", "bad\x1b[2J")
        try:
            raise ValueError("boom \x1b[2J in evil\u202efile")
        except ValueError:
            logger.exception("failed on %s", "x\ny")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert_printable(stream.getvalue())
    assert lines[0].endswith("rejected evil\\nline-v9.0.json: bad\\x1b[2J")
    assert lines[1].endswith("failed on x\\ny")
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom \\x1b[2J in evil\\u202efile"


@pytest.fixture
def engine_log(ab: Workspace, evil_files: list[Path], tmp_path: Path) -> str:
    """A real `beast engine` (watcher on) started with the evil files in models/; its log."""
    from tests.test_engine_process import running_engine

    with running_engine(ab, tmp_path, "--rescan-every", "1") as (_proc, _port, log):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.read_bytes().count(b"not registered") >= len(EVIL_NAMES):
                break
            time.sleep(0.2)
    return log.read_text(encoding="utf-8", errors="strict")


@pytest.mark.slow
def test_the_engine_log_shows_evil_file_names_escaped(engine_log: str) -> None:
    assert_printable(engine_log)
    assert "not registered evil\\nline-v9.0.json: file name: " in engine_log
    assert "not registered evil\\u202egnp-v9.1.json" in engine_log
    assert "not registered evil\\x1b[2J-v9.2.json" in engine_log
    assert not any(line.startswith("line-v9.0") for line in engine_log.splitlines())


def test_the_cli_catches_a_surrogate_it_cannot_print(registered: Workspace) -> None:
    """An error quoting an undecodable file name (a surrogate) is printed, not an encode crash."""
    name = "bad\udcff-v1.0.json"
    (registered.models_dir / name).write_bytes(b"{}")
    out = beast(registered, "models")
    assert out.returncode == 0, out.stderr
    assert "bad\\udcff-v1.0.json" in out.stdout


def test_auto_pull_still_pulls_when_its_note_quotes_an_unsafe_feature_name(
    engine: Engine,
) -> None:
    """The auto-pull's note quotes the drifted features, named by the model's training data:
    the note check must not stop a critical candidate from being pulled (it is escaped)."""
    import numpy as np

    from engine.monitoring import baselines
    from tests.test_monitoring import LINE, feed

    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=10, ab_test="t")
    rng = np.random.default_rng(8)
    names = ("coverage", "complexity", "lint_density", "dup\nlication\x1b[2J", "churn")
    reference = baselines.VersionReference.build(
        rng.normal(size=(5000, 5)), rng.normal(50, 5, 5000), names
    )
    with engine.store.write_sql() as conn:
        artifact_id = SqliteTx(conn).registry.get_version(LINE, "v2.0").artifact_id
        baselines.store(SqliteTx(conn), artifact_id, "training", reference=reference, metrics={})
    drifted = rng.normal(size=(1000, 5)).astype(np.float32)
    drifted[:, 3] += 1.5
    feed(engine, "v2.0", 1000, within=1.0, rows=drifted, experiment="t", arm="candidate")

    report = engine.monitoring.evaluate()
    assert report.actions and "aborted" in report.actions[0]
    assert engine.experiment("t").status == "aborted"
    note = engine.history()[-1].note or ""
    assert "dup\\nlication\\x1b[2J" in note and text.escape(note) == note
