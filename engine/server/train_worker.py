"""The retraining worker process: `python -m engine.server.train_worker JOB_ID WORKSPACE`.

Started by `engine.retrain.workers.launch` in its own session, at nice 10, with two OpenMP threads.
It claims its queued job, then a watchdog thread renews the lease on the monotonic clock and
enforces the job's timeout: when the deadline passes it marks the job failed, removes the
temp files and SIGKILLs the whole process group (this worker and anything it started, such
as the validation child). The main thread loads the line's data by its declared columns
(engine.retrain.data) and records its input hash: a job whose rows and settings equal those
of the line's last version ends there ("no new data since vN", nothing registered). Otherwise
it trains for the line's task (engine.retrain.search) — or, with `[retrain] dask_scheduler`
set, has that Dask cluster read the rows and train (engine.retrain.dask_training: the same
split, search and gate; only the judging's few numbers come back) — writes the artifact
atomically into `models/` with its `.lineage` sidecar, registers it through
`Engine.register`, logs the run to MLflow when `engine.retrain.mlflow_tracking` is there, and
deploys the model as an A/B candidate only when asked and only if it beats production.

A busy store (another process holding the write lock past the busy timeout, say a big
feedback file) never fails the job: progress and log lines that cannot get the lock wait in
memory and go, in order, with the next write that gets it; the claim, the version, the
registration, the deploy and the job's end are retried with backoff until the job's deadline;
the lease outlives any busy moment shorter than `lease_s` (see `Watchdog`).

Test-only fault hooks (read here and nowhere else): `BEAST_TEST_TRAINER_FAULT` = `hang`
(start a `sleep` child, then never finish: exercises the timeout's group kill), `crash`
(raise after loading data), `abort` (die by SIGABRT: found when the lease expires) or `nan`
(the new model's holdout predictions become NaN).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from engine.core.clock import utc_now
from engine.core.errors import BeastError, StateBusy
from engine.core.records import JobLease
from engine.core.workspace import Workspace
from engine.facade import Engine
from engine.monitoring import baselines
from engine.registry import artifacts
from engine.retrain import data as retrain_data
from engine.retrain import jobs, workers
from engine.retrain import search as retrain
from engine.store.base import Store, Tx
from engine.store.opening import open_store

FAULT_ENV = "BEAST_TEST_TRAINER_FAULT"
ACTOR = "beast-retrain"
# A progress or log write waits this long for the write lock, then is deferred to the next
# write: training goes on meanwhile instead of waiting out the busy timeout.
NOTE_BUSY_S = 0.25
RETRY_PAUSE_S = 0.05  # the first pause between attempts of a write the job needs; doubles
RETRY_MAX_PAUSE_S = 1.0

T = TypeVar("T")


def retry_busy(action: Callable[[], T], deadline: float) -> T:
    """Run `action` again, with backoff, while it meets a busy store, until `deadline`
    (monotonic); past it the last StateBusy is raised. Each attempt itself waits up to the
    store's busy timeout for the lock; a busy attempt changed nothing, so trying again is
    always safe."""
    pause = RETRY_PAUSE_S
    while True:
        try:
            return action()
        except StateBusy:
            if jobs.monotonic() + pause >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, RETRY_MAX_PAUSE_S)


class Watchdog(threading.Thread):
    """Renews the job's lease and kills the process group when the job's time is up.

    Its connection waits one tick at most for the lock, so the deadline is checked between
    attempts; a renewal that met a busy store is tried again soon. Each renewal carries the
    lease one tick beyond `lease_s`: renewed every tick, the lease always has at least
    `lease_s` left, so a busy store for less than `lease_s` cannot let it lapse (a reaper that
    gets the lock first still finds it alive).
    """

    def __init__(self, ws: Workspace, job_id: int, lease_s: float, deadline: float) -> None:
        super().__init__(name=f"beast-job-{job_id}-watchdog", daemon=True)
        self.ws, self.job_id, self.lease_s, self.deadline = ws, job_id, lease_s, deadline
        self.tick = min(1.0, lease_s / 3)
        self.halt = threading.Event()
        # Set by the main thread before it ends the job itself: from then on a job that is
        # no longer running is its own doing, not a reaper's.
        self.finishing = threading.Event()

    def run(self) -> None:
        store = open_store(self.ws.db_path, busy_timeout_s=self.tick)  # its own: never shared
        wait = self.tick
        while not self.halt.wait(wait):
            wait = self.tick
            try:
                if jobs.monotonic() >= self.deadline:
                    self._time_out(store)
                with store.write() as tx:
                    still_mine = jobs.renew(tx.jobs, self.job_id, self.lease_s + self.tick)
            except StateBusy:
                wait = RETRY_PAUSE_S  # the attempt waited a tick already: try again soon
                continue
            except BeastError:  # briefly unwritable: the lease has slack for retries
                continue
            if still_mine or self.halt.is_set():
                continue
            if self.finishing.is_set():
                return
            workers.kill_group(os.getpgid(0), self.job_id, self.ws.root)
            _kill_own_group()  # failed by a reaper: stop spending the CPU

    def _time_out(self, store: Store) -> None:
        """Fail the job, remove its files and kill its group, this process included. A busy
        store does not hold the kill back: a reaper records the timeout once the lock is free
        (`workers.reap` names it so)."""
        with store.read() as tx:
            found = tx.jobs.lease(self.job_id)
        try:
            with store.write() as tx:
                ended = jobs.finish(
                    tx.jobs, self.job_id, status="failed", error=jobs.timed_out(found.timeout_s)
                )
        except StateBusy:
            ended = True
        if ended:
            workers.clean_files(self.ws.models_dir, self.job_id, found.line, found.version)
            workers.kill_group(os.getpgid(0), self.job_id, self.ws.root)
            _kill_own_group()  # not reached: the group kill took this process too


def _kill_own_group() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


class RunningJob:
    """The running job as the training steps see it: progress and log lines to the store.

    Progress and log lines are cosmetic: one that cannot get the write lock within
    `NOTE_BUSY_S` is kept, in order, and written with the next write that gets it (the job's
    end at the latest), with the time it happened. The writes the outcome depends on (`commit`,
    `retrying`) are retried on a busy store with backoff until the job's deadline.
    """

    def __init__(
        self, engine: Engine, job_id: int, line: str, *, deadline: float = math.inf
    ) -> None:
        self.engine, self.id, self.line, self.deadline = engine, job_id, line, deadline
        self._notes: Store | None = None
        self._lines: list[tuple[str, str]] = []  # (UTC time, line) not in the store yet
        self._progress: tuple[float, str] | None = None
        self._busy: tuple[str, str] | None = None  # the note of a write being retried

    def step(self, progress: float, message: str) -> None:
        self._progress = (progress, message)
        self.log(message)

    def log(self, text: str) -> None:
        self._lines.append((utc_now(), text))
        if self._notes is None:
            busy_s = min(NOTE_BUSY_S, self.engine.store.busy_s)
            self._notes = open_store(self.engine.workspace.db_path, busy_timeout_s=busy_s)
        with contextlib.suppress(StateBusy):  # kept for the next write that gets the lock
            self._write(self._notes, _nothing)

    def commit(self, what: str, change: Callable[[Tx], T]) -> T:
        """A write the job needs (`what` names it in the log if it had to wait), after the
        lines kept so far, in the same transaction; retried until the deadline."""
        return self.retrying(what, lambda: self._write(self.engine.store, change))

    def retrying(self, what: str, action: Callable[[], T]) -> T:
        """`action` (one transaction, or a call that makes one) retried on a busy store until
        the job's deadline. A retry leaves a note of the wait, written with the transaction
        that succeeds when it is a `commit`, else with the next write."""
        at, first, tries = utc_now(), jobs.monotonic(), 0

        def attempt() -> T:
            nonlocal tries
            if tries:
                waited = jobs.monotonic() - first
                self._busy = (at, f"the store was busy: {what} waited {waited:.1f} s")
            tries += 1
            return action()

        result = retry_busy(attempt, self.deadline)
        if self._busy is not None:
            self._lines.append(self._busy)
            self._busy = None
        return result

    def _write(self, store: Store, change: Callable[[Tx], T]) -> T:
        lines = [*self._lines, *([self._busy] if self._busy is not None else [])]
        with store.write() as tx:
            if self._progress is not None:
                jobs.set_progress(tx.jobs, self.id, *self._progress, log=False)
            for at, text in lines:
                jobs.append_log(tx.jobs, self.id, text, at=at)
            result = change(tx)
        self._lines.clear()
        self._progress = self._busy = None
        return result

    def wants_deploy(self) -> bool:
        """Read at deploy time: a trigger that joined later may have asked for it."""
        with self.engine.store.read() as tx:
            asked = tx.jobs.lease(self.id).deploy
        return asked or self.engine.config.retrain.auto_deploy

    def close(self) -> None:
        if self._notes is not None:
            self._notes.close()
            self._notes = None


def _nothing(tx: Tx) -> None:
    """The change of a write that only carries the kept progress and log lines."""


def _fault() -> str:
    return os.environ.get(FAULT_ENV, "")


def _hang(job: RunningJob) -> None:
    child = subprocess.Popen(["sleep", "3600"])  # in this process group: must die with it
    job.log(f"test fault: hanging (child pid {child.pid})")
    while True:
        time.sleep(1)


def line_columns(engine: Engine, line: str) -> retrain_data.Columns:
    """The line's features (by name, from its models) and declared label and time columns."""
    with engine.store.read() as tx:
        return retrain_data.Columns.read(tx, line, engine.config.line(line))


