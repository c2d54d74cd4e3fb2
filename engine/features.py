"""Input validation before XGBoost sees a row: our own checks, with the field named.

Features come by name (mapped to the model's order) or as a list in that order. Values must be
real numbers: no strings, booleans, nulls or nested lists; finite after the cast to float32
(so 1e39 and ±inf are refused); NaN only for features the line declares nullable (XGBoost
reads NaN as "missing", which is only right where missing is expected).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import BeastError

FLOAT32_MAX = float(np.finfo(np.float32).max)


class InvalidFeatures(BeastError):
    """A prediction request whose features do not fit the model line's schema."""

    http_status = 422


@dataclass(frozen=True)
class Schema:
    names: tuple[str, ...]
    nullable: frozenset[str] = frozenset()

    @property
    def width(self) -> int:
        return len(self.names)


def _value(raw: Any, field: str, nullable: bool) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        kind = "null" if raw is None else type(raw).__name__
        raise InvalidFeatures(f"feature {field}: expected a number, got {kind}")
    value = float(raw)
    if math.isnan(value):
        if nullable:
            return value
        raise InvalidFeatures(f"feature {field}: NaN is not allowed (it is not declared nullable)")
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise InvalidFeatures(f"feature {field}: {raw!r} is not finite as a 32-bit float")
    return value


def row(schema: Schema, features: Mapping[str, Any] | Sequence[Any]) -> list[float]:
    """One validated row in the model's feature order."""
    if isinstance(features, Mapping):
        missing = [n for n in schema.names if n not in features]
        unknown = [k for k in features if k not in set(schema.names)]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:5])}")
            if unknown:
                parts.append(f"unknown {', '.join(str(u) for u in unknown[:5])}")
            raise InvalidFeatures(f"features do not match the model: {'; '.join(parts)}")
        return [_value(features[n], n, n in schema.nullable) for n in schema.names]
    if isinstance(features, str | bytes) or not isinstance(features, Sequence):
        raise InvalidFeatures("features must be an object of name → number or a list of numbers")
    if len(features) != schema.width:
        raise InvalidFeatures(f"expected {schema.width} features, got {len(features)}")
    return [
        _value(v, schema.names[i], schema.names[i] in schema.nullable)
        for i, v in enumerate(features)
    ]


def matrix(schema: Schema, rows: Sequence[Mapping[str, Any] | Sequence[Any]]) -> np.ndarray:
    """A validated float32 batch; the error names the row and the field."""
    if not rows:
        raise InvalidFeatures("empty batch: send at least one row")
    out = np.empty((len(rows), schema.width), dtype=np.float32)
    for i, features in enumerate(rows):
        try:
            out[i] = row(schema, features)
        except InvalidFeatures as exc:
            raise InvalidFeatures(f"row {i}: {exc}") from None
    return out
