"""The validator's child process: `python -m engine.registry.validator_child PATH FORMAT
[COMPILE_INTO]` (or `--serve`).

Untrusted model bytes are parsed and run here, never in the engine's or console's process:
XGBoost can crash the process on a hand-edited model. The parent reads one JSON line from
stdout; a crash or a hang is the parent's to report. Pickle is never loaded: only JSON or
UBJSON is parsed, and XGBoost's own loader reads only those formats.

Given a cache directory, a valid model is also compiled there (engine.registry.compiled) by a
detached grandchild forked once the verdict is made: the parent never waits for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

PICKLE_MAGIC = b"\x80"
# A header can claim any num_feature; the test prediction (and XGBoost itself) allocates per
# feature, so a 2 KB hand-edited file could otherwise ask for tens of GB.
MAX_FEATURES = 1_000_000
# Backstop for everything else: the child's heap may not grow past this plus a multiple of
# the file size (parsing JSON costs several times the file's bytes).
_MEMORY_BASE = 2 << 30
_MEMORY_PER_FILE_BYTE = 16
_ROOT_PARENT = (-1, 2147483647)  # how XGBoost writes "no parent" (multi-target, scalar trees)


class Invalid(Exception):
    pass


def _parse(raw: bytes, fmt: str) -> dict[str, Any]:
    if not raw.strip():
        raise Invalid("empty file")
    if raw[:1] == PICKLE_MAGIC:
        raise Invalid("pickle data, not an XGBoost JSON/UBJ model (pickle is never loaded)")
    if fmt == "json":
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise Invalid("not UTF-8 text, so not an XGBoost JSON model") from None
        except json.JSONDecodeError as exc:
            raise Invalid(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise Invalid("not an XGBoost model (JSON nested too deeply)") from None
    else:
        from engine.registry import ubjson  # only for UBJSON files

        try:
            doc = ubjson.loads(raw)
        except ubjson.UBJError as exc:
            raise Invalid(f"not valid UBJSON ({exc})") from None
    if not isinstance(doc, dict) or "learner" not in doc or "version" not in doc:
        raise Invalid("not an XGBoost model (no 'learner' and 'version' at the top level)")
    return doc


def _saved_version(doc: dict[str, Any]) -> tuple[int, ...]:
    version = doc.get("version")
    if not isinstance(version, list) or not version or not all(isinstance(v, int) for v in version):
        raise Invalid("not an XGBoost model (bad 'version' field)")
    return tuple(version)


def _header(doc: dict[str, Any]) -> tuple[int, list[str] | None]:
    learner = doc["learner"]
    if not isinstance(learner, dict):
        raise Invalid("not an XGBoost model ('learner' is not an object)")
    params = learner.get("learner_model_param", {})
    try:
        n_features = int(params["num_feature"])
    except (KeyError, TypeError, ValueError):
        raise Invalid("no readable num_feature in learner_model_param") from None
    if n_features < 1:
        raise Invalid(f"num_feature is {n_features}; a model needs at least one feature")
    if n_features > MAX_FEATURES:
        raise Invalid(f"num_feature is {n_features}, over the {MAX_FEATURES} accepted")
    names = learner.get("feature_names") or None
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise Invalid("feature_names is not a list of strings")
        if len(names) != n_features:
            raise Invalid(f"{len(names)} feature names for num_feature {n_features}")
        if len(set(names)) != len(names):
            raise Invalid("duplicate feature names")
    return n_features, names


def _tree_model(learner: dict[str, Any]) -> dict[str, Any] | None:
    """The object holding trees/tree_info of a gbtree or dart model; None for gblinear."""
    booster = learner.get("gradient_booster")
    if not isinstance(booster, dict):
        return None
    holder = booster.get("gbtree") if booster.get("name") == "dart" else booster
    model = holder.get("model") if isinstance(holder, dict) else None
    return model if isinstance(model, dict) else None


def _int_param(params: dict[str, Any], key: str, default: int) -> int:
    try:
        return int(params.get(key, default))
    except (TypeError, ValueError):
        raise Invalid(f"learner_model_param {key} is not a whole number") from None


def _outputs(params: dict[str, Any]) -> int:
    """Values the model gives per row: classes for multi-class, targets for multi-target."""
    return max(1, _int_param(params, "num_class", 0), _int_param(params, "num_target", 1))


def _objective(learner: dict[str, Any]) -> str | None:
    """The XGBoost objective the model was trained with (`learner.objective.name`), if saved."""
    objective = learner.get("objective")
    name = objective.get("name") if isinstance(objective, dict) else None
    return name if isinstance(name, str) and name else None


def _is_index(value: Any, upper: int) -> bool:
    return type(value) is int and 0 <= value < upper


def _check_trees(doc: dict[str, Any], n_features: int) -> None:
    """Refuse tree structures XGBoost trusts blindly: it reads or writes out of bounds on them.

    Measured with XGBoost 3.2: an out-of-range split index or child, a cycle, a tree_info
    group past the outputs, a leaf vector wider than the targets, or categories segments past
    the categories array each crash the process (SIGSEGV/SIGABRT) or return garbage.
    """
    learner = doc["learner"]
    params = learner.get("learner_model_param")
    assert isinstance(params, dict)  # _header read num_feature from it
    groups = _outputs(params)
    model = _tree_model(learner)
    trees = model.get("trees") if model is not None else None
    if model is None or not isinstance(trees, list):
        return  # gblinear, or a shape XGBoost refuses cleanly on its own
    tree_info = model.get("tree_info")
    if isinstance(tree_info, list):
        if len(tree_info) != len(trees):
            raise Invalid(f"tree_info has {len(tree_info)} entries for {len(trees)} trees")
        for t, group in enumerate(tree_info):
            if not _is_index(group, groups):
                raise Invalid(
                    f"tree_info[{t}] is {group!r}, not an output group of a model with "
                    f"{groups} output(s)"
                )
    indptr = model.get("iteration_indptr")
    if isinstance(indptr, list) and indptr:
        steps = itertools.pairwise(indptr)
        if (
            indptr[0] != 0
            or indptr[-1] != len(trees)
            or not all(type(v) is int for v in indptr)
            or any(b < a for a, b in steps)
        ):
            raise Invalid(f"iteration_indptr does not index the {len(trees)} trees in order")
    for t, tree in enumerate(trees):
        if not isinstance(tree, dict):
            raise Invalid(f"tree {t} is not an object")
        _check_tree(t, tree, n_features, groups)


def _check_tree(t: int, tree: dict[str, Any], n_features: int, groups: int) -> None:
    left = tree.get("left_children")
    right = tree.get("right_children")
    split = tree.get("split_indices")
    if not (isinstance(left, list) and isinstance(right, list) and isinstance(split, list)):
        raise Invalid(f"tree {t} has no left_children/right_children/split_indices arrays")
    n = len(left)
    if n == 0 or len(right) != n or len(split) != n:
        raise Invalid(
            f"tree {t}: {len(left)} left children, {len(right)} right children and "
            f"{len(split)} split indices (they must be equal and non-zero)"
        )
    tree_param = tree.get("tree_param")
    if isinstance(tree_param, dict):
        width = _int_param(tree_param, "size_leaf_vector", 1)
        if not 0 <= width <= groups:
            raise Invalid(
                f"tree {t}: leaf vector of size {width} for a model with {groups} output(s)"
            )
    parents = tree.get("parents")
    if parents is not None and (not isinstance(parents, list) or len(parents) != n):
        raise Invalid(f"tree {t}: parents is not an array of its {n} nodes")
    if parents is not None and parents[0] not in _ROOT_PARENT:
        raise Invalid(f"tree {t}: the root's parent is {parents[0]!r}, not none")
    seen = bytearray(n)
    seen[0] = 1
    stack = [0]
    while stack:
        node = stack.pop()
        if left[node] == -1:  # a leaf, as XGBoost decides it
            continue
        for child in (left[node], right[node]):
            if child == 0:
                raise Invalid(f"tree {t} node {node}: a child points back to the root (a cycle)")
            if not _is_index(child, n):
                raise Invalid(
                    f"tree {t} node {node}: child {child!r} is outside the tree's {n} nodes"
                )
            if seen[child]:
                raise Invalid(
                    f"tree {t} node {node}: child {child} is reached twice "
                    "(a cycle or a shared node)"
                )
            if parents is not None and parents[child] != node:
                raise Invalid(
                    f"tree {t} node {child}: its parent is recorded as {parents[child]!r}, "
                    f"but node {node} is"
                )
            seen[child] = 1
            stack.append(child)
        if not _is_index(split[node], n_features):
            raise Invalid(
                f"tree {t} node {node}: split index {split[node]!r} is not a feature of a "
                f"model with {n_features} features"
            )
    _check_categories(t, tree, n)


def _check_categories(t: int, tree: dict[str, Any], n: int) -> None:
    keys = ("categories_nodes", "categories_segments", "categories_sizes", "categories")
    nodes, segments, sizes, categories = (tree.get(key, []) for key in keys)
    if not all(isinstance(v, list) for v in (nodes, segments, sizes, categories)):
        raise Invalid(f"tree {t}: categories fields are not arrays")
    if not len(nodes) == len(segments) == len(sizes):
        raise Invalid(f"tree {t}: categories_nodes, _segments and _sizes differ in length")
    total = len(categories)
    for node, begin, size in zip(nodes, segments, sizes, strict=True):
        inside = _is_index(node, n) and _is_index(begin, total + 1) and _is_index(size, total + 1)
        if not inside or begin + size > total:
            raise Invalid(
                f"tree {t}: categories of node {node!r} ({begin!r}+{size!r}) lie outside "
                f"the {total} categories stored"
            )


def _installed_xgboost_version() -> str:
    """XGBoost's version without importing it (the import costs over a second)."""
    spec = importlib.util.find_spec("xgboost")
    for location in (spec.submodule_search_locations or []) if spec else []:
        try:
            return (Path(location) / "VERSION").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
    import xgboost  # last resort, ~2 s: the VERSION files above answer without it

    return str(xgboost.__version__)


