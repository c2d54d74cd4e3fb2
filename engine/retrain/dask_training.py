"""Training on a Dask cluster: `[retrain] dask_scheduler = "tcp://host:8786"`.

The job's worker process (engine.server.train_worker) stays the one that claims the job,
judges, writes the model file and registers it; only the reading of the rows and the boosting
move to the cluster, through `xgboost.dask`:

- the data files are read by the cluster's workers in partitions (`dask.dataframe.read_csv`
  by blocks of `BLOCK_BYTES`, `read_parquet` by row group), by their absolute path: every
  worker must see the workspace's `data/` at the same path (a shared filesystem) and run the
  same beast-mode (`pip install 'beast-mode[dask]'`). The line's labelled predictions come
  out of the store on this host and go to the cluster in partitions of `PREDICTION_ROWS`;
- each partition is checked by the rules of engine.retrain.data (the same reasons, counted
  per source; a file with a non-numeric feature value is skipped whole, as locally);
- the usable rows are sorted by time on the cluster (rows of the same time in the order they
  were read, as locally), and the same `search.time_split` cuts them by position: the same
  rows make the holdout, and the same gate judges it;
- the same bounded search (engine.retrain.search: grid, early stopping, the newest
  `SEARCH_ROWS` to compare configurations on large data) runs as `xgboost.dask.train`, and
  the winner is an ordinary Booster saved by the worker like a local one;
- only the holdout's actual values and both models' predictions on it (two numbers a row)
  and at most `REFERENCE_ROWS` training rows (the drift reference's sample) come back.

`dask` and `distributed` are imported here only, and this module only when a scheduler is
configured. A scheduler that does not answer within `CONNECT_TIMEOUT_S` fails the job with one
line saying so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.core import tasks
from engine.core.errors import BeastError
from engine.retrain import data as retrain_data
from engine.retrain import search

CONNECT_TIMEOUT_S = 10.0
BLOCK_BYTES = 64 * 1024 * 1024  # a CSV partition: a task long enough that its overhead is noise
PREDICTION_ROWS = 100_000  # a partition of labelled predictions sent from this host
REFERENCE_ROWS = 100_000  # the training rows the drift reference is built from, at most

# The columns added to a partition's features (prefixed: a feature may be called `y`).
Y, AT, DROP, SOURCE, SEQ, KEY = (
    "__beast_y",
    "__beast_at_ms",
    "__beast_drop",
    "__beast_source",
    "__beast_seq",
    "__beast_key",
)
# Why a row is dropped, in the order local loading checks (a row counts under the first).
KEEP, BAD_LABEL, BAD_TIME, INFINITE, NON_NUMERIC = 0, 1, 2, 3, 4


def connect(address: str, timeout_s: float | None = None) -> Any:
    """A distributed.Client on the scheduler at `address`, dask's default scheduler in this
    process until it is closed (every `.compute()` here runs on the cluster); BeastError (one
    line) when it cannot be reached within `timeout_s` (default `CONNECT_TIMEOUT_S`)."""
    from distributed import Client  # the dask extra: only a job with a scheduler pays it

    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        return Client(address, timeout=timeout_s)
    except Exception as exc:  # refused, timed out, a malformed address: all one answer
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BeastError(
            f"cannot reach the Dask scheduler at {address} ([retrain] dask_scheduler): {reason}"
        ) from None


@contextmanager
def reported(address: str) -> Iterator[None]:
    """What the cluster raises, as one line (a worker's error carries its whole traceback);
    the engine's own errors pass as they are."""
    try:
        yield
    except BeastError:
        raise
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), "").strip()
        raise BeastError(
            f"training on the Dask cluster at {address} failed: {type(exc).__name__}: {first}"
        ) from exc


def workers(client: Any, address: str, timeout_s: float | None = None) -> int:
    """How many workers the cluster has, waiting up to `timeout_s` (`CONNECT_TIMEOUT_S`) for a
    first one: a scheduler without workers would hold a job until its timeout. BeastError
    when none."""
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except TimeoutError:
        raise BeastError(
            f"the Dask scheduler at {address} has no workers (waited {timeout_s:g} s)"
        ) from None
    return len(client.scheduler_info(n_workers=-1)["workers"])


# -- reading, on the workers ---------------------------------------------------------------


def _numbers(values: Any) -> np.ndarray:
    """A column as float64 (NaN where missing); ValueError on a value that is no number."""
    import pandas as pd

    out: np.ndarray = pd.to_numeric(values, errors="raise").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    return out


