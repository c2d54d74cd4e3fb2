"""Training on a Dask cluster (`[retrain] dask_scheduler`): a real LocalCluster of two worker
processes reads the rows in partitions by the local rules, and a job trained there registers
and deploys as an A/B candidate through the engine's own retraining path."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from engine import Engine, Workspace
from engine.core.errors import BeastError
from engine.demo import sample_data
from engine.retrain import dask_training
from engine.retrain import data as retrain_data
from engine.retrain import search as retrain
from engine.server import train_worker
from tests.helpers import FEATURES
from tests.retrain_helpers import LINE, queue_job, set_retrain

distributed = pytest.importorskip("distributed", reason="pip install 'beast-mode[dask]'")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A scheduler and two worker processes (one thread each) on this host: its address."""
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as local:
        yield str(local.scheduler_address)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_scheduler_is_one_line_within_the_connect_timeout() -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"  # nobody listens there
    with pytest.raises(BeastError, match="cannot reach the Dask scheduler at") as caught:
        dask_training.connect(address, timeout_s=0.5)
    assert "\n" not in str(caught.value) and address in str(caught.value)


def test_a_scheduler_without_workers_is_refused_not_waited_on_forever() -> None:
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as empty:
        address = str(empty.scheduler_address)
        refused = pytest.raises(BeastError, match=r"has no workers \(waited 0.5 s\)")
        with dask_training.connect(address) as client, refused:
            dask_training.workers(client, address, timeout_s=0.5)


