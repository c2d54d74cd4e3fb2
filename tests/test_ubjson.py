"""The UBJSON reader: real XGBoost `.ubj` models decode to what the JSON save says, and
malformed input raises UBJError, promptly, whatever the bytes."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.registry import ubjson
from engine.registry.ubjson import UBJError
from tests.helpers import FEATURES

# -- a minimal encoder, to state what the reader must decode -------------------------------

_INTS = [
    (b"i", ">b", -(2**7), 2**7 - 1),
    (b"U", ">B", 0, 2**8 - 1),
    (b"I", ">h", -(2**15), 2**15 - 1),
    (b"l", ">i", -(2**31), 2**31 - 1),
    (b"L", ">q", -(2**63), 2**63 - 1),
]


def enc_int(n: int) -> bytes:
    for marker, fmt, low, high in _INTS:
        if low <= n <= high:
            return marker + struct.pack(fmt, n)
    raise ValueError(n)


def enc_key(text: str) -> bytes:
    raw = text.encode("utf-8")
    return enc_int(len(raw)) + raw


def encode(value: Any, *, counted: bool = False) -> bytes:
    """UBJSON of a JSON-like value: smallest integer marker, float64, optional counts."""
    if value is None:
        return b"Z"
    if value is True:
        return b"T"
    if value is False:
        return b"F"
    if isinstance(value, int):
        return enc_int(value)
    if isinstance(value, float):
        return b"D" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"S" + enc_key(value)
    if isinstance(value, list):
        body = b"".join(encode(v, counted=counted) for v in value)
        return b"[#" + enc_int(len(value)) + body if counted else b"[" + body + b"]"
    if isinstance(value, dict):
        body = b"".join(enc_key(k) + encode(v, counted=counted) for k, v in value.items())
        return b"{#" + enc_int(len(value)) + body if counted else b"{" + body + b"}"
    raise TypeError(type(value))


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail, rather than hang, if the block runs longer than `seconds` (main thread only)."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- real XGBoost models -------------------------------------------------------------------


def _train(kind: str) -> xgb.Booster:
    rng = np.random.default_rng(3)
    x = rng.random((200, 5)).astype(np.float32)
    y = x @ rng.random(5) * 100
    params: dict[str, Any] = {"max_depth": 3, "nthread": 1, "seed": 3}
    if kind == "named":
        data = xgb.DMatrix(x, label=y, feature_names=list(FEATURES))
    elif kind == "unnamed":
        data = xgb.DMatrix(x, label=y)
    elif kind == "categorical":
        frame = pd.DataFrame(x[:, :4], columns=list(FEATURES[:4]))
        frame["team"] = pd.Categorical(rng.integers(0, 12, 200))
        data = xgb.DMatrix(frame, label=y, enable_categorical=True)
        params["max_cat_to_onehot"] = 1
    elif kind == "dart":
        data = xgb.DMatrix(x, label=y)
        params.update(booster="dart", rate_drop=0.2)
    elif kind == "pruned":
        data = xgb.DMatrix(x, label=y)
        params.update(tree_method="exact", gamma=50.0, max_depth=6)
    else:  # pragma: no cover - a typo in the parametrize list
        raise ValueError(kind)
    return xgb.train(params, data, num_boost_round=4)


KINDS = ["named", "unnamed", "categorical", "dart", "pruned"]


@pytest.fixture(scope="module")
def saves() -> dict[str, tuple[bytes, bytes]]:
    """(ubj bytes, json bytes) of one booster of each kind."""
    out = {}
    for kind in KINDS:
        booster = _train(kind)
        out[kind] = (bytes(booster.save_raw("ubj")), bytes(booster.save_raw("json")))
    return out


def same(ubj: Any, js: Any, where: str = "$") -> None:
    """Equal documents, floats compared as the float32 XGBoost stores."""
    if isinstance(js, dict):
        assert isinstance(ubj, dict) and ubj.keys() == js.keys(), where
        for key in js:
            same(ubj[key], js[key], f"{where}.{key}")
    elif isinstance(js, list):
        assert isinstance(ubj, list) and len(ubj) == len(js), where
        for i, (u, j) in enumerate(zip(ubj, js, strict=True)):
            same(u, j, f"{where}[{i}]")
    elif isinstance(js, float) or isinstance(ubj, float):
        assert np.float32(ubj) == np.float32(js) or (math.isnan(ubj) and math.isnan(js)), where
    else:
        assert ubj == js, where


@pytest.mark.parametrize("kind", KINDS)
def test_real_ubj_model_decodes_to_its_json_save(
    saves: dict[str, tuple[bytes, bytes]], kind: str
) -> None:
    ubj_bytes, json_bytes = saves[kind]
    decoded = ubjson.loads(ubj_bytes)
    from_json = json.loads(json_bytes)
    assert decoded["version"] == from_json["version"]
    assert decoded["version"][:2] == [int(p) for p in xgb.__version__.split(".")[:2]]
    learner, expected = decoded["learner"], from_json["learner"]
    params = learner["learner_model_param"]
    assert params == expected["learner_model_param"]
    assert params["num_feature"] == "5"
    assert learner["feature_names"] == expected["feature_names"]
    if kind in ("named", "categorical"):
        assert learner["feature_names"][:4] == list(FEATURES[:4])
    same(decoded, from_json)


def test_typed_arrays_of_a_real_model_are_lists_of_numbers(
    saves: dict[str, tuple[bytes, bytes]],
) -> None:
    tree = ubjson.loads(saves["named"][0])["learner"]["gradient_booster"]["model"]["trees"][0]
    assert all(type(v) is int for v in tree["left_children"] + tree["split_indices"])
    assert all(type(v) is float for v in tree["split_conditions"])
    assert len(tree["left_children"]) == int(tree["tree_param"]["num_nodes"])


# -- hand-written documents ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"Z", None),
        (b"T", True),
        (b"F", False),
        (b"i\xff", -1),
        (b"U\xff", 255),
        (b"I\x01\x00", 256),
        (b"l\xff\xff\xff\xfe", -2),
        (b"L\x00\x00\x00\x01\x00\x00\x00\x00", 2**32),
        (b"d" + struct.pack(">f", 1.5), 1.5),
        (b"D" + struct.pack(">d", -0.1), -0.1),
        (b"Cx", "x"),
        (b"Si\x03abc", "abc"),
        (b"SU\x02\xc3\xa9", "é"),
        (b"Hi\x0512.50", "12.50"),
        (b"[]", []),
        (b"{}", {}),
        (b"[NNi\x01N]", [1]),
        (b"[$d#i\x02" + struct.pack(">2f", 1.5, -2.0), [1.5, -2.0]),
        (b"[$l#i\x03" + struct.pack(">3i", -1, 0, 7), [-1, 0, 7]),
        (b"[$U#i\x03\x01\x02\x03", [1, 2, 3]),
        (b"[$U#i\x00", []),
        (b"[$S#i\x02i\x01ai\x02bc", ["a", "bc"]),
        (b"[$T#i\x03", [True, True, True]),
        (b"[#i\x02i\x01Si\x01x", [1, "x"]),
        (b"{$i#i\x02i\x01a\x05i\x01b\x06", {"a": 5, "b": 6}),
        (b"{#i\x01i\x01kZ", {"k": None}),
        (b"{i\x01a[i\x01{i\x01bT}]}", {"a": [1, {"b": True}]}),
    ],
)
def test_decodes(data: bytes, expected: Any) -> None:
    assert ubjson.loads(data) == expected


_HUGE = struct.pack(">q", 2**62)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "truncated"),
        (b"[", "truncated"),
        (b"{i\x01a", "truncated"),
        (b"L\x7f", "truncated"),
        (b"i\x01i\x02", "trailing"),
        (b"S\x00", "bad length marker"),
        (b"SD\x00\x00\x00\x00\x00\x00\x00\x01", "bad length marker"),
        (b"Si\xff", "negative length"),
        (b"[$d]", "typed container without a count"),
        (b"[$#i\x01", "typed container without a count"),
        (b"[$d#L" + _HUGE, "truncated"),
        (b"[$Z#L" + _HUGE, "empty elements"),
        (b"[$T#l\x00\x01\x00\x00", "empty elements"),
        (b"[#U\x40" + b"[$Z#U\xff" * 64, "empty elements"),
        (b"[#L" + _HUGE + b"Z", "more than the"),
        (b"{#L" + _HUGE, "more than the"),
        (b"{$Z#L" + _HUGE, "more than the"),
        (b"[$S#L" + _HUGE, "more than the"),
        (b"[" * 100 + b"]" * 100, "nesting too deep"),
        (b"{i\x01a" * 100 + b"Z" + b"}" * 100, "nesting too deep"),
        (b"Si\x02\xff\xfe", "utf-8"),
        (b"{i\x01\xffZ}", "utf-8"),
        (b"X", "unknown marker"),
        (b"{i\x01a}", "unknown marker"),
        (b"[$N#i\x01x", "unknown marker"),
        (b"\x80\x04\x95", "unknown marker"),
    ],
)
def test_malformed_input_raises_ubj_error(data: bytes, needle: str) -> None:
    with time_limit(5), pytest.raises(UBJError) as info:
        ubjson.loads(data)
    assert needle in str(info.value)


def test_truncations_of_a_real_model_raise(saves: dict[str, tuple[bytes, bytes]]) -> None:
    data = saves["named"][0]
    with time_limit(20):
        for cut in range(0, len(data), max(1, len(data) // 400)):
            with pytest.raises(UBJError):
                ubjson.loads(data[:cut])


# -- properties ----------------------------------------------------------------------------

_PROPERTY = settings(
    max_examples=300,
    deadline=timedelta(milliseconds=500),
    suppress_health_check=[HealthCheck.too_slow],
)


@_PROPERTY
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_raise_ubj_error(data: bytes) -> None:
    with time_limit(2), contextlib.suppress(UBJError):
        ubjson.loads(data)


@_PROPERTY
@given(st.binary(min_size=1, max_size=64))
def test_any_bytes_after_a_container_header_decode_or_raise(tail: bytes) -> None:
    for head in (b"[", b"{", b"[$", b"[#", b"{$", b"{#", b"S", b"H"):
        with time_limit(2), contextlib.suppress(UBJError):
            ubjson.loads(head + tail)


@settings(max_examples=150, deadline=timedelta(milliseconds=500))
@given(st.data())
def test_corrupted_real_models_decode_or_raise(
    saves: dict[str, tuple[bytes, bytes]], data: st.DataObject
) -> None:
    original = bytearray(saves["named"][0])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(original) - 1))
        original[at] = data.draw(st.integers(0, 255))
    with time_limit(2), contextlib.suppress(UBJError):
        ubjson.loads(bytes(original))


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)


@settings(max_examples=100, deadline=timedelta(milliseconds=500))
@given(_JSON_VALUES, st.booleans())
def test_round_trip(value: Any, counted: bool) -> None:
    assert ubjson.loads(encode(value, counted=counted)) == value
