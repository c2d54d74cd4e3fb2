"""Data drift: PSI per feature and on the score, KS as a second opinion.

The reference is binned once (quantile edges of the training data, stored at registration);
live data is counted into the same bins, so PSI over a window is a sum over ~10 numbers and
needs no scan of logged predictions. `compare` works on raw rows (the reference check and the
benchmark); `psi_from_counts` / `ks_from_counts` work on the rollup's counts.

PSI bands (DESIGN.md §6): < 0.1 stable, 0.1–0.25 warning, ≥ 0.25 critical, judged only
over enough values to be more than noise (`min_samples`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PSI_WARNING = 0.10
PSI_CRITICAL = 0.25
DEFAULT_BINS = 10
_EPS = 1e-4  # floor on a bin's share, so an empty bin does not make PSI infinite


@dataclass(frozen=True)
class Reference:
    """Per-feature inner bin edges (n_bins − 1 of them) and the reference's bin shares."""

    names: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    shares: tuple[tuple[float, ...], ...]
    n: int

    def to_json(self) -> dict[str, object]:
        return {
            "names": list(self.names),
            "edges": [list(e) for e in self.edges],
            "shares": [list(s) for s in self.shares],
            "n": self.n,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Reference:
        return cls(
            tuple(data["names"]),  # type: ignore[arg-type]
            tuple(tuple(float(v) for v in e) for e in data["edges"]),  # type: ignore[attr-defined]
            tuple(tuple(float(v) for v in s) for s in data["shares"]),  # type: ignore[attr-defined]
            int(data["n"]),  # type: ignore[call-overload]
        )


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    ks: float
    level: str  # "stable" | "warning" | "critical"


def level(psi: float) -> str:
    if psi >= PSI_CRITICAL:
        return "critical"
    if psi >= PSI_WARNING:
        return "warning"
    return "stable"


@dataclass(frozen=True)
class Sample:
    """Rows as each column's finite values, sorted: what PSI counts and the exact KS read.

    Sorting is most of the cost of both; a reference compared with many windows (or a
    reference built and then compared) is sorted once.
    """

    columns: tuple[np.ndarray, ...]
    rows: int

    @classmethod
    def of(cls, data: np.ndarray) -> Sample:
        values = np.asarray(data, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"need a 2-D array of rows, got shape {values.shape}")
        return cls(tuple(sorted_columns(values)), int(values.shape[0]))


def sample(data: np.ndarray | Sample) -> Sample:
    return data if isinstance(data, Sample) else Sample.of(data)


def build_reference(
    rows: np.ndarray | Sample, names: tuple[str, ...], bins: int = DEFAULT_BINS
) -> Reference:
    """Quantile edges per column; columns with few distinct values get fewer bins.

    The matrix is sorted once (one `np.sort` over all columns, or a `Sample` already);
    quantiles and bin counts are then read off each sorted column.
    """
    data = sample(rows)
    if len(data.columns) != len(names) or data.rows < 2:
        raise ValueError(f"need a 2-D array with {len(names)} columns and ≥ 2 rows")
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    edges, shares = [], []
    for column in data.columns:
        inner = np.unique(_quantiles(column, qs)) if column.size else np.array([])
        counts = sorted_bin_counts(column, inner)
        edges.append(tuple(float(v) for v in inner))
        shares.append(tuple(float(v) for v in counts / max(1, counts.sum())))
    return Reference(tuple(names), tuple(edges), tuple(shares), data.rows)


def sorted_columns(data: np.ndarray) -> list[np.ndarray]:
    """Each column's finite values, sorted (one sort for the whole matrix).

    Values that float32 holds exactly (logged features always are) are sorted as float32:
    the same order and the same ties, at two thirds of the cost.
    """
    values = np.asarray(data, dtype=np.float64).T
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = values.astype(np.float32)
        exact = not (narrow != values).any()  # NaN != NaN: data with NaN sorts as float64
    ordered = np.sort(narrow if exact else values, axis=1)
    finite = np.isfinite(ordered)
    clean = finite.all(axis=1)
    return [row if clean[j] else row[finite[j]] for j, row in enumerate(ordered)]


def _quantiles(ordered: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """`np.quantile(values, qs)` (its default "linear" method) on already sorted values."""
    position = qs * (ordered.size - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, ordered.size - 1)
    t = position - below
    a, b = ordered[below].astype(np.float64), ordered[above].astype(np.float64)
    diff = b - a
    # numpy's lerp: from the nearer end, so that t = 1 gives b exactly.
    values: np.ndarray = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return values


def sorted_bin_counts(
    ordered: np.ndarray, inner_edges: np.ndarray | tuple[float, ...]
) -> np.ndarray:
    """`bin_counts` for sorted values: where each edge falls, not where each value falls."""
    at_or_below = np.searchsorted(ordered, np.asarray(inner_edges, dtype=np.float64), "right")
    return np.diff(np.concatenate(([0], at_or_below, [ordered.size]))).astype(np.float64)


def bin_counts(values: np.ndarray, inner_edges: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Counts per bin: bin i holds edges[i-1] < v ≤ edges[i] (len(edges) + 1 bins)."""
    edges = np.asarray(inner_edges, dtype=np.float64)
    idx = np.searchsorted(edges, values, side="left")
    return np.bincount(idx, minlength=edges.size + 1).astype(np.float64)


def min_samples(reference: Reference) -> int:
    """The fewest live values whose PSI against `reference` says more than sampling noise.

    With no drift at all, PSI over n values counted into B bins is about χ²(B − 1) / n, so
    its expectation is (B − 1) / n: 0.30 for 30 values in 10 bins, past the critical band on
    noise alone (and one empty bin adds ~0.69 by itself). Asking for n ≥ 4 (B − 1) / 0.1
    keeps that expectation at a quarter of the warning band (360 values for 10 bins); below
    it the answer is "not enough data", never an alarm.
    """
    bins = max((len(e) + 1 for e in reference.edges), default=1)
    return math.ceil(4 * (bins - 1) / PSI_WARNING - 1e-9)


def psi_from_counts(ref_shares: np.ndarray | tuple[float, ...], counts: np.ndarray) -> float:
    """Population stability index of live counts against reference shares."""
    expected = np.maximum(np.asarray(ref_shares, dtype=np.float64), _EPS)
    total = counts.sum()
    if total <= 0:
        return 0.0
    actual = np.maximum(counts / total, _EPS)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_from_counts(ref_shares: np.ndarray | tuple[float, ...], counts: np.ndarray) -> float:
    """KS distance between the binned CDFs (a lower bound of the exact statistic)."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    return float(np.max(np.abs(np.cumsum(ref_shares) - np.cumsum(counts / total))))


def ks_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic on raw values (same as scipy.stats.ks_2samp's statistic)."""
    return ks_sorted(np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64)))


def ks_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """The exact two-sample KS statistic of two sorted samples.

    The empirical CDFs only step at sample values, so the largest gap is at one of them, and
    both CDFs are needed there — as `scipy.stats.ks_2samp` evaluates them over the pooled
    sample, with the same divisions, hence the same figure. One `searchsorted` gives
    `below[i]` = #b < a[i]; everything else follows in linear passes:
    - #a ≤ b[j] = #{i : below[i] ≤ j} (a[i] ≤ b[j] exactly when fewer than j + 1 values of b
      lie below a[i]): a cumulative count of `below`;
    - #b ≤ a[i] = `below[i]`, or the end of b's run of ties when b[below[i]] equals a[i];
    - #a ≤ a[i] and #b ≤ b[j]: the ends of each sample's own runs of ties.
    """
    n, m = a.size, b.size
    if n == 0 or m == 0:
        return 0.0
    below = np.searchsorted(b, a, "left")
    b_runs = _at_or_below_self(b)
    at = np.minimum(below, m - 1)
    tied = (below < m) & (b[at] == a)
    b_le_a = np.where(tied, b_runs[at], below)
    a_le_b = np.cumsum(np.bincount(below, minlength=m + 1))[:m]
    at_a = np.abs(_at_or_below_self(a) / n - b_le_a / m)
    at_b = np.abs(a_le_b / n - b_runs / m)
    return float(max(at_a.max(), at_b.max()))


def _at_or_below_self(ordered: np.ndarray) -> np.ndarray:
    """For each value of a sorted array, how many values are ≤ it (the end of its run of
    ties): `searchsorted(ordered, ordered, "right")` in a few linear passes."""
    ends = np.flatnonzero(np.concatenate((ordered[1:] != ordered[:-1], [True]))) + 1
    return np.repeat(ends, np.diff(ends, prepend=0))


def compare(
    reference: Reference, ref_rows: np.ndarray | Sample | None, current: np.ndarray | Sample
) -> list[FeatureDrift]:
    """PSI (binned on the reference's edges) and KS per feature, most drifted first.

    With `ref_rows` the KS figure is exact; without, it comes from the binned CDFs. Each
    matrix is sorted once (pass a `Sample` to reuse a sort); counts and KS are then read off
    the sorted columns.
    """
    columns = sample(current).columns
    ref_columns = sample(ref_rows).columns if ref_rows is not None else None
    out = []
    for j, name in enumerate(reference.names):
        column = columns[j]
        counts = sorted_bin_counts(column, reference.edges[j])
        psi = psi_from_counts(reference.shares[j], counts)
        if ref_columns is not None:
            ks = ks_sorted(ref_columns[j], column) if column.size else 0.0
        else:
            ks = ks_from_counts(reference.shares[j], counts)
        out.append(FeatureDrift(name, psi, ks, level(psi)))
    return sorted(out, key=lambda d: d.psi, reverse=True)
