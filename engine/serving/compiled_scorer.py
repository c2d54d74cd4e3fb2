"""An arm's scorer: single rows through the version's compiled trees once their verdict says
verified (engine.registry.compiled), everything else — batches, and every row until then —
through XGBoost.

A version serves through XGBoost from its first request: its compiled form is built in a
process of its own and picked up when its verdict appears (`poll`, from the router's
refresh), never waited for. Before it is used the library is checked twice more in this
process: its bytes are the ones verified (a swapped or half-written file is never loaded),
and it scores probe rows as XGBoost does here — so a tampered verdict serves XGBoost too.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.registry import compiled

Score = Callable[[np.ndarray], np.ndarray]
PROBE_ROWS = 256
_F32 = np.dtype(np.float32)
# beast_score_row(const char* row) -> float, called without releasing the GIL: a call of a
# few microseconds that released it would wait for the log writer's switch interval to get
# it back (see router.HELD_ROWS). c_char_p passes a bytes object's own buffer: `tobytes()`
# measured cheaper than `ndarray.ctypes.data` (1.4 µs against 5 µs on a loaded machine).
_ROW_PROTOTYPE = ctypes.PYFUNCTYPE(ctypes.c_float, ctypes.c_char_p)


class RowScorer:
    """Scores float32 rows: one row by the verified compiled trees (or GTIL), else XGBoost.

    `scorer` ("compiled" | "gtil" | "xgboost") and `reason` say which serves single rows now.
    """

    def __init__(
        self,
        xgboost: Score,
        booster: Any,
        *,
        width: int,
        path: Path,
        sha256: str,
        cache: Path,
        build: bool = True,
        enabled: bool = True,
    ) -> None:
        self._xgboost = xgboost
        self._booster = booster
        self._width = width
        self._path = path
        self._sha256 = sha256
        self._cache = cache
        self._one: Score | None = None
        self._one_shape = (1, width)
        self.scorer = "xgboost"
        self.reason = "compiling: XGBoost serves until the compiled trees are verified"
        self.settled = False
        if not enabled:  # [registry] compiled_trees = false
            self.settled, self.reason = True, "compiled trees are off ([registry] compiled_trees)"
            return
        if not self.poll() and build:
            compiled.request(path, sha256, cache)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        one = self._one
        if one is not None and x.shape == self._one_shape:
            return one(x)
        return self._xgboost(x)

    def poll(self) -> bool:
        """Take the compiled form into use if its verdict has appeared; True once settled
        (a verdict read, whatever it says)."""
        if self.settled:
            return True
        verdict = compiled.read_verdict(self._cache, self._sha256)
        if verdict is None:
            return False
        self.settled = True
        self.scorer, self.reason = "xgboost", verdict.reason
        if verdict.scorer == "xgboost":
            return True
        try:
            one = self._load(verdict)
        except Exception as exc:  # a library that cannot load: XGBoost, and why
            self.reason = f"{verdict.scorer} scorer not loaded: {str(exc)[:200]}"
            return True
        if one is None:
            return True
        probe = compiled.verification_rows(self._booster, self._sha256, PROBE_ROWS)
        got = np.concatenate(
            [one(np.ascontiguousarray(probe[i : i + 1])) for i in range(len(probe))]
        )
        if compiled.max_error(got, self._xgboost(probe)) is None:
            self.reason = f"the {verdict.scorer} scores differ from XGBoost's in this process"
            return True
        self.scorer, self._one = verdict.scorer, one
        return True

    def _load(self, verdict: compiled.Verdict) -> Score | None:
        if verdict.scorer == "gtil":
            return _gtil(self._path)
        library = compiled.library_matches(self._cache, verdict)
        if library is None:
            self.reason = "the compiled library is missing or changed since it was verified"
            return None
        return _compiled(library)


def _compiled(library: Path) -> Score:
    handle = ctypes.CDLL(str(library))
    address = ctypes.cast(handle.beast_score_row, ctypes.c_void_p).value
    if not address:
        raise RuntimeError("beast_score_row has no address")
    score_row = _ROW_PROTOTYPE(address)
    new = np.array
    f32 = _F32

    def one(x: np.ndarray) -> np.ndarray:
        if x.dtype is not f32:
            x = x.astype(f32)
        return new((score_row(x.tobytes()),), dtype=f32)

    one.handle = handle  # type: ignore[attr-defined]  # keeps the library loaded
    return one


def _gtil(path: Path) -> Score:
    import treelite  # only where no compiler built the trees

    model = compiled.treelite_model(path.read_bytes())
    predict = treelite.gtil.predict

    def one(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(predict(model, x, nthread=1), dtype=np.float32).ravel()
        return out

    return one