def _label_values(values: Any) -> Any:
    """Numbers when the whole column reads as numbers (as pandas' CSV reader would type it),
    else the values as they are (a binary line's false/true)."""
    import pandas as pd

    try:
        return pd.Series(_numbers(values))
    except (ValueError, TypeError):
        return pd.Series(values.tolist(), dtype=object)


def _out(
    x: np.ndarray,
    y: np.ndarray,
    at_ms: np.ndarray,
    drop: np.ndarray,
    *,
    source: int,
    part: int,
    names: tuple[str, ...],
) -> Any:
    """A checked partition: the features by name, then the label, time, drop code, source
    and SEQ, the row's place among all rows read (source, then partition, then row: the
    order local loading keeps among rows of the same time)."""
    import pandas as pd

    frame = pd.DataFrame(x, columns=list(names))
    frame[Y] = y
    frame[AT] = at_ms
    frame[DROP] = drop
    frame[SOURCE] = np.int16(source)
    frame[SEQ] = (source << 48) | (part << 28) | np.arange(len(frame), dtype=np.int64)
    return frame


def _meta(names: tuple[str, ...]) -> Any:
    return _out(
        np.zeros((0, len(names)), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, np.int8),
        source=0,
        part=0,
        names=names,
    )


def clean_file_part(
    frame: Any, columns: retrain_data.Columns, source: int, partition_info: Any = None
) -> Any:
    """One partition of a data file, checked as engine.retrain.data.read_file checks a file:
    features (float32), label, time (ms) and why each row would be dropped (DROP)."""
    import pandas as pd

    rows, width = len(frame), len(columns.features)
    drop = np.zeros(rows, np.int8)
    try:
        x = np.column_stack([_numbers(frame[c]) for c in columns.features]).astype(np.float32)
    except (ValueError, TypeError):
        x = np.full((rows, width), np.nan, np.float32)
        drop[:] = NON_NUMERIC
    if rows == 0:
        x = np.zeros((0, width), np.float32)
    y, _reason = retrain_data.labels(_label_values(frame[columns.label]), columns)
    times = pd.to_datetime(frame[columns.time], utc=True, errors="coerce", format="ISO8601")
    valid_time = times.notna().to_numpy()
    at_ms = np.zeros(rows, dtype=np.int64)
    at_ms[valid_time] = times[valid_time].dt.as_unit("ms").astype("int64").to_numpy()
    for bad, code in (
        (~np.isfinite(y), BAD_LABEL),
        (~valid_time, BAD_TIME),
        (np.isinf(x).any(axis=1), INFINITE),
    ):
        drop[(drop == KEEP) & bad] = code
    part = _part_number(partition_info)
    return _out(x, y, at_ms, drop, source=source, part=part, names=columns.features)


def clean_predictions_part(
    frame: Any, columns: retrain_data.Columns, source: int, partition_info: Any = None
) -> Any:
    """One partition of labelled predictions: an actual that is no label of the line drops
    its row (as engine.retrain.data.load drops it)."""
    y, _reason = retrain_data.labels(frame[Y].to_numpy(), columns)
    drop = np.where(np.isfinite(y), KEEP, BAD_LABEL).astype(np.int8)
    x = frame[list(columns.features)].to_numpy(dtype=np.float32)
    at_ms = frame[AT].to_numpy(dtype=np.int64)
    part = _part_number(partition_info)
    return _out(x, y, at_ms, drop, source=source, part=part, names=columns.features)


def _part_number(partition_info: Any) -> int:
    return int(partition_info["number"]) if partition_info else 0


def numeric_error(frame: Any, columns: retrain_data.Columns) -> Any:
    """A partition's first non-numeric feature value, as the error that names it ("" if
    none): the reason its file is skipped."""
    import pandas as pd

    try:
        for column in columns.features:
            _numbers(frame[column])
    except (ValueError, TypeError) as exc:
        return pd.DataFrame({"error": [str(exc)]})
    return pd.DataFrame({"error": [""]})


def keyed(frame: Any, names: tuple[str, ...]) -> Any:
    """A partition's rows with KEY: a 64-bit hash of the row's values (pandas' fixed key)."""
    import pandas as pd

    out = frame[[*names, Y, AT, SEQ]].copy()
    values = out[[*names, Y, AT]]
    out[KEY] = pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64)
    return out


def _key_sums(frame: Any) -> Any:
    """Two sums of a partition's row hashes (mod 2**64): the multiset of rows, in any order
    and any partitioning. The second hashes the first again, so a row's two terms differ."""
    import pandas as pd

    keys = frame[KEY].to_numpy(dtype=np.uint64)
    again = pd.util.hash_array(keys)
    with np.errstate(over="ignore"):
        return pd.DataFrame(
            {"n": [len(keys)], "a": [np.sum(keys, dtype=np.uint64)], "b": [np.sum(again)]}
        )


