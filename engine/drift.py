"""Data drift: PSI per feature and on the score, KS as a second opinion.

The reference is binned once (quantile edges of the training data, stored at registration);
live data is counted into the same bins, so PSI over a window is a sum over ~10 numbers and
needs no scan of logged predictions. `compare` works on raw rows (the reference check and the
benchmark); `psi_from_counts` / `ks_from_counts` work on the rollup's counts.

PSI bands (DESIGN.md §6): < 0.1 stable, 0.1–0.25 warning, ≥ 0.25 critical.
"""

from __future__ import annotations

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


def build_reference(
    rows: np.ndarray, names: tuple[str, ...], bins: int = DEFAULT_BINS
) -> Reference:
    """Quantile edges per column; columns with few distinct values get fewer bins."""
    data = np.asarray(rows, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(names) or data.shape[0] < 2:
        raise ValueError(f"need a 2-D array with {len(names)} columns and ≥ 2 rows")
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    edges, shares = [], []
    for j in range(data.shape[1]):
        column = data[:, j][np.isfinite(data[:, j])]
        inner = np.unique(np.quantile(column, qs)) if column.size else np.array([])
        counts = bin_counts(column, inner)
        edges.append(tuple(float(v) for v in inner))
        shares.append(tuple(float(v) for v in counts / max(1, counts.sum())))
    return Reference(tuple(names), tuple(edges), tuple(shares), int(data.shape[0]))


def bin_counts(values: np.ndarray, inner_edges: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Counts per bin: bin i holds edges[i-1] < v ≤ edges[i] (len(edges) + 1 bins)."""
    edges = np.asarray(inner_edges, dtype=np.float64)
    idx = np.searchsorted(edges, values, side="left")
    return np.bincount(idx, minlength=edges.size + 1).astype(np.float64)


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
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def compare(
    reference: Reference, ref_rows: np.ndarray | None, current: np.ndarray
) -> list[FeatureDrift]:
    """PSI (binned on the reference's edges) and KS per feature, most drifted first.

    With `ref_rows` the KS figure is exact; without, it comes from the binned CDFs.
    """
    data = np.asarray(current, dtype=np.float64)
    out = []
    for j, name in enumerate(reference.names):
        column = data[:, j][np.isfinite(data[:, j])]
        counts = bin_counts(column, reference.edges[j])
        psi = psi_from_counts(reference.shares[j], counts)
        if ref_rows is not None:
            ref_col = np.asarray(ref_rows[:, j], dtype=np.float64)
            ks = ks_exact(ref_col[np.isfinite(ref_col)], column) if column.size else 0.0
        else:
            ks = ks_from_counts(reference.shares[j], counts)
        out.append(FeatureDrift(name, psi, ks, level(psi)))
    return sorted(out, key=lambda d: d.psi, reverse=True)
