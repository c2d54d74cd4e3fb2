"""PSI + KS data drift, 20 features, 10,000 reference rows against 10,000 current rows.

Target (DESIGN.md §8): ≤ 30 ms, ≥ 50× Evidently and ≥ 5× NannyML on the same data; issue 18:
≤ 20 ms (nothing gets slower).

Ours: `drift.build_reference` (quantile edges and shares) + `drift.compare` with the reference
rows (exact two-sample KS) and binned-only (KS from the binned CDFs, as the rollups give it).
Each matrix is sorted once (one `np.sort` over all columns, as float32 when that is exact;
the reference's sort shared by building and comparing, a `drift.Sample`);
quantiles, bin counts and the exact KS are read off the sorted columns with `searchsorted`
(checked against `scipy.stats.ks_2samp` below and in tests/test_drift.py).
Floors in the same process: PSI with numpy alone (`np.quantile` edges, `np.histogram` counts)
and `scipy.stats.ks_2samp` per feature.

Peers: Evidently's DataDriftPreset and NannyML's UnivariateDriftCalculator are not project
dependencies (and never become ones for this). If a Python with both is available — the path in
BEAST_BENCH_PEERS_PYTHON, else /tmp/peers/bin/python, made with
`python3.11 -m venv /tmp/peers && /tmp/peers/bin/pip install evidently nannyml "pandas<3"` —
the same arrays are run through them in a subprocess and their medians printed; otherwise the
benchmark says why it could not.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from engine.monitoring import drift
from tests.bench import workload
from tests.bench.conftest import machine, summary, verdict

ROWS = 10_000
RUNS = 20
TARGET_S = 0.030
ISSUE_TARGET_S = 0.020
PEERS_ENV = "BEAST_BENCH_PEERS_PYTHON"
PEERS_DEFAULT = Path("/tmp/peers/bin/python")
PEER_TIMEOUT_S = 300
EVIDENTLY_RUNS = 2  # after a warm-up; 4–10 s each on this machine
NANNYML_RUNS = 5

# Run by the peers' Python: the same .npy arrays, timed the same way; one JSON line out.
PEER_SCRIPT = """
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import logging
logging.disable(logging.WARNING)
import numpy as np
import pandas as pd

ref_x, cur_x, names = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3].split(",")
evidently_runs, nannyml_runs = int(sys.argv[4]), int(sys.argv[5])
ref = pd.DataFrame(ref_x, columns=names)
cur = pd.DataFrame(cur_x, columns=names)
out = {}

def timed(run, n):
    run()  # warm-up: lazy imports and caches are not charged to the median
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples

try:
    start = time.perf_counter()
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    out["evidently_import_s"] = time.perf_counter() - start
    out["evidently_version"] = evidently.__version__
    definition = DataDefinition(numerical_columns=names)

    def run_evidently():
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
        return snapshot.dict()

    out["evidently_s"] = timed(run_evidently, evidently_runs)
except Exception as exc:
    out["evidently_error"] = f"{type(exc).__name__}: {exc}"[:300]

try:
    start = time.perf_counter()
    import nannyml
    out["nannyml_import_s"] = time.perf_counter() - start
    out["nannyml_version"] = nannyml.__version__

    def run_nannyml():
        calc = nannyml.UnivariateDriftCalculator(
            column_names=names,
            continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
            chunk_number=1,
        )
        calc.fit(ref)
        return calc.calculate(cur).to_df()

    out["nannyml_s"] = timed(run_nannyml, nannyml_runs)
except Exception as exc:
    out["nannyml_error"] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(out))
