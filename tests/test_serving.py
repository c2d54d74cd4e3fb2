"""The router (DESIGN.md §6, RELIABILITY.md "Predictions and feedback", "Experiments"):
traffic split and sticky keys, live pick-up of deployments made by other processes, input
validation before XGBoost, and serving from memory when an artifact is deleted or tampered.

Real XGBoost models (the `registered` fixture), real SQLite, real `beast` processes.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from engine import Workspace
from engine.core.errors import NotFound
from engine.serving import features
from engine.serving.router import Router, Unavailable, bucket, buckets
from tests.helpers import FEATURES, REPO, beast, model_path
from tests.serving_helpers import deploy_changes, serving, set_nullable

ROW = [0.8, 12.0, 0.3, 0.05, 40.0]
N_SPLIT = 100_000


def _same(scores: object) -> Any:
    """A single row's score as served: its compiled trees (once verified, which may happen
    mid-test) score within 1e-4 of XGBoost, which scores batches (engine.registry.compiled)."""
    return pytest.approx(scores, rel=1e-4, abs=1e-4)


def _interval(n: int, share: float) -> tuple[float, float]:
    low, high = stats.binom.interval(0.999, n, share)
    return float(low), float(high)


# -- the split ------------------------------------------------------------------------------


def test_keyed_split_is_within_binomial_interval_and_sticky_across_restarts(
    registered: Workspace,
) -> None:
    deploy_changes(
        registered, {"version": "v1.0"}, {"version": "v2.0", "traffic": 30, "ab_test": "s"}
    )
    keys = [f"user-{i}" for i in range(N_SPLIT)]
    rows = np.random.default_rng(7).random((N_SPLIT, len(FEATURES)))

    def arms(router: Router) -> np.ndarray:
        out = []
        for start in range(0, N_SPLIT, 20_000):
            got = router.predict_batch(
                rows[start : start + 20_000], keys=keys[start : start + 20_000]
            )
            out.extend(p.arm == "candidate" for p in got)
            assert {p.version for p in got} <= {"v1.0", "v2.0"}
            assert all((p.version == "v2.0") == (p.arm == "candidate") for p in got)
        return np.array(out)

    with serving(registered, log=False) as (router, _):
        first = arms(router)
        again = arms(router)
    with serving(registered, log=False) as (restarted, _):  # a restart: a new Router
        after_restart = arms(restarted)
        # The single-row path routes a key exactly as the batch path does.
        sample = range(0, N_SPLIT, 97)
        single = [restarted.predict(ROW, key=keys[i]).arm == "candidate" for i in sample]
    low, high = _interval(N_SPLIT, 0.30)
    assert low <= first.sum() <= high, (first.sum(), low, high)
    assert np.array_equal(first, again)
    assert np.array_equal(first, after_restart)
    assert single == [bool(first[i]) for i in sample]
    # The rule itself: the candidate takes the buckets below its share.
    assert np.array_equal(first, np.array([bucket("s", k) < 3000 for k in keys]))


def test_unkeyed_split_is_random_but_near_the_share(registered: Workspace) -> None:
    deploy_changes(
        registered, {"version": "v1.0"}, {"version": "v3.0", "traffic": 10, "ab_test": "r"}
    )
    rows = np.random.default_rng(3).random((N_SPLIT, len(FEATURES)))
    with serving(registered, log=False) as (router, _):
        one = np.array([p.arm == "candidate" for p in router.predict_batch(rows)])
        two = np.array([p.arm == "candidate" for p in router.predict_batch(rows)])
        singles = sum(router.predict(ROW).arm == "candidate" for _ in range(4000))
    low, high = _interval(N_SPLIT, 0.10)
    assert low <= one.sum() <= high
    assert low <= two.sum() <= high
    assert not np.array_equal(one, two)  # random, not a function of the row
    s_low, s_high = _interval(4000, 0.10)
    assert s_low <= singles <= s_high


@settings(max_examples=300, deadline=None)
@given(
    experiment=st.text(max_size=20),
    key=st.text(max_size=40),
    shares=st.tuples(st.integers(100, 9900), st.integers(100, 9900)),
)
def test_raising_the_share_never_moves_a_key_back(
    experiment: str, key: str, shares: tuple[int, int]
) -> None:
    low, high = sorted(shares)
    b = bucket(experiment, key)
    assert 0 <= b < 10_000
    assert b == bucket(experiment, key)
    if b < low:  # on the candidate at the lower share ...
        assert b < high  # ... still on it at the higher one


def test_buckets_for_a_batch_match_the_single_key_rule() -> None:
    keys = [f"k{i}" if i % 3 else None for i in range(3000)]
    got = buckets("exp", keys, len(keys))
    assert all(got[i] == bucket("exp", k) for i, k in enumerate(keys) if k is not None)
    assert got.min() >= 0 and got.max() < 10_000
    unkeyed = buckets("exp", None, 200_000)
    assert abs(float((unkeyed < 2500).mean()) - 0.25) < 0.01


def test_buckets_are_the_same_in_another_process_with_another_hash_seed() -> None:
    keys = [f"user-{i}" for i in range(50)]
    code = (
        "import json, sys; from engine.serving.router import bucket; "
        f"print(json.dumps([bucket('exp-1', k) for k in {keys!r}]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == str([bucket("exp-1", k) for k in keys]).replace("'", '"')


# -- live pick-up of deployment changes ---------------------------------------------------


def _wait_for(router: Router, check: Any, limit_s: float) -> float:
    """Poll predict until `check(prediction)`; the seconds it took."""
    start = time.monotonic()
    while True:
        prediction = router.predict(ROW, key="same-user")
        if check(prediction):
            return time.monotonic() - start
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"not picked up after {limit_s}s: {prediction}")
        time.sleep(0.005)


def test_a_deployment_change_by_another_process_is_picked_up_within_a_second(
    registered: Workspace,
) -> None:
    deploy_changes(registered, {"version": "v1.0"}, {"version": "v2.0"})
    refresh = 0.5
    with serving(registered, log=False, refresh_s=refresh) as (router, _):
        assert router.predict(ROW).version == "v2.0"
        # Several changes in a row, each made by a real `beast` process.
        steps: list[tuple[tuple[str, ...], Any]] = [
            (("rollback",), lambda p: p.version == "v1.0"),
            (
                ("deploy", "--version", "v3.0", "--traffic", "99", "--ab-test", "live"),
                lambda p: p.experiment == "live" and p.version == "v3.0",
            ),
            (("abort", "live"), lambda p: p.experiment is None and p.version == "v1.0"),
            (("deploy", "--version", "v4.0"), lambda p: p.version == "v4.0"),
        ]
        for args, check in steps:
            done = beast(registered, *args)
            assert done.returncode == 0, done.stderr
            took = _wait_for(router, check, limit_s=5.0)
            assert took < 1.0 + refresh, (args, took)


# -- validation -----------------------------------------------------------------------------


@pytest.fixture
def nullable_ws(registered: Workspace) -> Workspace:
    set_nullable(registered, ["coverage"])
    deploy_changes(registered, {"version": "v1.0"})
    return registered


def _named(values: list[Any]) -> dict[str, Any]:
    return dict(zip(FEATURES, values, strict=True))


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("inf", math.inf, "not finite"),
    ("-inf", -math.inf, "not finite"),
    ("overflow", 1e39, "not finite as a 32-bit float"),
    ("huge int", 10**400, "not finite"),
    ("string", "0.5", "expected a number, got str"),
    ("boolean", True, "expected a number, got bool"),
    ("null", None, "expected a number, got null"),
    ("nested list", [0.5], "expected a number, got list"),
    ("object", {"v": 1}, "expected a number, got dict"),
    ("NaN where not nullable", math.nan, "NaN is not allowed"),
]


@pytest.mark.parametrize(("label", "bad", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field(
    nullable_ws: Workspace, label: str, bad: Any, message: str
) -> None:
    with serving(nullable_ws, log=False) as (router, _):
        values = [*ROW]
        values[4] = bad  # churn: not nullable
        for given_ in (values, _named(values)):
            with pytest.raises(features.InvalidFeatures, match=message) as caught:
                router.predict(given_)
            assert "churn" in str(caught.value)
        with pytest.raises(features.InvalidFeatures, match="row 2: feature churn") as caught:
            router.predict_batch([ROW, ROW, values])
        assert message in str(caught.value)


def test_nan_is_accepted_only_where_declared_nullable(nullable_ws: Workspace) -> None:
    with serving(nullable_ws, log=False) as (router, _):
        missing = [math.nan, *ROW[1:]]
        got = router.predict(missing)
        assert got.error is None and got.score is not None and math.isfinite(got.score)
        assert router.predict(_named(missing)).score == _same(got.score)
        batch = router.predict_batch([missing, ROW])
        assert batch[0].score == pytest.approx(got.score)
        with pytest.raises(features.InvalidFeatures, match="feature complexity: NaN"):
            router.predict([ROW[0], math.nan, *ROW[2:]])


def test_shapes_and_names_are_checked_before_xgboost(nullable_ws: Workspace) -> None:
    with serving(nullable_ws, log=False) as (router, _):
        with pytest.raises(features.InvalidFeatures, match="expected 5 features, got 3"):
            router.predict(ROW[:3])
        with pytest.raises(features.InvalidFeatures, match="expected 5 features, got 6"):
            router.predict([*ROW, 1.0])
        with pytest.raises(features.InvalidFeatures, match="empty batch"):
            router.predict_batch([])
        with pytest.raises(features.InvalidFeatures, match="unknown bogus"):
            router.predict({**_named(ROW), "bogus": 1.0})
        named = _named(ROW)
        del named["churn"]
        with pytest.raises(features.InvalidFeatures, match="missing churn"):
            router.predict(named)
        with pytest.raises(features.InvalidFeatures, match="object of name"):
            router.predict("0.1,0.2")  # type: ignore[arg-type]
        with pytest.raises(features.InvalidFeatures, match="row 1: expected 5 features"):
            router.predict_batch([ROW, ROW[:2]])
        with pytest.raises(features.InvalidFeatures, match="keys"):
            router.predict_batch([ROW, ROW], keys=["a"])
        with pytest.raises(features.InvalidFeatures, match="key must be a string"):
            router.predict(ROW, key=5)  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            router.predict(ROW, model="no-such-line")


def test_features_by_name_in_any_order_score_as_the_list_in_model_order(
    nullable_ws: Workspace,
) -> None:
    rng = np.random.default_rng(11)
    with serving(nullable_ws, log=False) as (router, _):
        for _ in range(20):
            values = [float(v) for v in rng.random(len(FEATURES)) * 50]
            order = rng.permutation(len(FEATURES))
            shuffled = {FEATURES[i]: values[i] for i in order}
            assert list(shuffled) != list(FEATURES) or True
            by_list = _same(router.predict(values).score)
            assert router.predict(shuffled).score == by_list
            assert router.predict(tuple(values)).score == by_list
            assert router.predict(np.array(values)).score == by_list  # type: ignore[arg-type]
        # ... and the batch path agrees with the single path (within the 1e-4 its compiled
        # trees are verified to, once they serve single rows: engine.registry.compiled).
        rows = (rng.random((50, len(FEATURES))) * 50).tolist()
        named_rows = [dict(reversed(list(_named(r).items()))) for r in rows]
        singles = _same([router.predict(r).score for r in rows])
        assert [p.score for p in router.predict_batch(rows)] == singles
        assert [p.score for p in router.predict_batch(named_rows)] == singles
        assert [p.score for p in router.predict_batch(np.array(rows))] == singles


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
NAMES = st.sampled_from([*FEATURES, "bogus", ""])
EDGES = st.sampled_from(
    [
        edge
        for v in (features.FLOAT32_EDGE, features.FLOAT32_MAX, 1e39, 2**128, 10**400)
        for edge in (v, -v, float(np.nextafter(float(v), 0)) if v != 10**400 else 10**300)
    ]
)
INPUTS = (
    st.lists(JSON, min_size=0, max_size=7)
    | st.lists(st.floats(allow_nan=True, allow_infinity=True) | EDGES, min_size=5, max_size=5)
    | st.dictionaries(NAMES, JSON, max_size=7)
    | st.fixed_dictionaries({n: JSON for n in FEATURES})
    | st.fixed_dictionaries({n: st.floats() | st.integers() for n in FEATURES})
    | JSON
)
SCHEMA = features.Schema(FEATURES, frozenset({"coverage"}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_row_returns_checked_floats_or_refuses(value: Any) -> None:
    try:
        out = features.row(SCHEMA, value)
    except features.InvalidFeatures as exc:
        assert str(exc)
        return
    assert isinstance(out, list) and len(out) == len(FEATURES)
    for name, v in zip(FEATURES, out, strict=True):
        assert type(v) is float
        if math.isnan(v):
            assert name == "coverage"
        else:
            assert math.isfinite(float(np.float32(v)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(INPUTS, min_size=0, max_size=4))
def test_matrix_returns_a_finite_float32_batch_or_refuses(rows: Any) -> None:
    try:
        out = features.matrix(SCHEMA, rows)
    except features.InvalidFeatures as exc:
        assert str(exc)
        return
    assert out.dtype == np.float32 and out.shape == (len(rows), len(FEATURES))
    finite = np.isfinite(out)
    assert finite[:, 1:].all()
    assert (finite[:, 0] | np.isnan(out[:, 0])).all()
    for i, r in enumerate(rows):  # the same answer as one row at a time
        np.testing.assert_array_equal(out[i], np.array(features.row(SCHEMA, r), np.float32))


# -- artifacts: deleted, tampered -----------------------------------------------------------


def test_a_deleted_artifact_keeps_serving_from_memory(registered: Workspace) -> None:
    deploy_changes(registered, {"version": "v1.0"})
    artifact = model_path(registered, "v1.0")
    original = artifact.read_bytes()
    try:
        with serving(registered, log=False, refresh_s=0.05) as (router, _):
            before = _same(router.predict(ROW).score)
            artifact.unlink()
            assert router.predict(ROW).score == before
            # A deployment change that keeps v1.0 serving reloads the routes: from memory.
            deploy_changes(registered, {"version": "v2.0", "traffic": 50, "ab_test": "mem"})
            router.refresh(force=True)
            assert router.problems() == {}
            scores = {p.version: p.score for p in (router.predict(ROW) for _ in range(200))}
            assert scores["v1.0"] == before and "v2.0" in scores
        # A new process cannot load what is gone: a clear refusal naming the file.
        with serving(registered, log=False) as (fresh, _), pytest.raises(Unavailable) as caught:
            fresh.predict(ROW)
        assert artifact.name in str(caught.value)
    finally:
        artifact.write_bytes(original)  # the invariants are checked after the test


def _tamper(path: Path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original + b" ")  # still a loadable model, but not the registered bytes
    return original


def test_a_tampered_artifact_is_not_loaded_by_a_new_router(registered: Workspace) -> None:
    deploy_changes(registered, {"version": "v1.0"})
    artifact = model_path(registered, "v1.0")
    original = _tamper(artifact)
    try:
        with serving(registered, log=False, refresh_s=0.05) as (router, _):
            with pytest.raises(Unavailable, match="no longer matches its registered sha256"):
                router.predict(ROW)
            assert "sha256" in router.problems()["quality-predictor"]
            artifact.write_bytes(original)
            time.sleep(0.06)  # no commit happens: the failed load is retried anyway
            assert router.predict(ROW).version == "v1.0"
            assert router.problems() == {}
    finally:
        artifact.write_bytes(original)


def test_a_live_router_keeps_serving_when_a_new_deployment_cannot_load(
    registered: Workspace,
) -> None:
    deploy_changes(registered, {"version": "v1.0"})
    candidate = model_path(registered, "v2.0")
    with serving(registered, log=False, refresh_s=0.05) as (router, _):
        assert router.predict(ROW).version == "v1.0"
        # Deploy refuses an altered artifact, so the file changes after the commit, before
        # this router (which refreshes only when asked to predict) loads it.
        deploy_changes(registered, {"version": "v2.0"})
        original = _tamper(candidate)
        try:
            time.sleep(0.06)
            assert router.predict(ROW).version == "v1.0"  # the last routes that loaded
            assert "sha256" in router.problems()["quality-predictor"]
            candidate.write_bytes(original)
            time.sleep(0.06)
            assert router.predict(ROW).version == "v2.0"  # retried without another commit
            assert router.problems() == {}
        finally:
            candidate.write_bytes(original)


def test_nothing_deployed_is_unavailable(registered: Workspace) -> None:
    with serving(registered, log=False) as (router, _), pytest.raises(Unavailable):
        router.predict(ROW)


def test_the_direct_scorer_gives_exactly_what_inplace_predict_gives(
    registered: Workspace,
) -> None:
    import xgboost as xgb

    from engine.serving.router import HELD_ROWS, _DirectScorer, scorer

    rng = np.random.default_rng(12)
    rows = rng.normal(0, 50, (300, len(FEATURES))).astype(np.float32)
    rows[::5, 0] = np.nan
    for version in ("v1.0", "v2.0", "v3.0", "v4.0"):
        booster = xgb.Booster(model_file=str(model_path(registered, version)))
        fast = scorer(booster, len(FEATURES))
        assert isinstance(fast, _DirectScorer)
        expected = booster.inplace_predict(rows, validate_features=False)
        np.testing.assert_array_equal(fast(rows), expected)
        for i in range(0, 300, 37):
            np.testing.assert_array_equal(fast(rows[i : i + 1]), expected[i : i + 1])
        np.testing.assert_array_equal(fast(rows[::3]), expected[::3])  # not contiguous
        for n in (HELD_ROWS, HELD_ROWS + 1):  # the largest scored holding the GIL, and beyond
            np.testing.assert_array_equal(fast(rows[:n]), expected[:n])

    # Anything the direct call cannot serve exactly falls back to inplace_predict.
    class Wrapped:  # booster-like, without XGBoost's C handle
        def inplace_predict(self, x: np.ndarray, validate_features: bool = True) -> Any:
            return booster.inplace_predict(x, validate_features=validate_features)

    fallback = scorer(Wrapped(), len(FEATURES))
    assert not isinstance(fallback, _DirectScorer)
    np.testing.assert_array_equal(fallback(rows), expected)
    # A model with several outputs per row scores the same either way.
    x = rng.random((100, 3)).astype(np.float32)
    multi = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgb.DMatrix(x, label=rng.integers(0, 3, 100)),
        num_boost_round=2,
    )
    np.testing.assert_array_equal(
        scorer(multi, 3)(x[:4]).ravel(), multi.inplace_predict(x[:4]).ravel()
    )


def test_concurrent_threads_get_their_own_scores_and_every_row_is_logged(
    registered: Workspace,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    deploy_changes(
        registered, {"version": "v1.0"}, {"version": "v2.0", "traffic": 50, "ab_test": "c"}
    )
    rows = np.random.default_rng(5).random((4000, len(FEATURES))).tolist()
    keys = [f"user-{i}" for i in range(len(rows))]
    with serving(registered, interval=0.01) as (router, log):
        expected = [(p.version, p.score) for p in router.predict_batch(rows, keys=keys)]

        def work(part: int) -> list[tuple[str, float | None]]:
            return [
                (p.version, p.score)
                for p in (router.predict(rows[i], key=keys[i]) for i in range(part, 4000, 8))
            ]

        with ThreadPoolExecutor(8) as pool:
            parts = list(pool.map(work, range(8)))
    for part, got in enumerate(parts):  # single rows may be scored by compiled trees: 1e-4
        assert [v for v, _ in got] == [v for v, _ in expected[part::8]]
        assert [s for _, s in got] == _same([s for _, s in expected[part::8]])
    assert log is not None and log.stats().written == 8000 and log.stats().dropped == 0