def _limit_memory(file_size: int) -> None:
    wanted = _MEMORY_BASE + _MEMORY_PER_FILE_BYTE * file_size
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft > wanted:
        resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))


def validate(raw: bytes, fmt: str) -> dict[str, Any]:
    """The verdict on a model's bytes (Invalid when refused)."""
    return _validate(raw, fmt)[0]


def _validate(raw: bytes, fmt: str) -> tuple[dict[str, Any], Any]:
    """The verdict on a model's bytes and the XGBoost booster they loaded into."""
    _limit_memory(len(raw))
    doc = _parse(raw, fmt)
    saved = _saved_version(doc)
    n_features, names = _header(doc)
    _check_trees(doc, n_features)
    params = doc["learner"]["learner_model_param"]
    outputs = _outputs(params)
    classes = _int_param(params, "num_class", 0)
    objective = _objective(doc["learner"])
    del doc, params
    if classes > 1 or (objective or "").startswith("multi:"):
        raise Invalid(
            f"a multi-class model (objective {objective or 'unknown'}, {classes} classes): "
            "beast-mode serves regression and binary lines only (one score per prediction)"
        )
    if outputs != 1:
        raise Invalid(
            f"the model gives {outputs} values per row (num_target); "
            "beast-mode serves models that predict one score"
        )

    installed_text = _installed_xgboost_version()
    installed = tuple(int(p) for p in installed_text.split(".")[:3] if p.isdigit())
    saved_text = ".".join(str(v) for v in saved)
    if saved[:2] > installed[:2]:
        raise Invalid(
            f"saved by XGBoost {saved_text}, newer than the installed {installed_text}: "
            "upgrade xgboost to load it"
        )

    # The checks above refuse most bad files before the child pays ~2 s for these.
    import numpy as np
    import xgboost

    booster = xgboost.Booster(params={"nthread": 1})
    try:
        booster.load_model(bytearray(raw))
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "load failed"
        raise Invalid(f"XGBoost cannot load it: {first[:300]}") from None
    if booster.num_features() != n_features:
        raise Invalid(
            f"header says {n_features} features but the model has {booster.num_features()}"
        )
    rows = np.zeros((2, n_features), dtype=np.float32)
    rows[1, :] = 1.0
    try:
        scores = booster.inplace_predict(rows, validate_features=False)
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "predict failed"
        raise Invalid(f"test prediction failed: {first[:300]}") from None
    values = [float(v) for v in np.asarray(scores).ravel()]
    if len(values) != len(rows):
        raise Invalid(f"the test prediction gave {len(values)} values for {len(rows)} rows")
    if not all(math.isfinite(v) for v in values):
        raise Invalid(f"test prediction is not a finite number: {values[:2]}")
    verdict = {
        "ok": True,
        "n_features": n_features,
        "feature_names": names,
        "xgboost_version": saved_text,
        "format": fmt,
        "objective": objective,
    }
    return verdict, booster