def _load(job: RunningJob, columns: retrain_data.Columns) -> retrain_data.Dataset:
    job.step(
        0.05,
        f"loading data/ and labelled predictions (label {columns.label}, time {columns.time})",
    )
    labelled = _labelled(job, columns)
    data = retrain_data.load(job.engine.workspace.data_dir, columns, labelled)
    _loaded(job, data)
    return data


def _production(engine: Engine, line: str) -> tuple[str, Path] | None:
    with engine.store.read() as tx:
        state = tx.deployments.state(line)
        if state is None:
            return None
        path = engine.workspace.models_dir / tx.registry.artifact_file(state.production.artifact_id)
    return state.production.name, path


def _booster(model_path: Path) -> Any:
    import xgboost as xgb  # ~2 s to import (measured): only a job that gets this far pays it

    return xgb.Booster(params={"nthread": retrain.THREADS}, model_file=str(model_path))


def _judge(
    job: RunningJob, fit: Fitted
) -> tuple[retrain.Scores, retrain.Scores | None, str | None]:
    line = job.engine.config.line(job.line)
    y = fit.holdout_actual()

    def score(predicted: np.ndarray) -> retrain.Scores:
        return retrain.score(
            line.task,
            predicted,
            y,
            tolerance=line.tolerance_points,
            threshold=line.decision_threshold,
        )

    predicted = fit.predict_holdout(fit.trained.booster)
    if _fault() == "nan":
        predicted = np.full_like(predicted, np.nan)
    new = score(predicted)
    found = _production(job.engine, job.line)
    if found is None:
        return new, None, None
    name, path = found
    try:
        production = score(fit.predict_holdout(_booster(path)))
    except Exception as exc:  # the artifact is gone or unreadable: no comparison, no deploy
        job.log(f"production {name} could not be scored ({type(exc).__name__}: {exc})")
        return new, None, name
    return new, production, name


