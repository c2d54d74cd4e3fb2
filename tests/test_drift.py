"""PSI and KS against independent numpy/scipy computations on the same data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from engine.monitoring import drift


def independent_psi(ref: np.ndarray, cur: np.ndarray, inner_edges: tuple[float, ...]) -> float:
    # np.histogram with explicit outer edges; right-closed bins like drift.bin_counts.
    edges = np.concatenate([[-np.inf], inner_edges, [np.inf]])
    ref_c = np.array([np.sum((ref > lo) & (ref <= hi)) for lo, hi in itertools.pairwise(edges)])
    cur_c = np.array([np.sum((cur > lo) & (cur <= hi)) for lo, hi in itertools.pairwise(edges)])
    e = np.maximum(ref_c / ref_c.sum(), 1e-4)
    a = np.maximum(cur_c / cur_c.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 2.0])
def test_psi_and_ks_match_independent_computations(shift: float) -> None:
    rng = np.random.default_rng(42)
    ref = rng.normal(size=(10_000, 20))
    cur = rng.normal(loc=shift, size=(10_000, 20))
    names = tuple(f"f{i}" for i in range(20))
    reference = drift.build_reference(ref, names)
    result = {d.name: d for d in drift.compare(reference, ref, cur)}
    for j, name in enumerate(names):
        expected_psi = independent_psi(ref[:, j], cur[:, j], reference.edges[j])
        assert result[name].psi == pytest.approx(expected_psi, rel=1e-9, abs=1e-12)
        assert result[name].ks == pytest.approx(stats.ks_2samp(ref[:, j], cur[:, j]).statistic)


def test_psi_over_its_minimum_sample_is_signal_and_below_it_noise() -> None:
    rng = np.random.default_rng(5)
    names = tuple(f"f{i}" for i in range(20))
    reference = drift.build_reference(rng.normal(size=(10_000, 20)), names)
    need = drift.min_samples(reference)
    assert need == 360  # ten bins: 4 × 9 / 0.1

    def worst(n: int, seed: int, shift: float = 0.0) -> float:
        live = np.random.default_rng(1000 + seed).normal(loc=shift, size=(n, 20))
        return max(
            drift.psi_from_counts(reference.shares[j], drift.bin_counts(live[:, j], edges))
            for j, edges in enumerate(reference.edges)
        )

    # No drift at all: at the minimum, the worst of 20 features warns in ≤ 1% of samples ...
    assert sum(worst(need, s) >= drift.PSI_WARNING for s in range(200)) <= 2
    # ... while 30 values (monitoring.min_samples) cross the critical band most of the time.
    assert sum(worst(30, s) >= drift.PSI_CRITICAL for s in range(200)) >= 100
    # A real shift of half a standard deviation is seen at the minimum every time.
    assert all(worst(need, s, shift=0.5) >= drift.PSI_WARNING for s in range(50))


def test_levels_and_ordering() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(5000, 3))
    cur = ref.copy()
    cur[:, 1] += 1.5  # strongly drifted
    cur[:, 2] += 0.35  # mildly drifted
    reference = drift.build_reference(ref, ("a", "b", "c"))
    ranked = drift.compare(reference, None, cur)
    assert [d.name for d in ranked] == ["b", "c", "a"]
    assert ranked[0].level == "critical" and ranked[2].level == "stable"
    assert ranked[1].level in ("warning", "critical")
    # Binned KS is a lower bound of the exact statistic.
    exact = {d.name: d.ks for d in drift.compare(reference, ref, cur)}
    assert all(d.ks <= exact[d.name] + 1e-12 for d in ranked)


def test_reference_round_trips_and_handles_constant_columns() -> None:
    rows = np.column_stack([np.ones(100), np.arange(100.0)])
    reference = drift.build_reference(rows, ("const", "ramp"))
    assert len(reference.edges[0]) == 1 and len(reference.edges[1]) == 9
    assert drift.Reference.from_json(reference.to_json()) == reference
    assert drift.compare(reference, None, rows)[0].psi == pytest.approx(0.0, abs=1e-9)


def test_exact_ks_matches_scipy_with_ties_missing_values_and_float32_data() -> None:
    """The sorted-column KS against `scipy.stats.ks_2samp` where shortcuts could go wrong:
    heavy ties (counts), NaN and ±inf (left out, as before), and float32-exact data (sorted
    as float32) beside float64 data that float32 cannot hold."""
    rng = np.random.default_rng(7)
    n = 3000
    ref = np.column_stack(
        [
            rng.poisson(3, n).astype(float),
            rng.normal(size=n).astype(np.float32).astype(float),
            rng.normal(size=n) * 1e-9 + 1.0,  # distinct only in float64
            rng.integers(0, 2, n).astype(float),
        ]
    )
    cur = np.column_stack(
        [
            rng.poisson(3.4, n).astype(float),
            rng.normal(0.2, size=n).astype(np.float32).astype(float),
            rng.normal(size=n) * 1e-9 + 1.0 + 3e-10,
            rng.integers(0, 2, n).astype(float),
        ]
    )
    cur[::17, 1] = np.nan
    cur[::29, 0] = np.inf
    names = ("counts", "f32", "fine", "binary")
    reference = drift.build_reference(ref, names)
    result = {d.name: d for d in drift.compare(reference, ref, cur)}
    for j, name in enumerate(names):
        finite = cur[:, j][np.isfinite(cur[:, j])]
        expected = stats.ks_2samp(ref[:, j], finite).statistic
        assert result[name].ks == pytest.approx(expected, rel=1e-12, abs=1e-15), name
        assert result[name].psi == pytest.approx(
            independent_psi(ref[:, j], finite, reference.edges[j]), rel=1e-9, abs=1e-12
        )
        assert drift.ks_exact(ref[:, j], finite) == result[name].ks
    sorted_once = drift.Sample.of(ref)
    assert drift.build_reference(sorted_once, names) == reference
    assert drift.compare(reference, sorted_once, drift.Sample.of(cur)) == list(result.values())
    quantiles = np.quantile(ref[:, 2], np.linspace(0, 1, drift.DEFAULT_BINS + 1)[1:-1])
    assert reference.edges[2] == tuple(float(v) for v in np.unique(quantiles))
