"""Compiled trees for single rows: built with the machine's C compiler (treelite + tl2cgen),
verified against XGBoost, used for single rows only once verified; batches stay on XGBoost."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine, Workspace
from engine.core.config import COMPILED_TREES_ENV
from engine.registry import compiled
from engine.registry.warm_validator import WarmValidator
from engine.serving.compiled_scorer import RowScorer
from tests.helpers import FEATURES, beast, model_path, set_config, train_model
from tests.serving_helpers import serving


@pytest.fixture(autouse=True)
def _compiled_trees_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite turns compiled trees off (tests/conftest.py); here they are the subject."""
    monkeypatch.delenv(COMPILED_TREES_ENV, raising=False)


OBJECTIVES = ("reg:squarederror", "binary:logistic", "reg:logistic", "count:poisson")


@dataclass(frozen=True)
class Spec:
    """A small random model: its training data's seed, shape, objective and base score."""

    seed: int
    width: int
    depth: int
    rounds: int
    objective: str
    base: float | None


SPECS = st.builds(
    Spec,
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(1, 8),
    depth=st.integers(1, 6),
    rounds=st.integers(1, 30),
    objective=st.sampled_from(OBJECTIVES),
    base=st.one_of(st.none(), st.floats(0.05, 0.95)),
)


def _train(path: Path, spec: Spec) -> xgb.Booster:
    rng = np.random.default_rng(spec.seed)
    x = rng.normal(0, 3, (300, spec.width)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan  # trees learn default directions
    signal = np.nansum(x[:, :2], axis=1) + rng.normal(0, 0.5, 300)
    if spec.objective in ("binary:logistic", "reg:logistic"):
        y = (signal > 0).astype(np.float32)
    elif spec.objective == "count:poisson":
        y = rng.poisson(np.exp(np.clip(signal, -2, 2))).astype(np.float32)
    else:
        y = 40 + 10 * signal
    params: dict[str, object] = {
        "objective": spec.objective,
        "max_depth": spec.depth,
        "nthread": 1,
    }
    if spec.base is not None:
        params["base_score"] = spec.base
    booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=spec.rounds)
    booster.save_model(str(path))
    return booster


def _build(path: Path, cache: Path) -> compiled.Verdict:
    raw = path.read_bytes()
    return compiled.build(raw, hashlib.sha256(raw).hexdigest(), cache)


