"""Benchmarks print their figures with the machine they ran on; `make bench` runs them."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence


def machine() -> str:
    return f"{platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"


def summary(name: str, samples: Sequence[float], unit: str = "ms", scale: float = 1000.0) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"{name}: median {statistics.median(ordered) * scale:.1f} {unit}, "
        f"p90 {p90 * scale:.1f} {unit}, n={len(ordered)}"
    )