def judge(path: Path, fmt: str, compile_into: Path | None = None) -> dict[str, Any]:
    """The verdict on one file, with the sha256 of the bytes judged; a valid model is then
    compiled into `compile_into` in the background (never waited for)."""
    raw = path.read_bytes()
    booster = None
    try:
        result, booster = _validate(raw, fmt)
    except Invalid as exc:
        result = {"ok": False, "reason": str(exc)}
    except MemoryError:
        result = {"ok": False, "reason": "out of memory while loading"}
    # The bytes judged here, so the parent can tell whether they are the bytes it hashed.
    result["sha256"] = hashlib.sha256(raw).hexdigest()
    if booster is not None and compile_into is not None:
        from engine.registry import compiled  # only for a model that will serve

        compiled.compile_in_background(raw, result["sha256"], compile_into, booster)
    return result


def serve() -> int:
    """A fork server: import what validation needs once, then fork a child per request.

    Requests are `PATH\0FORMAT\0COMPILE_INTO` lines on stdin (COMPILE_INTO may be empty);
    each answer is one JSON line on stdout. The
    forked child judges one file and exits, so a model that crashes XGBoost or corrupts
    memory takes only that child with it (reported as `{"signal": N}`); this process never
    parses a model. End of input (the parent closed or died) ends it.
    """
    import numpy  # noqa: F401 - warm: the point of this mode
    import xgboost  # noqa: F401

    while line := sys.stdin.buffer.readline():
        path, fmt, into = line.decode("utf-8", "surrogateescape").rstrip("\n").split("\0")
        sys.stdout.write(json.dumps(_forked(Path(path), fmt, Path(into) if into else None)) + "\n")
        sys.stdout.flush()
    return 0


def _forked(path: Path, fmt: str, compile_into: Path | None) -> dict[str, Any]:
    """Judge in a forked child; its answer comes back through a pipe of its own."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: judge, answer, exit without running any cleanup
        os.close(read_end)
        code = 0
        try:
            answer = judge(path, fmt, compile_into)
        except BaseException as exc:  # reported to the parent, then exit 1
            answer, code = {"ok": False, "exit": 1, "error": f"{type(exc).__name__}: {exc}"}, 1
        with os.fdopen(write_end, "wb") as out:
            out.write(json.dumps(answer).encode())
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer_pipe:
        data = answer_pipe.read()  # until the child exits (or dies)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"ok": False, "signal": os.WTERMSIG(status)}
    try:
        result: dict[str, Any] = json.loads(data)
    except ValueError:
        return {"ok": False, "exit": os.waitstatus_to_exitcode(status), "error": "no answer"}
    return result


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve()
    into = Path(argv[2]) if len(argv) > 2 else None
    sys.stdout.write(json.dumps(judge(Path(argv[0]), argv[1], into)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