def test_a_job_whose_scheduler_cannot_be_reached_fails_in_one_line(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    set_retrain(registered, dask_scheduler=f'"{address}"')
    monkeypatch.setattr(dask_training, "CONNECT_TIMEOUT_S", 0.5)
    engine = Engine(registered, actor="tester")
    try:
        with engine.store.write() as tx:
            job_id = queue_job(tx)
        assert train_worker._work(engine, job_id) == 1  # the worker's own steps, in-process
        job = engine.job(job_id)
    finally:
        engine.close()
    assert job.status == "failed" and job.error is not None
    assert job.error.startswith(f"cannot reach the Dask scheduler at {address} ")
    assert "\n" not in job.error and "after 0.5 s" in job.error


def test_what_the_cluster_raises_fails_the_job_in_one_line() -> None:
    address = "tcp://scheduler:8786"
    with pytest.raises(BeastError) as caught, dask_training.reported(address):
        raise ValueError("\nXGBoostError: Check failed: max_bin\nStack trace:\n  [bt] (0) …")
    assert str(caught.value) == (
        f"training on the Dask cluster at {address} failed: ValueError: XGBoostError: "
        "Check failed: max_bin"
    )
    with (
        pytest.raises(BeastError, match=r"^not enough training data$"),
        dask_training.reported(address),
    ):
        raise BeastError("not enough training data")  # the engine's own: as it is


def _columns() -> retrain_data.Columns:
    names = tuple(sample_data.FEATURES)
    return retrain_data.Columns(names, "score", "observed_at", "regression", (0.0, 100.0))


def _messy_data(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two good files (one with unusable rows), one of another schema, one non-numeric; and
    labelled predictions, one with an actual outside the label range."""
    sample_data.write_csv(data_dir / "a.csv", sample_data.generate(300, seed=5))
    sample_data.write_csv(data_dir / "b.csv", sample_data.generate(200, seed=6))
    text = (data_dir / "b.csv").read_text().splitlines()
    header = text[0].split(",")
    bad = text[1].split(",")
    bad[header.index("score")] = "n/a"
    late = text[2].split(",")
    late[header.index("observed_at")] = "yesterday"
    inf = text[3].split(",")
    inf[0] = "inf"
    (data_dir / "b.csv").write_text(
        "\n".join([text[0], *map(",".join, (bad, late, inf)), *text[4:]])
    )
    (data_dir / "other.csv").write_text("x,y\n1,2\n")
    words = [*text[:2], text[2].replace(text[2].split(",")[0], "word", 1)]
    (data_dir / "words.csv").write_text("\n".join(words))
    rows = sample_data.generate(40, seed=7)
    actual = rows.scores.astype(np.float64)
    actual[0] = 1000.0  # outside label_range [0, 100]: dropped
    at_ms = np.arange(40, dtype=np.int64) * 1000 + 1_900_000_000_000
    return rows.features.astype(np.float32), actual, at_ms


def test_the_cluster_reads_the_rows_and_splits_them_as_the_local_trainer(
    cluster: str, tmp_path: Path
) -> None:
    columns = _columns()
    predictions = _messy_data(tmp_path)
    local = retrain_data.load(tmp_path, columns, predictions)
    with dask_training.connect(cluster) as client:
        remote = dask_training.load(client, tmp_path, columns, predictions)
        assert remote.frame.npartitions > 1, "read in partitions"
        notes = [s.note() for s in remote.sources]
        assert notes[3].startswith("data/words.csv: skipped: non-numeric feature values: ")
        assert "word" in notes[3]
        assert [n for i, n in enumerate(notes) if i != 3] == [
            s.note() for i, s in enumerate(local.sources) if i != 3
        ], "the same rows used and dropped, for the same reasons (the parser's words aside)"
        assert remote.rows == local.rows
        split = retrain.time_split(remote.rows)
        for part in (split.train, split.valid, split.holdout):
            rows = remote.between(part.start, part.stop).compute()
            assert np.array_equal(rows[dask_training.AT].to_numpy(), local.at_ms[part])
            assert np.allclose(rows[dask_training.Y].to_numpy(), local.y[part])
        again = dask_training.load(client, tmp_path, columns, predictions)
        assert again.sha256() == remote.sha256(), "the same rows hash the same"


def _write_rows(path: Path, rows: int, *, seed: int) -> None:
    """Rows of the `registered` line's features, a score in 0–100 and a time, as CSV."""
    rng = np.random.default_rng(seed)
    x = rng.random((rows, len(FEATURES)))
    score = 100 * (0.5 * x[:, 0] + 0.3 * (1 - x[:, 1]) + 0.2 * x[:, 2] * x[:, 3])
    start = 1_800_000_000 + seed * 100_000
    lines = [",".join([*FEATURES, "score", "observed_at"])]
    for i in range(rows):
        at = datetime.fromtimestamp(start + 60 * i, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(",".join([*(f"{v:.5f}" for v in x[i]), f"{score[i]:.3f}", at]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _no_mlflow(ws: Workspace) -> None:
    """MLflow (when installed) costs a job seconds of imports: its own tests cover it."""
    text = ws.config_path.read_text(encoding="utf-8")
    ws.config_path.write_text(text.replace("\nenabled = true\n", "\nenabled = false\n", 1))


def test_a_job_trained_on_the_cluster_registers_and_deploys_as_a_candidate(
    cluster: str, registered: Workspace
) -> None:
    ws = registered  # v1.0–v4.0: random models of the line's 5 features; a fit beats them
    _write_rows(ws.data_dir / "samples.csv", 300, seed=3)
    _write_rows(ws.data_dir / "more.csv", 900, seed=8)  # two files: partitions to read
    set_retrain(ws, dask_scheduler=f'"{cluster}"', auto_deploy=True, candidate_traffic=25)
    _no_mlflow(ws)
    engine = Engine(ws, actor="tester")
    try:
        engine.deploy(version="v1.0", model=LINE)  # the weak model serves: the new one beats it
        job = engine.wait_job(engine.start_retrain(force=True).id, 90)
        log = engine.job_log(job.id)
        assert job.status == "succeeded", log
        assert job.deployed and job.version == "v5.0", log
        assert job.reason is not None and "beats production" in job.reason
        assert any("on 2 Dask workers" in line for line in log), log
        candidate = [d for d in engine.status().deployments if d.role == "candidate"]
        assert [(d.version, d.traffic_bp, d.experiment) for d in candidate] == [
            ("v5.0", 2500, "retrain-v5.0")
        ]
    finally:
        engine.close()
    lineage = json.loads((ws.models_dir / f"{LINE}-v5.0.json.lineage").read_text())
    assert lineage["trainer"] == {"kind": "dask", "scheduler": cluster, "workers": 2}
    assert lineage["data"]["rows"] == 1200 and "nthread" not in lineage["parameters"]
    assert [s["name"] for s in lineage["data"]["sources"]] == ["data/more.csv", "data/samples.csv"]
