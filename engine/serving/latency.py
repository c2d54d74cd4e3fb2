"""Latency histograms with log-spaced buckets: percentiles from rollups, within ±5%.

Bucket i holds latencies in [B·r^(i−1), B·r^i) microseconds (bucket 0: below B), with
B = 10 µs and r = 1.1, up to about 100 s. Adding histograms is adding arrays, so a window's
p50/p95/p99 come from summing its minutes, never from a scan of raw rows.
"""

from __future__ import annotations

import math

import numpy as np

BASE_US = 10.0
RATIO = 1.1
BUCKETS = 170  # BASE_US · RATIO^169 ≈ 100 s; slower lands in the last bucket


def bucket(latency_us: float) -> int:
    if latency_us < BASE_US:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log(latency_us / BASE_US) / math.log(RATIO)))


def buckets(latencies_us: np.ndarray) -> np.ndarray:
    values = np.maximum(np.asarray(latencies_us, dtype=np.float64), 1e-9)
    idx = np.where(
        values < BASE_US,
        0,
        1 + np.floor(np.log(values / BASE_US) / math.log(RATIO)).astype(np.int64),
    )
    return np.minimum(idx, BUCKETS - 1).astype(np.int64)


def histogram(latencies_us: np.ndarray) -> np.ndarray:
    return np.bincount(buckets(latencies_us), minlength=BUCKETS).astype(np.int64)


def upper_us(index: int) -> float:
    """The upper edge of a bucket (a percentile reports this edge: never an underestimate)."""
    return BASE_US * RATIO**index


def percentile(hist: np.ndarray, q: float) -> float | None:
    """The q-th percentile (0–100) in milliseconds, or None for an empty histogram."""
    total = int(hist.sum())
    if total == 0:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    index = int(np.searchsorted(np.cumsum(hist), rank))
    return upper_us(index) / 1000.0