class Rows(Protocol):
    """The rows a job trained and judged on, as its lineage tells them."""

    @property
    def rows(self) -> int: ...

    @property
    def sources(self) -> tuple[retrain_data.Source, ...]: ...

    @property
    def used(self) -> tuple[retrain_data.Source, ...]: ...

    @property
    def skipped(self) -> tuple[retrain_data.Source, ...]: ...

    def sha256(self) -> str: ...


class Fitted(Protocol):
    """What the search produced, whoever trained it (this process, or a Dask cluster:
    engine.retrain.dask_training.ClusterFit): the judging and writing ask it for rows."""

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def data(self) -> Rows: ...

    @property
    def trained(self) -> retrain.Trained: ...

    def holdout_actual(self) -> np.ndarray:
        """The holdout's actual values, in time order."""
        ...

    def predict_holdout(self, booster: Any) -> np.ndarray:
        """`booster`'s predictions on the holdout."""
        ...

    def reference_rows(self) -> np.ndarray:
        """The training rows the drift reference is built from."""
        ...


@dataclass(frozen=True)
class Fit:
    """What the search produced in this process, with the data and split it came from."""

    names: tuple[str, ...]
    data: retrain_data.Dataset
    split: retrain.Split
    trained: retrain.Trained

    def holdout_actual(self) -> np.ndarray:
        return self.data.y[self.split.holdout]

    def predict_holdout(self, booster: Any) -> np.ndarray:
        out: np.ndarray = booster.inplace_predict(
            self.data.x[self.split.holdout], validate_features=False
        )
        return out

    def reference_rows(self) -> np.ndarray:
        return self.data.x[self.split.train]


