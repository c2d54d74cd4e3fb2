"""Compiled trees: a version's model turned into C (treelite + tl2cgen) and built with this
machine's C compiler into a shared library, kept by the artifact's sha256 in
`<workspace>/.compiled/` beside models/ (as fetched copies are kept in `.artifact-cache/`:
neither the watcher nor `beast models` sees it).

A single row scores in a few microseconds there against ~110 µs through XGBoost's C call
(200 trees of depth 6, 20 features), so the router serves single rows from it — but only
after it was verified: every score of rows generated around each split's threshold (both
sides of it, the threshold itself, below and above every split, missing values) within
`TOLERANCE` of XGBoost's own. Without a C compiler (or when the build fails) treelite's
GTIL is verified the same way instead; a model neither scores alike stays on XGBoost.

Compilation runs in a process of its own, detached, at low priority: the validator child
forks it once its verdict is given (registration never waits for it) and the router asks
for it (`request`) for a version it serves without a verdict (registered before this release,
or on another replica). The outcome is a verdict file, `<sha256>.verdict.json`, written after
the library, both atomically; `<sha256>.lock` is held while one is being built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_DIR = ".compiled"
# Scores may differ by the order their float32 tree outputs are added in (XGBoost adds the
# base score first, the generated code last): a few ulps, 2e-5 on a score of 100 measured.
# So the bound is absolute up to a magnitude of 1 (probabilities) and relative beyond.
TOLERANCE = 1e-4
VERIFY_ROWS = 2048
# Measured on 200 trees of depth 6: -O1 builds in 7 s where -O3 took 13 s, and its single
# row scored as fast (3.1 µs p50 against 3.5).
CFLAGS = ("-O1", "-fPIC", "-std=c99", "-shared")
BUILD_TIMEOUT_S = 900.0
# Single-row entry points beside tl2cgen's `predict`: a float32 row (NaN = missing, which
# the generated code reads as `missing == -1`) in, the post-processed score out.
_ENTRY_POINTS = r"""
#include "header.h"

#define BEAST_WIDTH %(width)d
#define BEAST_STACK 4096

static void beast_entries(const float* row, union Entry* data) {
  for (int i = 0; i < BEAST_WIDTH; ++i) {
    if (isnan(row[i])) {
      data[i].missing = -1;
    } else {
      data[i].fvalue = row[i];
    }
  }
}

float beast_score_row(const char* row) {
  union Entry stack[BEAST_WIDTH <= BEAST_STACK ? BEAST_WIDTH : 1];
  union Entry* data =
      BEAST_WIDTH <= BEAST_STACK ? stack : malloc(sizeof(union Entry) * BEAST_WIDTH);
  float result[N_TARGET * MAX_N_CLASS] = {0};
  if (data == NULL) {
    return NAN;
  }
  beast_entries((const float*)row, data);
  predict(data, 0, result);
  if (data != stack) {
    free(data);
  }
  return result[0];
}

void beast_score_rows(const float* rows, long n, float* out) {
  for (long r = 0; r < n; ++r) {
    out[r] = beast_score_row((const char*)(rows + r * BEAST_WIDTH));
  }
}
"""


@dataclass(frozen=True)
class Verdict:
    """What a version's single rows may be scored with, and why.

    `scorer`: "compiled" (the library, verified), "gtil" (treelite's GTIL, verified: no
    compiler or no build) or "xgboost" (neither agreed with XGBoost, or neither could be made).
    """

    sha256: str
    scorer: str
    reason: str
    library_sha256: str | None = None
    rows: int = 0
    max_error: float | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cache_dir(models_dir: Path) -> Path:
    """Where compiled trees are kept: beside models/, out of the watcher's sight."""
    return models_dir.parent / CACHE_DIR


def library_path(cache: Path, sha256: str) -> Path:
    return cache / f"{sha256}.so"


def verdict_path(cache: Path, sha256: str) -> Path:
    return cache / f"{sha256}.verdict.json"