def _rows_of(frame: Any, bounds: list[tuple[int, int]], partition_info: Any = None) -> Any:
    if partition_info is None:  # dask inferring the result's columns on a made-up frame
        return frame.iloc[0:0]
    start, stop = bounds[partition_info["number"]]
    return frame.iloc[start:stop]


# -- reading, driven from here -------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """A data file's place among the sources: its Source so far and its dask frame."""

    source: retrain_data.Source
    frame: Any | None
    raw: Any | None = None  # the file's partitions as read, before the checks


def _header(path: Path) -> tuple[str, ...]:
    """A data file's column names, read on this host (a CSV's first line, a Parquet file's
    footer)."""
    import dask.dataframe as dd
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        try:
            return tuple(str(c) for c in dd.read_parquet(str(path)).columns)
        except ImportError as exc:
            raise ValueError(f"reading Parquet needs pyarrow ({exc})") from None
    return tuple(str(c) for c in pd.read_csv(path, nrows=0).columns)


def _file(path: Path, index: int, columns: retrain_data.Columns) -> _Part:
    """A data file as a lazy dask frame of checked partitions, or its Source skipped."""
    import dask.dataframe as dd
    import pandas as pd

    name = f"data/{path.name}"
    try:
        found = _header(path)
    except (
        OSError,
        UnicodeDecodeError,
        ValueError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as exc:
        return _Part(retrain_data.Source(name, 0, skipped=f"cannot read: {exc}"), None)
    source = retrain_data.Source(name, 0, retrain_data.file_sha256(path), found)
    missing = [c for c in columns.required if c not in found]
    if missing:
        reason = f"missing columns {', '.join(missing)} (it has {', '.join(found) or 'none'})"
        return _Part(retrain_data.skip(source, reason), None)
    wanted = list(columns.required)
    if path.suffix.lower() == ".parquet":
        frame = dd.read_parquet(str(path), columns=wanted)
    else:
        frame = dd.read_csv(str(path), usecols=wanted, dtype=object, blocksize=BLOCK_BYTES)
    meta = _meta(columns.features)
    checked = frame.map_partitions(clean_file_part, columns, index, meta=meta)
    return _Part(source, checked, frame)


def _predictions(
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray],
    index: int,
    columns: retrain_data.Columns,
) -> Any:
    import dask.dataframe as dd
    import pandas as pd

    x, actual, at_ms = predictions
    frame = pd.DataFrame(np.asarray(x, np.float32), columns=list(columns.features))
    frame[Y] = np.asarray(actual, np.float64)
    frame[AT] = np.asarray(at_ms, np.int64)
    parts = max(1, math.ceil(len(frame) / PREDICTION_ROWS))
    lazy = dd.from_pandas(frame, npartitions=parts, sort=False)
    meta = _meta(columns.features)
    return lazy.map_partitions(clean_predictions_part, columns, index, meta=meta)


def _reasons(columns: retrain_data.Columns, predictions: bool) -> dict[int, str]:
    _y, label_reason = retrain_data.labels(np.zeros(0), columns)
    if predictions:
        return {BAD_LABEL: f"actual: {label_reason}"}
    return {
        BAD_LABEL: f"{columns.label}: {label_reason}",
        BAD_TIME: f"{columns.time}: not an ISO-8601 time",
        INFINITE: "an infinite feature",
    }