def _row_scorer(booster: xgb.Booster, path: Path, cache: Path) -> RowScorer:
    def standard(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = booster.inplace_predict(x, validate_features=False)
        return out

    return RowScorer(
        standard,
        booster,
        width=booster.num_features(),
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        cache=cache,
        build=False,
    )


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=SPECS, data=st.data())
def test_compiled_scores_agree_with_xgboost_on_random_rows(
    tmp_path_factory: pytest.TempPathFactory, spec: Spec, data: st.DataObject
) -> None:
    where = tmp_path_factory.mktemp("model")
    path = where / "m.json"
    booster = _train(path, spec)
    width = spec.width
    verdict = _build(path, where / "cache")
    assert verdict.scorer == "compiled", verdict.reason
    assert verdict.max_error is not None and verdict.max_error <= compiled.TOLERANCE * 100
    value = st.one_of(st.floats(-20, 20, width=32), st.just(float("nan")))
    rows = np.asarray(
        data.draw(
            st.lists(st.lists(value, min_size=width, max_size=width), min_size=1, max_size=30)
        ),
        dtype=np.float32,
    )
    scorer = _row_scorer(booster, path, where / "cache")
    assert scorer.scorer == "compiled", scorer.reason
    expected = booster.inplace_predict(rows, validate_features=False).ravel()
    for i, row in enumerate(rows):
        got = scorer(np.ascontiguousarray(row[None, :])).item(0)
        assert abs(got - expected[i]) <= compiled.TOLERANCE * max(1.0, abs(expected[i]))


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two regressors of the same shape, the second compiled into `cache` under its sha256."""
    where = tmp_path_factory.mktemp("pair")
    first = train_model(where / "a.json", seed=1, rounds=8)
    second = train_model(where / "b.json", seed=2, rounds=8)
    cache = where / "cache"
    assert _build(first, cache).scorer == "compiled"
    assert _build(second, cache).scorer == "compiled"
    return first, second, cache


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_cache(cache: Path, into: Path) -> Path:
    into.mkdir()
    for item in cache.iterdir():
        if item.is_file():
            (into / item.name).write_bytes(item.read_bytes())
    return into


def _booster(path: Path) -> xgb.Booster:
    booster = xgb.Booster(params={"nthread": 1})
    booster.load_model(str(path))
    return booster


def test_a_verdict_naming_another_models_library_is_served_by_xgboost(
    two_models: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    first, second, built = two_models
    cache = _copy_cache(built, tmp_path / "cache")
    # The first model's library and verdict, swapped in as the second's: the verdict's own
    # checks pass (its library's sha256 is the recorded one), its scores do not.
    a, b = _sha(first), _sha(second)
    compiled.library_path(cache, a).replace(compiled.library_path(cache, b))
    doc = json.loads(compiled.verdict_path(cache, a).read_text())
    compiled.verdict_path(cache, b).write_text(json.dumps(dict(doc, sha256=b)))
    booster = _booster(second)
    scorer = _row_scorer(booster, second, cache)
    assert scorer.scorer == "xgboost"
    assert "differ" in scorer.reason
    row = np.full((1, len(FEATURES)), 0.5, dtype=np.float32)
    assert scorer(row).item(0) == booster.inplace_predict(row).item(0)


def test_a_library_changed_since_its_verdict_is_never_loaded(
    two_models: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, second, built = two_models
    cache = _copy_cache(built, tmp_path / "cache")
    library = compiled.library_path(cache, _sha(second))
    library.write_bytes(library.read_bytes() + b"\0")
    scorer = _row_scorer(_booster(second), second, cache)
    assert (scorer.scorer, scorer.reason) == (
        "xgboost",
        "the compiled library is missing or changed since it was verified",
    )


def test_compiled_trees_that_disagree_are_not_used(
    two_models: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _, _ = two_models
    real = compiled.score_rows_with_library
    monkeypatch.setattr(
        compiled, "score_rows_with_library", lambda lib, rows: real(lib, rows) + 0.5
    )
    verdict = _build(first, tmp_path / "cache")
    assert verdict.scorer == "gtil"  # GTIL agrees: it serves single rows instead
    assert "the compiled trees disagree with XGBoost: row" in verdict.reason
    assert not compiled.library_path(tmp_path / "cache", _sha(first)).exists()
    monkeypatch.setattr(compiled, "max_error", lambda got, expected: None)
    (tmp_path / "cache").joinpath(f"{_sha(first)}.verdict.json").unlink()
    verdict = _build(first, tmp_path / "cache")
    assert verdict.scorer == "xgboost"
    assert "GTIL disagrees with XGBoost too" in verdict.reason
    scorer = _row_scorer(_booster(first), first, tmp_path / "cache")
    assert (scorer.scorer, scorer.settled) == ("xgboost", True)


def test_without_a_c_compiler_gtil_serves_single_rows(
    two_models: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _, _ = two_models
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    verdict = _build(first, tmp_path / "cache")
    assert verdict.scorer == "gtil"
    assert verdict.reason.endswith(f"no C compiler ($CC={tmp_path / 'no-such-cc'} not found)")
    booster = _booster(first)
    scorer = _row_scorer(booster, first, tmp_path / "cache")
    assert scorer.scorer == "gtil"
    row = np.asarray([[0.1, np.nan, 0.7, 0.2, 0.9]], dtype=np.float32)
    assert abs(scorer(row).item(0) - booster.inplace_predict(row).item(0)) <= 1e-4 * 100


def _wait_for_verdict(cache: Path, sha256: str) -> compiled.Verdict:
    deadline = time.monotonic() + 120
    while (verdict := compiled.read_verdict(cache, sha256)) is None:
        assert time.monotonic() < deadline, "no verdict within 120 s"
        time.sleep(0.1)
    return verdict


def test_a_registered_version_serves_single_rows_compiled_once_its_child_is_done(
    workspace: Workspace,
) -> None:
    path = train_model(model_path(workspace, "v1.0"), seed=3, rounds=20)
    with closing(Engine(workspace, actor="tester")) as engine:
        engine.register(path)  # returns on the validator's verdict, compiled or not
        engine.deploy(version="v1.0")
    cache = compiled.cache_dir(workspace.models_dir)
    with serving(workspace, refresh_s=0) as (router, _):
        verdict = _wait_for_verdict(cache, _sha(path))
        assert verdict.scorer == "compiled", verdict.reason
        router.refresh()
        scorer = router.route().production.score
        assert isinstance(scorer, RowScorer)
        assert scorer.scorer == "compiled", scorer.reason
        booster = _booster(path)
        rows = np.random.default_rng(0).random((50, len(FEATURES))).astype(np.float32)
        expected = booster.inplace_predict(rows)
        for row, want in zip(rows, expected, strict=True):
            served = router.predict(dict(zip(FEATURES, row.tolist(), strict=True)))
            assert served.score is not None and abs(served.score - want) <= 1e-4 * 100
        batch = router.predict_batch([dict(zip(FEATURES, r.tolist(), strict=True)) for r in rows])
        assert [p.score for p in batch] == expected.tolist()  # XGBoost's own, to the bit
    shown = json.loads(beast(workspace, "models", "--json").stdout)["models"]
    assert [(m["scorer"], m["scorer_reason"]) for m in shown] == [("compiled", verdict.reason)]
    text = beast(workspace, "models").stdout
    assert f"v1.0: compiled — {verdict.reason}" in text


def test_the_warm_validator_compiles_in_its_child_too(workspace: Workspace) -> None:
    path = train_model(model_path(workspace, "v1.0"), seed=4, rounds=6)
    validator = WarmValidator().start()
    try:
        with closing(Engine(workspace, actor="tester")) as engine:
            engine.register(path, validator=validator)
    finally:
        validator.close()
    verdict = _wait_for_verdict(compiled.cache_dir(workspace.models_dir), _sha(path))
    assert verdict.scorer == "compiled", verdict.reason


def test_a_router_asks_for_the_compiled_form_of_a_version_that_has_none(
    workspace: Workspace,
) -> None:
    path = train_model(model_path(workspace, "v1.0"), seed=5, rounds=6)
    with closing(Engine(workspace, actor="tester")) as engine:
        engine.register(path)
        engine.deploy(version="v1.0")
    cache = compiled.cache_dir(workspace.models_dir)
    _wait_for_verdict(cache, _sha(path))
    for built in cache.iterdir():  # as a version registered before compiled trees were
        built.unlink()
    assert compiled.status(cache, _sha(path))[0] == "xgboost"
    with serving(workspace, refresh_s=0) as (router, _):
        scorer = router.route().production.score
        assert isinstance(scorer, RowScorer)
        assert scorer.scorer == "xgboost"  # until its compiled form is verified
        _wait_for_verdict(cache, _sha(path))
        router.predict(dict.fromkeys(FEATURES, 0.5))  # its refresh takes the verdict in
        assert scorer.scorer == "compiled", scorer.reason


def test_a_row_of_another_width_goes_to_xgboost(
    two_models: tuple[Path, Path, Path],
) -> None:
    first, _, cache = two_models
    booster = _booster(first)
    scorer = _row_scorer(booster, first, cache)
    assert scorer.scorer == "compiled"
    with pytest.raises(xgb.core.XGBoostError):
        scorer(np.zeros((1, 3), dtype=np.float32))  # XGBoost's refusal, not a wild read


def test_a_workspace_where_nothing_can_be_compiled_registers_and_serves(
    workspace: Workspace,
) -> None:
    compiled.cache_dir(workspace.models_dir).write_text("not a directory")
    path = train_model(model_path(workspace, "v1.0"), seed=6, rounds=4)
    with closing(Engine(workspace, actor="tester")) as engine:
        engine.register(path)
        engine.deploy(version="v1.0")
    with serving(workspace) as (router, _):
        served = router.predict(dict.fromkeys(FEATURES, 0.5))
        row = np.full((1, len(FEATURES)), 0.5, dtype=np.float32)
        assert served.score == _booster(path).inplace_predict(row).item(0)
        assert router.route().production.score.scorer == "xgboost"  # type: ignore[attr-defined]
    shown = json.loads(beast(workspace, "models", "--json").stdout)["models"]
    assert [m["scorer"] for m in shown] == ["xgboost"]


def test_compiled_trees_off_builds_nothing_and_serves_xgboost(workspace: Workspace) -> None:
    set_config(workspace, compiled_trees="false")
    path = train_model(model_path(workspace, "v1.0"), seed=3, rounds=5)
    with closing(Engine(workspace, actor="tester")) as engine:
        engine.register(path)
        engine.deploy(version="v1.0")
    cache = compiled.cache_dir(workspace.models_dir)
    with serving(workspace, refresh_s=0) as (router, _):
        scorer = router.route().production.score
        assert isinstance(scorer, RowScorer)
        assert (scorer.scorer, scorer.settled) == ("xgboost", True)
        assert "compiled trees are off" in scorer.reason
    # The validator child takes a build's lock before registration returns: none was taken.
    assert not cache.exists() or list(cache.iterdir()) == []
    shown = json.loads(beast(workspace, "models", "--json").stdout)["models"]
    assert [m["scorer"] for m in shown] == ["xgboost"]
    assert "compiled trees are off" in shown[0]["scorer_reason"]


def test_the_environment_switch_overrides_the_config(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # config.toml says true (beast init's default); BEAST_COMPILED_TREES=false wins.
    monkeypatch.setenv(COMPILED_TREES_ENV, "false")
    path = train_model(model_path(workspace, "v1.0"), seed=7, rounds=5)
    with closing(Engine(workspace, actor="tester")) as engine:
        engine.register(path)
    cache = compiled.cache_dir(workspace.models_dir)
    assert not cache.exists() or list(cache.iterdir()) == []
    shown = json.loads(beast(workspace, "models", "--json").stdout)["models"]
    assert "compiled trees are off" in shown[0]["scorer_reason"]
    refused = beast(workspace, "models", env={COMPILED_TREES_ENV: "maybe"})
    assert refused.returncode != 0
    assert "BEAST_COMPILED_TREES='maybe': must be true or false" in refused.stderr