def _lineage(
    job: RunningJob, version: str, parent: str | None, fit: Fitted, scores: dict[str, Any]
) -> dict[str, Any]:
    data, trained = fit.data, fit.trained
    return {
        "trained_at": utc_now(),
        "job": job.id,
        "line": job.line,
        "version": version,
        "parent_version": parent,
        "data": {
            "rows": data.rows,
            "sha256": data.sha256(),
            "sources": [s.to_json() for s in data.used],
            "skipped": [s.note() for s in data.skipped],
        },
        "parameters": {**trained.params, "rounds": trained.rounds},
        "search": [vars(t) for t in trained.trials],
        "metrics": scores,
    }


def _write_artifact(
    job: RunningJob, version: str, fit: Fitted, lineage: dict[str, Any], holdout: retrain.Scores
) -> Path:
    """Sidecar first, then the model under a temp name that keeps `.json`, then renames:
    whoever sees the final model file (the watcher) finds its sidecar already there."""
    models_dir = job.engine.workspace.models_dir
    final = models_dir / f"{job.line}-{version}.json"
    temp = workers.temp_model_path(models_dir, job.id)
    trained = fit.trained
    train_x = fit.reference_rows()
    reference = baselines.VersionReference.build(
        train_x, np.asarray(trained.booster.inplace_predict(train_x)), fit.names
    )
    side = baselines.write_sidecar(
        temp,
        reference,
        metrics=holdout.metrics,
        extra=lineage,
    )
    trained.booster.save_model(str(temp))
    side.replace(baselines.sidecar_path(final))
    temp.replace(final)
    return final


def _log_mlflow(job: RunningJob, run_name: str, lineage: dict[str, Any], model: Path) -> None:
    """Optional: a missing module or any MLflow failure only adds a log line."""
    try:
        tracking: Any = importlib.import_module("engine.retrain.mlflow_tracking")
    except ImportError:
        job.log("MLflow: engine.retrain.mlflow_tracking is not available; run not logged")
        return
    metrics = {
        f"{who}_{k}": v
        for who, figures in lineage["metrics"].items()
        if isinstance(figures, dict)
        for k, v in figures.items()
        if isinstance(v, int | float)
    }
    try:
        result = tracking.log_training(
            job.engine.workspace,
            job.engine.config,
            run_name=run_name,
            params=lineage["parameters"],
            metrics=metrics,
            model_path=model,
            lineage_path=baselines.sidecar_path(model),
            tags=_trainer_tags(lineage["trainer"]),
        )
    except Exception as exc:
        job.log(f"MLflow logging failed: {type(exc).__name__}: {exc}")
        return
    job.log(f"MLflow: {result}" if result else "MLflow: off or not installed; run not logged")


