"""The validator's child process: `python -m engine.validator_child PATH`.

Untrusted model bytes are parsed and run here, never in the engine's or console's process:
XGBoost can crash the process on a hand-edited model. The parent reads one JSON line from
stdout; a crash or a hang is the parent's to report. Pickle is never loaded: only JSON or
UBJSON is parsed, and XGBoost's own loader reads only those formats.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

PICKLE_MAGIC = b"\x80"


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
    else:
        from engine import ubjson

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
    names = learner.get("feature_names") or None
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise Invalid("feature_names is not a list of strings")
        if len(names) != n_features:
            raise Invalid(f"{len(names)} feature names for num_feature {n_features}")
        if len(set(names)) != len(names):
            raise Invalid("duplicate feature names")
    return n_features, names


def validate(path: Path, fmt: str) -> dict[str, Any]:
    raw = path.read_bytes()
    doc = _parse(raw, fmt)
    saved = _saved_version(doc)
    n_features, names = _header(doc)
    del doc

    import numpy as np
    import xgboost

    installed = tuple(int(p) for p in xgboost.__version__.split(".")[:3] if p.isdigit())
    saved_text = ".".join(str(v) for v in saved)
    if saved[:2] > installed[:2]:
        raise Invalid(
            f"saved by XGBoost {saved_text}, newer than the installed {xgboost.__version__}: "
            "upgrade xgboost to load it"
        )
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
        raise Invalid(f"test prediction failed: {str(exc).strip()[:300]}") from None
    values = [float(v) for v in np.asarray(scores).ravel()]
    if not values or not all(math.isfinite(v) for v in values):
        raise Invalid(f"test prediction is not a finite number: {values[:2]}")
    return {
        "ok": True,
        "n_features": n_features,
        "feature_names": names,
        "xgboost_version": saved_text,
        "format": fmt,
    }


def main(argv: list[str]) -> int:
    path, fmt = Path(argv[0]), argv[1]
    try:
        result = validate(path, fmt)
    except Invalid as exc:
        result = {"ok": False, "reason": str(exc)}
    except MemoryError:
        result = {"ok": False, "reason": "out of memory while loading"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