def _counted(
    counts: dict[int, int], reasons: dict[int, str]
) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(usable rows, (reason, rows dropped)…) of one source from its rows by drop code."""
    dropped = tuple((reasons[c], counts[c]) for c in sorted(reasons) if counts.get(c))
    return counts.get(KEEP, 0), dropped


@dataclass(frozen=True)
class ClusterData:
    """The usable rows on the cluster, in time order (persisted there): partitions and their
    lengths, where they came from, and the multiset hash of their values."""

    frame: Any
    lengths: tuple[int, ...]
    sources: tuple[retrain_data.Source, ...]
    digest: str

    @property
    def rows(self) -> int:
        return sum(self.lengths)

    @property
    def used(self) -> tuple[retrain_data.Source, ...]:
        return tuple(s for s in self.sources if s.skipped is None)

    @property
    def skipped(self) -> tuple[retrain_data.Source, ...]:
        return tuple(s for s in self.sources if s.skipped is not None)

    def sha256(self) -> str:
        """The hash of the rows trained and judged on (their values, whatever the order or
        partitioning: not the local trainer's hash of the same rows)."""
        return self.digest

    def input_hash(self, columns: retrain_data.Columns, settings: dict[str, Any]) -> str:
        """As engine.retrain.data.Dataset.input_hash: equal hashes would train the same."""
        digest = hashlib.sha256(self.digest.encode())
        extra = {"features": columns.features, "task": columns.task, "settings": settings}
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def between(self, start: int, stop: int) -> Any:
        """Rows `start` to `stop` (positions in time order) as a dask frame."""
        bounds, first, last, offset = [], None, None, 0
        for i, length in enumerate(self.lengths):
            lo, hi = max(start - offset, 0), min(stop - offset, length)
            if lo < hi:
                first = i if first is None else first
                last = i
                bounds.append((lo, hi))
            offset += length
        if first is None or last is None:  # time_split never asks for no rows
            raise ValueError(f"no rows between {start} and {stop} (of {self.rows})")
        chosen = self.frame.partitions[first : last + 1]
        return chosen.map_partitions(_rows_of, bounds)


def load(
    client: Any,
    data_dir: Path,
    columns: retrain_data.Columns,
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> ClusterData:
    """Data files plus labelled predictions, checked, sorted by time and persisted on the
    cluster; each source with the rows it gave and the rows it left out, by reason."""
    import dask.dataframe as dd

    parts = [_file(path, i, columns) for i, path in enumerate(retrain_data.data_files(data_dir))]
    lazy = [p.frame for p in parts if p.frame is not None]
    with_predictions = predictions[1].shape[0] > 0
    if with_predictions:
        lazy.append(_predictions(predictions, len(parts), columns))
    if not lazy:
        return ClusterData(None, (), tuple(p.source for p in parts), _empty_digest())
    checked = client.persist(dd.concat(lazy) if len(lazy) > 1 else lazy[0])
    tally = checked.groupby([SOURCE, DROP]).size().compute()
    counts: dict[int, dict[int, int]] = {}
    for (source, code), n in tally.items():
        counts.setdefault(int(source), {})[int(code)] = int(n)
    sources, unusable = _sources(parts, counts, columns)
    if with_predictions:
        used, dropped = _counted(counts.get(len(parts), {}), _reasons(columns, predictions=True))
        sources.append(retrain_data.Source(retrain_data.PREDICTIONS, used, dropped=dropped))
    if not sum(s.rows for s in sources):  # nothing to sort (and dask's sort needs rows)
        return ClusterData(None, (), tuple(sources), _empty_digest())
    kept = checked[(checked[DROP] == KEEP) & ~checked[SOURCE].isin(unusable)]
    names = columns.features
    rows = kept.map_partitions(keyed, names, meta=keyed(_meta(names), names))
    ordered = client.persist(rows.sort_values([AT, SEQ]))
    del checked  # the checked partitions are released once the ordered ones exist
    sums = ordered.map_partitions(_key_sums).compute()
    lengths = tuple(int(n) for n in sums["n"])
    return ClusterData(ordered, lengths, tuple(sources), _digest(sums))


def _sources(
    parts: list[_Part], counts: dict[int, dict[int, int]], columns: retrain_data.Columns
) -> tuple[list[retrain_data.Source], list[int]]:
    """Each data file's Source from its rows counted by drop code; and the files skipped
    whole (a non-numeric feature value, or no usable row), as local loading skips them."""
    sources, unusable = [], []
    for i, part in enumerate(parts):
        found = counts.get(i, {})
        if part.frame is None:
            sources.append(part.source)
        elif found.get(NON_NUMERIC):
            unusable.append(i)
            reason = f"non-numeric feature values: {_numeric_error(part.raw, columns)}"
            sources.append(retrain_data.skip(part.source, reason))
        else:
            used, dropped = _counted(found, _reasons(columns, predictions=False))
            source = retrain_data.Source(
                part.source.name, used, part.source.sha256, part.source.columns, dropped
            )
            if used == 0:
                unusable.append(i)
                left = "; ".join(f"{why} in {n}" for why, n in dropped)
                source = retrain_data.skip(
                    source, f"no usable rows ({left or 'the file is empty'})"
                )
            sources.append(source)
    return sources, unusable


def _numeric_error(raw: Any, columns: retrain_data.Columns) -> str:
    import pandas as pd

    meta = pd.DataFrame({"error": pd.Series(dtype=object)})
    found = raw.map_partitions(numeric_error, columns, meta=meta).compute()
    return next((str(e) for e in found["error"] if e), "a value is not a number")


def _digest(sums: Any) -> str:
    with np.errstate(over="ignore"):
        a = np.sum(sums["a"].to_numpy(dtype=np.uint64), dtype=np.uint64)
        b = np.sum(sums["b"].to_numpy(dtype=np.uint64), dtype=np.uint64)
    rows = int(sums["n"].sum())
    return hashlib.sha256(f"rows {rows} sums {int(a)} {int(b)}".encode()).hexdigest()


def _empty_digest() -> str:
    return hashlib.sha256(b"rows 0 sums 0 0").hexdigest()


# -- training -------------------------------------------------------------------------------


def _matrix(client: Any, frame: Any, names: tuple[str, ...], ref: Any) -> Any:
    import xgboost.dask as xgb_dask

    return xgb_dask.DaskQuantileDMatrix(
        client,
        frame[list(names)],
        frame[Y],
        feature_names=list(names),
        max_bin=search.BASE_PARAMS["max_bin"],
        ref=ref,
    )


def cluster_params(task: str) -> dict[str, Any]:
    """The local trainer's parameters, without its thread count: each Dask worker trains
    with the threads it was started with."""
    return {k: v for k, v in search.params_for(task).items() if k != "nthread"}


def _fit(client: Any, params: dict[str, Any], train: Any, valid: Any) -> Any:
    import xgboost.dask as xgb_dask

    out = xgb_dask.train(
        client,
        params,
        train,
        num_boost_round=search.MAX_ROUNDS,
        evals=[(valid, "valid")],
        early_stopping_rounds=search.EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
    )
    return out["booster"]


def train(
    client: Any,
    data: ClusterData,
    split: search.Split,
    names: tuple[str, ...],
    *,
    on_trial: Callable[[int, search.Trial], None] | None = None,
    grid: Iterable[dict[str, Any]] = search.SEARCH,
    task: str = tasks.REGRESSION,
) -> search.Trained:
    """engine.retrain.search.search on the cluster: each configuration stopped early on the
    validation rows, compared on the newest `SEARCH_ROWS` training rows (and half as many
    validation rows) when there are more; the winner trained on all of them."""
    train_rows = split.train.stop - split.train.start
    full = sample = _matrix(client, data.between(split.train.start, split.train.stop), names, None)
    valid = judge = _matrix(client, data.between(split.valid.start, split.valid.stop), names, full)
    if train_rows > search.SEARCH_ROWS:
        newest = data.between(split.train.stop - search.SEARCH_ROWS, split.train.stop)
        sample = _matrix(client, newest, names, None)
        start = max(split.valid.start, split.valid.stop - search.SEARCH_ROWS // 2)
        judge = _matrix(client, data.between(start, split.valid.stop), names, sample)
    return search.best_of(
        lambda params, train, valid: _fit(client, params, train, valid),
        cluster_params(task),
        grid,
        (sample, judge),
        (full, valid),
        on_trial=on_trial,
    )


@dataclass(frozen=True)
class ClusterFit:
    """What the search produced on the cluster, with the rows and split it came from: the
    judging and the drift reference ask the cluster for the little they need."""

    client: Any
    names: tuple[str, ...]
    data: ClusterData
    split: search.Split
    trained: search.Trained

    def _holdout(self) -> Any:
        return self.data.between(self.split.holdout.start, self.split.holdout.stop)

    def holdout_actual(self) -> np.ndarray:
        """The holdout's actual values, in time order."""
        out: np.ndarray = self._holdout()[Y].compute().to_numpy(dtype=np.float32)
        return out

    def predict_holdout(self, booster: Any) -> np.ndarray:
        """`booster`'s predictions on the holdout, computed by the workers."""
        import xgboost.dask as xgb_dask

        frame = self._holdout()[list(self.names)]
        lazy = xgb_dask.inplace_predict(self.client, booster, frame, validate_features=False)
        out: np.ndarray = np.asarray(lazy.compute(), dtype=np.float64)
        return out

    def reference_rows(self) -> np.ndarray:
        """Training rows for the drift reference: all, or an even sample of
        `REFERENCE_ROWS` of them."""
        train = self.data.between(self.split.train.start, self.split.train.stop)
        rows = self.split.train.stop - self.split.train.start
        if rows > REFERENCE_ROWS:
            train = train.sample(frac=REFERENCE_ROWS / rows, random_state=0)
        out: np.ndarray = train[list(self.names)].compute().to_numpy(dtype=np.float32)
        return out