def _trainer_tags(trainer: dict[str, Any]) -> dict[str, str]:
    """The run's tags naming who trained it: `beast.trainer` local or dask (and the
    scheduler's address)."""
    tags = {"beast.trainer": str(trainer["kind"])}
    if "scheduler" in trainer:
        tags["beast.dask_scheduler"] = str(trainer["scheduler"])
    return tags


def _deploy(job: RunningJob, version: str, decision: retrain.Decision) -> tuple[bool, str]:
    if not decision.deploy:
        return False, decision.reason
    settings = job.engine.config.retrain
    test = f"retrain-{version}"
    try:
        change = job.retrying(
            f"deploying {version}",
            lambda: job.engine.deploy(
                version=version,
                model=job.line,
                traffic=settings.candidate_traffic,
                ab_test=test,
                note=f"retrain job {job.id}: {decision.reason}",
            ),
        )
    except BeastError as exc:
        return False, f"not deployed: {exc} ({decision.reason.removeprefix('deployed: ')})"
    job.log(change.message)
    return True, f"{decision.reason}; A/B test {test} at {settings.candidate_traffic:g}%"


def _faults() -> None:
    """The test hooks that strike once the data is loaded (whoever trains)."""
    if _fault() == "crash":
        raise RuntimeError("test fault: trainer crashed")
    if _fault() == "abort":
        os.abort()


def _split(rows: int) -> retrain.Split:
    try:
        return retrain.time_split(rows)
    except ValueError as exc:  # too little data: the job's error says so, plainly
        raise BeastError(str(exc)) from None


def _on_trial(job: RunningJob, task: str) -> Callable[[int, retrain.Trial], None]:
    count, metric = len(retrain.SEARCH), retrain.params_for(task)["eval_metric"]
    job.step(0.15, f"searching {count} configurations")

    def on_trial(i: int, trial: retrain.Trial) -> None:
        job.step(
            0.15 + 0.6 * (i + 1) / count,
            f"configuration {i + 1}/{count} {trial.params}: "
            f"{trial.rounds} rounds, validation {metric} {trial.valid_score:.3f}",
        )

    return on_trial


def _train(job: RunningJob, columns: retrain_data.Columns, data: retrain_data.Dataset) -> Fit:
    """Split and the bounded search (the faults of the test hooks strike here)."""
    _faults()
    if _fault() == "hang":
        _hang(job)
    split = _split(data.rows)
    on_trial = _on_trial(job, columns.task)
    trained = retrain.search(data, split, columns.features, on_trial, task=columns.task)
    return Fit(columns.features, data, split, trained)


def _next_version(job: RunningJob) -> str:
    with job.engine.store.read() as tx:
        known = tx.retrain_inputs.version_names(job.line)
    models_dir = job.engine.workspace.models_dir
    version = retrain.next_version(known, lambda v: (models_dir / f"{job.line}-{v}.json").exists())
    job.commit("recording the version", lambda tx: tx.jobs.set_version(job.id, version))
    return version


def register_model(job: RunningJob, model: Path, version: str) -> None:
    """Register the job's model, retried on a busy store: registration is by sha256, so an
    attempt after a busy one finds nothing or these very bytes registered, never makes a
    second row. The bytes are validated in a child once, however many attempts it takes."""
    verdicts: dict[str | None, artifacts.Validation] = {}

    def validate_once(
        path: Path,
        fmt: str,
        timeout_s: float,
        *,
        expected_sha256: str | None = None,
        compile_into: Path | None = None,
    ) -> artifacts.Validation:
        if expected_sha256 is None or expected_sha256 not in verdicts:
            verdicts[expected_sha256] = artifacts.validate_in_child(
                path, fmt, timeout_s, expected_sha256=expected_sha256, compile_into=compile_into
            )
        return verdicts[expected_sha256]

    job.retrying(
        f"registering {version}",
        lambda: job.engine.register(
            model, version=version, model=job.line, validator=validate_once
        ),
    )