def read_verdict(cache: Path, sha256: str) -> Verdict | None:
    """The verdict on an artifact's compiled form; None while there is none (or it is
    unreadable: it is then made again)."""
    try:
        doc = json.loads(verdict_path(cache, sha256).read_text(encoding="utf-8"))
        verdict = Verdict(**doc)
    except (OSError, ValueError, TypeError):
        return None
    if verdict.sha256 != sha256 or verdict.scorer not in ("compiled", "gtil", "xgboost"):
        return None
    return verdict


def building(cache: Path, sha256: str) -> bool:
    """Whether a process holds the build lock of this artifact now (creating nothing: a
    reading command asks)."""
    try:
        fd = os.open(cache / f"{sha256}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # never built here (or unreadable: then no verdict is either)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def status(cache: Path, sha256: str) -> tuple[str, str]:
    """Which scorer single rows of this artifact use, and why (`beast models`)."""
    verdict = read_verdict(cache, sha256)
    if verdict is not None:
        return verdict.scorer, verdict.reason
    if building(cache, sha256):
        return "xgboost", "compiling: XGBoost serves until the compiled trees are verified"
    return "xgboost", "not compiled yet: compiled in the background once it serves"


def _try_lock(cache: Path, sha256: str) -> int | None:
    """The build lock's descriptor, held; None when another process holds it."""
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / f"{sha256}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def compile_in_background(raw: bytes, sha256: str, cache: Path, booster: Any = None) -> bool:
    """Build and verify an artifact's compiled form in a detached grandchild of this process
    (the validator child: XGBoost is imported and the model loaded already). Returns at
    once; False when a verdict exists, another process is building it, or it cannot start
    (an unwritable workspace: XGBoost serves, as without compiled trees)."""
    if read_verdict(cache, sha256) is not None:
        return False
    try:
        lock = _try_lock(cache, sha256)
    except OSError:
        return False
    if lock is None:
        return False
    try:
        pid = os.fork()
    except OSError:
        os.close(lock)
        return False
    if pid == 0:  # the child: a session of its own, no inherited pipes, then a grandchild
        code = 0
        try:
            _detach(keep=lock)
            if os.fork() == 0:
                with contextlib.suppress(BaseException):
                    build(raw, sha256, cache, booster)
            else:
                os._exit(0)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(lock)  # the grandchild holds it (the same open file) until it is done
    os.waitpid(pid, 0)  # the intermediate child exits at once: no zombie is left
    return True


def request(path: Path, sha256: str, cache: Path) -> bool:
    """Ask for an artifact's compiled form from a serving process: a detached
    `python -m engine.registry.compiled` unless a verdict exists or a build runs."""
    if read_verdict(cache, sha256) is not None or building(cache, sha256):
        return False
    from engine.registry import artifacts  # the validator child's command and environment

    command, env = artifacts.child_command()
    command[-1] = "engine.registry.compiled"
    try:
        subprocess.Popen(
            [*command, str(path), sha256, str(cache)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError:  # no process to spare: XGBoost serves, as without compiled trees
        return False
    return True


def _detach(keep: int) -> None:
    """Leave the parent's session and pipes (a parent reads its child's output to the end)."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.set_inheritable(keep, False)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)
    with contextlib.suppress(OSError):
        os.nice(10)  # never ahead of serving


def build(raw: bytes, sha256: str, cache: Path, booster: Any = None) -> Verdict:
    """Compile (or else prepare GTIL for) the model saved as `raw`, verify it against
    XGBoost (`booster`: the same bytes, loaded) and write the verdict. The caller holds the
    build lock."""
    start = time.monotonic()
    try:
        verdict = _build(raw, sha256, cache, booster)
    except Exception as exc:  # whatever failed, XGBoost serves, and the verdict says why
        verdict = Verdict(sha256, "xgboost", f"not compiled: {_one_line(exc)}")
    verdict = Verdict(**{**asdict(verdict), "seconds": round(time.monotonic() - start, 3)})
    cache.mkdir(parents=True, exist_ok=True)
    _write_atomically(verdict_path(cache, sha256), json.dumps(verdict.to_json()).encode())
    return verdict


def _build(raw: bytes, sha256: str, cache: Path, booster: Any) -> Verdict:
    import numpy as np
    import treelite

    if booster is None:
        booster = _load_booster(raw, sha256)
    rows = verification_rows(booster, sha256)
    expected = np.asarray(booster.inplace_predict(rows, validate_features=False)).ravel()
    model = treelite_model(raw)
    compiler = find_compiler()
    why_not = f"no C compiler ({compiler[1]})" if compiler[0] is None else ""
    if compiler[0] is not None:
        try:
            library = _compile(model, compiler[0], rows.shape[1], cache, sha256)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            why_not = f"the C build failed: {_one_line(exc)}"
        else:
            got = score_rows_with_library(library, rows)
            worst = max_error(got, expected)
            if worst is not None:
                return Verdict(
                    sha256,
                    "compiled",
                    f"compiled with {Path(compiler[0]).name}, verified on {len(rows)} rows "
                    f"(largest difference from XGBoost {worst:.1e})",
                    library_sha256=_sha256_file(library),
                    rows=len(rows),
                    max_error=worst,
                )
            library.unlink(missing_ok=True)
            why_not = f"the compiled trees disagree with XGBoost: {_disagreement(got, expected)}"
    got = np.asarray(treelite.gtil.predict(model, rows, nthread=1)).ravel()
    worst = max_error(got, expected)
    if worst is not None:
        return Verdict(
            sha256,
            "gtil",
            f"treelite's GTIL, verified on {len(rows)} rows (largest difference from XGBoost "
            f"{worst:.1e}); {why_not}",
            rows=len(rows),
            max_error=worst,
        )
    return Verdict(
        sha256,
        "xgboost",
        f"{why_not}; GTIL disagrees with XGBoost too: {_disagreement(got, expected)}",
        rows=len(rows),
    )


def treelite_model(raw: bytes) -> Any:
    """The treelite model of an XGBoost JSON or UBJSON model's bytes."""
    import treelite

    if raw.lstrip()[:1] == b"{":
        return treelite.frontend.from_xgboost_json(raw, allow_unknown_field=True)
    return treelite.frontend.from_xgboost_ubjson(raw, allow_unknown_field=True)


def _load_booster(raw: bytes, sha256: str) -> Any:
    import xgboost

    if hashlib.sha256(raw).hexdigest() != sha256:
        raise RuntimeError(f"the model's bytes no longer match sha256 {sha256[:12]}…")
    booster = xgboost.Booster(params={"nthread": 1})
    booster.load_model(bytearray(raw))
    return booster


def find_compiler() -> tuple[str | None, str]:
    """The C compiler to build with ($CC, else cc, gcc, clang) and, when none, why."""
    wanted = os.environ.get("CC")
    if wanted:
        found = shutil.which(wanted)
        return (found, "") if found else (None, f"$CC={wanted} not found")
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found, ""
    return None, "none of cc, gcc, clang on PATH"


def _compile(model: Any, compiler: str, width: int, cache: Path, sha256: str) -> Path:
    """Generate the C code, build it into `<sha256>.so` (atomically) and return its path."""
    import tl2cgen

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as temp:
        work = Path(temp)
        tl2cgen.generate_c_code(model, work, params={})
        (work / "beast_entry.c").write_text(_ENTRY_POINTS % {"width": width}, encoding="ascii")
        sources = sorted(str(p) for p in work.glob("*.c"))
        built = work / "model.so"
        done = subprocess.run(
            [compiler, *CFLAGS, "-o", str(built), *sources, "-lm"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"{Path(compiler).name} exited {done.returncode}: {last[:200]}")
        target = library_path(cache, sha256)
        os.replace(built, target)
    return target


def score_rows_with_library(library: Path, rows: Any) -> Any:
    """Scores of float32 rows through a built library's `beast_score_rows`."""
    import ctypes  # here: `beast models` and `beast status` import this module cold

    import numpy as np

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.empty(len(rows), dtype=np.float32)
    lib = ctypes.CDLL(str(library))
    lib.beast_score_rows.argtypes = (ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p)
    lib.beast_score_rows.restype = None
    lib.beast_score_rows(rows.ctypes.data, len(rows), out.ctypes.data)
    return out


def max_error(got: Any, expected: Any) -> float | None:
    """The largest difference where every score is within `TOLERANCE` (absolute up to a
    magnitude of 1, relative beyond); None when some score is not (or the shapes differ)."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64).ravel()
    expected = np.asarray(expected, dtype=np.float64).ravel()
    if got.shape != expected.shape or not np.isfinite(expected).all():
        return None
    error = np.abs(got - expected)
    if not (error <= TOLERANCE * np.maximum(1.0, np.abs(expected))).all():
        return None  # NaN errors included: a comparison with NaN is false
    return float(error.max()) if error.size else 0.0


def _disagreement(got: Any, expected: Any) -> str:
    import numpy as np

    got = np.asarray(got, dtype=np.float64).ravel()
    expected = np.asarray(expected, dtype=np.float64).ravel()
    if got.shape != expected.shape:
        return f"{got.size} scores for {expected.size} rows"
    error = np.abs(got - expected)
    error[np.isnan(error)] = math.inf
    worst = int(np.argmax(error))
    return f"row {worst} scored {got[worst]:.6g}, XGBoost {expected[worst]:.6g}"


def verification_rows(booster: Any, sha256: str, count: int = VERIFY_ROWS) -> Any:
    """Rows in the model's ranges: each feature drawn from its split thresholds, the float32
    values just below and above them, beyond its lowest and highest split, and missing — so
    every split is taken both ways, at its edge too, where a compiled comparison could differ.
    Seeded by the sha256: the same artifact is verified on the same rows."""
    import numpy as np

    width = booster.num_features()
    thresholds = _thresholds(booster, width)
    rng = np.random.default_rng(int(sha256[:16], 16))
    rows = np.empty((count, width), dtype=np.float32)
    for feature in range(width):
        values = np.asarray(sorted(thresholds[feature]) or [0.0], dtype=np.float32)
        low, high = float(values[0]), float(values[-1])
        candidates = np.concatenate(
            (
                values,
                np.nextafter(values, np.float32(-np.inf)),
                np.nextafter(values, np.float32(np.inf)),
                np.asarray([low - 1 - abs(low), high + 1 + abs(high), np.nan], np.float32),
            )
        )
        rows[:, feature] = rng.choice(candidates, size=count)
    rows[0, :] = np.nan  # every default direction at once
    return rows


def _thresholds(booster: Any, width: int) -> list[set[float]]:
    """Each feature's split thresholds, read from the model's own JSON."""
    doc = json.loads(booster.save_raw(raw_format="json"))
    found: list[set[float]] = [set() for _ in range(width)]
    for tree in _trees(doc):
        left = tree.get("left_children", [])
        for node, feature in enumerate(tree.get("split_indices", [])):
            if left[node] != -1 and 0 <= feature < width:
                found[feature].add(float(tree["split_conditions"][node]))
    return found


def _trees(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    booster = doc["learner"]["gradient_booster"]
    holder = booster.get("gbtree", booster) if booster.get("name") == "dart" else booster
    yield from holder.get("model", {}).get("trees", [])


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_matches(cache: Path, verdict: Verdict) -> Path | None:
    """The verdict's library, when its bytes are still the ones verified."""
    library = library_path(cache, verdict.sha256)
    try:
        ok = verdict.library_sha256 is not None and _sha256_file(library) == verdict.library_sha256
    except OSError:
        return None
    return library if ok else None


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".verdict-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:300]


def main(argv: list[str]) -> int:
    """`python -m engine.registry.compiled PATH SHA256 CACHE_DIR`: build one, if no other
    process is building it (the router's request)."""
    path, sha256, cache = Path(argv[0]), argv[1], Path(argv[2])
    lock = _try_lock(cache, sha256)
    if lock is None or read_verdict(cache, sha256) is not None:
        return 0
    with contextlib.suppress(OSError):
        os.nice(10)  # never ahead of serving
    build(path.read_bytes(), sha256, cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