"""


def numpy_psi(ref: np.ndarray, cur: np.ndarray, bins: int = drift.DEFAULT_BINS) -> list[float]:
    """The floor: PSI per feature with numpy alone (quantile edges, np.histogram)."""
    out = []
    for j in range(ref.shape[1]):
        edges = np.unique(np.quantile(ref[:, j], np.linspace(0, 1, bins + 1)))
        expected = np.histogram(ref[:, j], edges)[0] / ref.shape[0]
        actual = np.histogram(cur[:, j], edges)[0] / cur.shape[0]
        expected, actual = np.maximum(expected, 1e-4), np.maximum(actual, 1e-4)
        out.append(float(np.sum((actual - expected) * np.log(actual / expected))))
    return out


def scipy_ks(ref: np.ndarray, cur: np.ndarray) -> list[float]:
    return [float(stats.ks_2samp(ref[:, j], cur[:, j]).statistic) for j in range(ref.shape[1])]


def _reference_and_compare(
    ref: np.ndarray, names: tuple[str, ...], cur: np.ndarray
) -> list[drift.FeatureDrift]:
    """What a drift check does: build the reference and compare a window with it."""
    reference_rows = drift.Sample.of(ref)
    return drift.compare(drift.build_reference(reference_rows, names), reference_rows, cur)


def _median_of(run: Callable[[], Any], runs: int = RUNS) -> list[float]:
    run()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples


def _peers(tmp_path: Path, ref: np.ndarray, cur: np.ndarray) -> dict[str, Any]:
    python = Path(os.environ.get(PEERS_ENV, str(PEERS_DEFAULT)))
    if not python.exists():
        return {
            "unavailable": f"no peers' Python at {python} (set {PEERS_ENV}, or build "
            "/tmp/peers as the module docstring says)"
        }
    script = tmp_path / "peers.py"
    script.write_text(PEER_SCRIPT, encoding="utf-8")
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "cur.npy", cur)
    try:
        done = subprocess.run(
            [
                str(python),
                str(script),
                str(tmp_path / "ref.npy"),
                str(tmp_path / "cur.npy"),
                ",".join(workload.FEATURES),
                str(EVIDENTLY_RUNS),
                str(NANNYML_RUNS),
            ],
            capture_output=True,
            text=True,
            timeout=PEER_TIMEOUT_S,
            cwd=tmp_path,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"unavailable": f"the peers did not finish within {PEER_TIMEOUT_S} s"}
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"unavailable": f"the peers' Python failed ({done.returncode}): {tail[:300]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_psi_ks_drift_20_features_10k_rows(tmp_path: Path) -> None:
    ref = workload.generate(ROWS, seed=11).x.astype(np.float64)
    cur = workload.generate(ROWS, seed=12, drift=0.3).x.astype(np.float64)
    names = workload.FEATURES
    reference = drift.build_reference(ref, names)

    timings = {
        "build_reference + compare, exact KS (target; the reference sorted once)": _median_of(
            lambda: _reference_and_compare(ref, names, cur)
        ),
        "build_reference + compare, exact KS, the reference sorted twice": _median_of(
            lambda: drift.compare(drift.build_reference(ref, names), ref, cur)
        ),
        "build_reference + compare, binned KS": _median_of(
            lambda: drift.compare(drift.build_reference(ref, names), None, cur)
        ),
        "  build_reference alone": _median_of(lambda: drift.build_reference(ref, names)),
        "  compare, exact KS (reference built)": _median_of(
            lambda: drift.compare(reference, ref, cur)
        ),
        "  compare, binned only (reference built)": _median_of(
            lambda: drift.compare(reference, None, cur)
        ),
        "floor: numpy PSI (np.quantile + np.histogram)": _median_of(lambda: numpy_psi(ref, cur)),
        "floor: scipy.stats.ks_2samp per feature": _median_of(lambda: scipy_ks(ref, cur)),
        "floor: numpy PSI + scipy KS": _median_of(
            lambda: (numpy_psi(ref, cur), scipy_ks(ref, cur))
        ),
    }
    ours = statistics.median(
        timings["build_reference + compare, exact KS (target; the reference sorted once)"]
    )
    floor = statistics.median(timings["floor: numpy PSI + scipy KS"])

    found = {d.name: d for d in drift.compare(reference, ref, cur)}
    ks_diff = max(abs(found[n].ks - k) for n, k in zip(names, scipy_ks(ref, cur), strict=True))
    psi_diff = max(abs(found[n].psi - p) for n, p in zip(names, numpy_psi(ref, cur), strict=True))
    worst = sorted(found.values(), key=lambda d: d.psi, reverse=True)[:3]

    peers = _peers(tmp_path, ref, cur)

    print(f"\n[bench drift] {machine()} · {workload.load_average()}")
    print(f"  {len(names)} features, {ROWS:,} reference rows vs {ROWS:,} current (drift 0.3)")
    for name, samples in timings.items():
        print(summary(f"  {name}", samples))
    print(f"  ours (exact KS) vs numpy PSI + scipy KS: {ours / floor:.2f}× the floor's time")
    print(
        f"  agreement: max |KS − ks_2samp| {ks_diff:.2e}; max |PSI − np.histogram PSI| "
        f"{psi_diff:.3f} (bin edge conventions differ on ties); most drifted: "
        + ", ".join(f"{d.name} {d.psi:.2f}" for d in worst)
    )
    verdicts = [f"≤ {TARGET_S * 1000:.0f} ms: {'met' if ours <= TARGET_S else 'MISSED'}"]
    if "unavailable" in peers:
        print(f"  peers: {peers['unavailable']}")
        verdicts.append("peer ratios: not measured (no peers)")
    for peer, need in (("evidently", 50), ("nannyml", 5)):
        if f"{peer}_error" in peers:
            print(f"  {peer}: could not run: {peers[f'{peer}_error']}")
            verdicts.append(f"≥ {need}× {peer}: not measured")
        elif f"{peer}_s" in peers:
            samples = peers[f"{peer}_s"]
            ratio = statistics.median(samples) / ours
            print(
                summary(f"  peer: {peer} {peers[f'{peer}_version']}", samples)
                + f" (import {peers[f'{peer}_import_s']:.1f} s, not counted)"
                + f"  → ours is {ratio:.1f}× faster"
            )
            verdicts.append(f"≥ {need}× {peer}: {'met' if ratio >= need else 'MISSED'}")
    if "evidently_s" in peers:
        print(
            "  (Evidently: DataDriftPreset defaults — Wasserstein for numeric columns > 1000 rows"
        )
        print("   — timed through snapshot.dict(); NannyML: KS + Jensen-Shannon, one chunk)")
    print("  target " + "; ".join(verdicts))
    print(
        verdict(
            "drift",
            f"{ours * 1e3:.1f} ms",
            f"numpy PSI + scipy KS {floor * 1e3:.1f} ms",
            ours <= ISSUE_TARGET_S,
        )
    )