def _same_input(job: RunningJob, input_hash: str) -> str | None:
    """Record the job's input hash; the version trained on the same input, or None."""
    job.log(f"input hash {input_hash[:16]} (rows and training settings)")
    return job.commit(
        "recording the input hash",
        lambda tx: jobs.record_input(tx.jobs, job.id, job.line, input_hash),
    )


def _labelled(
    job: RunningJob, columns: retrain_data.Columns
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with job.engine.store.read() as tx:
        return tx.predictions.labelled_rows(job.line, len(columns.features))


def _loaded(job: RunningJob, data: Rows) -> None:
    for source in data.sources:
        job.log(source.note())
    job.log(f"{data.rows} rows ({retrain_data.summary(data.sources)})")


def run(job: RunningJob) -> tuple[str | None, bool, str]:
    """Train, judge, write, register and maybe deploy; (version, deployed, reason). A job
    whose rows and settings equal those the line's last version was trained on registers
    nothing: (None, False, "no new data since vN"). With `[retrain] dask_scheduler` set, the
    rows are read and the model trained on that Dask cluster (engine.retrain.dask_training)."""
    columns = line_columns(job.engine, job.line)
    scheduler = job.engine.config.retrain.dask_scheduler
    if scheduler:
        return _run_on_cluster(job, columns, scheduler)
    data = _load(job, columns)
    same = _same_input(job, data.input_hash(columns, retrain.settings(columns.task)))
    if same is not None:
        return None, False, jobs.no_new_data(same)
    return _publish(job, _train(job, columns, data), {"kind": "local"})


def _run_on_cluster(
    job: RunningJob, columns: retrain_data.Columns, scheduler: str
) -> tuple[str | None, bool, str]:
    """`run`'s steps with the rows and the boosting on the Dask cluster at `scheduler`."""
    from engine.retrain import dask_training  # dask and distributed: only with a scheduler

    job.step(0.02, f"connecting to the Dask scheduler at {scheduler}")
    with dask_training.connect(scheduler) as client, dask_training.reported(scheduler):
        count = dask_training.workers(client, scheduler)
        job.step(
            0.05,
            f"reading data/ and labelled predictions in partitions on {count} Dask workers "
            f"(label {columns.label}, time {columns.time})",
        )
        labelled = _labelled(job, columns)
        data = dask_training.load(client, job.engine.workspace.data_dir, columns, labelled)
        _loaded(job, data)
        settings = {**retrain.settings(columns.task), "trainer": "dask"}
        same = _same_input(job, data.input_hash(columns, settings))
        if same is not None:
            return None, False, jobs.no_new_data(same)
        _faults()
        split = _split(data.rows)
        on_trial = _on_trial(job, columns.task)
        trained = dask_training.train(
            client, data, split, columns.features, on_trial=on_trial, task=columns.task
        )
        fit = dask_training.ClusterFit(client, columns.features, data, split, trained)
        trainer = {"kind": "dask", "scheduler": scheduler, "workers": count}
        return _publish(job, fit, trainer)


def _publish(job: RunningJob, fit: Fitted, trainer: dict[str, Any]) -> tuple[str | None, bool, str]:
    """Judge the fit against production, write and register it, deploy it if it passes."""
    job.step(0.8, "scoring the new model and production on the same holdout")
    new, production, parent = _judge(job, fit)
    scores = {
        "holdout": new.to_json(),
        "production_holdout": production.to_json() if production is not None else None,
        f"validation_{fit.trained.valid_metric}": fit.trained.valid_score,
    }
    decision = retrain.decide(
        new,
        production,
        min_improvement=job.engine.config.retrain.min_accuracy_improvement,
        wanted=job.wants_deploy(),
    )
    version = _next_version(job)
    job.step(0.85, f"writing {job.line}-{version}.json and its lineage")
    lineage = {**_lineage(job, version, parent, fit, scores), "trainer": trainer}
    path = _write_artifact(job, version, fit, lineage, new)
    job.step(0.9, f"registering {version} (validated in a child process)")
    register_model(job, path, version)
    _log_mlflow(job, f"{job.line}-{version}", lineage, path)
    job.step(0.95, decision.reason)
    deployed, reason = _deploy(job, version, decision)
    return version, deployed, reason


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        print("usage: python -m engine.server.train_worker JOB_ID WORKSPACE", file=sys.stderr)
        return 2
    job_id, ws = int(argv[0]), Workspace(Path(argv[1]))
    with contextlib.suppress(OSError):
        os.nice(10)  # serving keeps its p99: the scheduler favours it over this process
    engine = Engine(ws, actor=ACTOR)
    try:
        return _work(engine, job_id)
    finally:
        engine.close()


def _claim(engine: Engine, job_id: int) -> tuple[JobLease | None, float]:
    """Claim the queued job, retrying on a busy store for as long as a claim is waited for
    (a reaper fails the job "never started" after that; the claim then finds it gone).
    Returns the claimed job (None: nothing to do) and how long a busy store held it back."""
    started, tries = jobs.monotonic(), 0

    def claim() -> JobLease | None:
        nonlocal tries
        tries += 1
        with engine.store.write() as tx:
            return jobs.claim(
                tx.jobs,
                job_id,
                pid=os.getpid(),
                pgid=os.getpgid(0),
                lease_s=engine.config.retrain.lease_s,
            )

    window = max(engine.config.retrain.lease_s, jobs.CLAIM_WINDOW_S)
    claimed = retry_busy(claim, started + window)
    return claimed, jobs.monotonic() - started if tries > 1 else 0.0


def _work(engine: Engine, job_id: int) -> int:
    claimed, waited = _claim(engine, job_id)
    if claimed is None:
        return 0  # already claimed, or failed before this process got to it
    assert claimed.deadline is not None  # a claim sets it
    deadline = claimed.deadline
    watchdog = Watchdog(engine.workspace, job_id, engine.config.retrain.lease_s, deadline)
    watchdog.start()
    job = RunningJob(engine, job_id, claimed.line, deadline=deadline)
    try:
        if waited:
            job.log(f"the store was busy: claiming the job waited {waited:.1f} s")
        try:
            version, deployed, reason = run(job)
        except Exception as exc:
            watchdog.finishing.set()
            _fail(job, exc)
            return 1
        used = os.times()
        cpu = used.user + used.system + used.children_user + used.children_system
        job.log(f"worker CPU time {cpu:.2f} s (validation child included)")
        watchdog.finishing.set()
        job.commit(
            "recording the outcome",
            lambda tx: jobs.finish(
                tx.jobs,
                job_id,
                status="succeeded",
                version=version,
                deployed=deployed,
                reason=reason,
                message=None if version is not None else reason,
            ),
        )
        return 0
    finally:
        watchdog.halt.set()
        job.close()


def _fail(job: RunningJob, exc: Exception) -> None:
    """Record the failure (the traceback's tail in the log) and remove half-written files."""
    error = str(exc) if isinstance(exc, BeastError) else f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(BeastError):
        job.log("".join(traceback.format_exception(exc)[-3:]).strip())

    def record(tx: Tx) -> tuple[bool, str | None]:
        ended = jobs.finish(tx.jobs, job.id, status="failed", error=error)
        return ended, tx.jobs.lease(job.id).version

    ended, version = job.commit("recording the failure", record)
    if ended:
        workers.clean_files(job.engine.workspace.models_dir, job.id, job.line, version)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
