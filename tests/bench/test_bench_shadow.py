"""Production's one-row latency with a 100% shadow against without (issue 17: ≤ 1.1× at p99).

The workspace is the serving benchmark's: 200-tree, depth-6 models on 20 features, v1.0 in
production and v2.0 (another model of the same size) registered; one Router with a running
PredictionLog (its writer every 50 ms). Rounds alternate between v2.0 shadowing production at
100% (`Engine.shadow`) and no shadow (`Engine.shadow_stop`), on the same router, log and rows,
so load from other processes on this 2-core machine falls on both alike; before a round
without the shadow the scorer's queue is drained, so none of its work lands there.

Each call is `Router.predict` on a dict of features (validation, routing, scoring, the log's
queue and, with the shadow, its row handed to the scorer): the latency production's client
sees. Calls are back to back (the heaviest case for the scorer: it scores a row for every one),
then spaced by a short sleep (closer to a served request rate).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router
from tests.bench import workload
from tests.bench.conftest import machine
from tests.bench.test_bench_serving import line, pct
from tests.helpers import settle_compiled

TARGET_P99_RATIO = 1.1
WARMUP = 300
ROUNDS = 24
PER_ROUND = 250  # 12 rounds × 250 = 3,000 timed calls per variant and pacing
PAUSE_S = 0.0005  # the spaced variant: a request every ~0.5 ms plus its own time


def _rounds(
    toggle: Callable[[bool], None], call: Callable[[int], Any], pause: float
) -> list[list[float]]:
    """The timed calls of each round; even rounds with the shadow, odd ones without."""
    rounds: list[list[float]] = []
    clock = time.perf_counter_ns
    for r in range(ROUNDS):
        toggle(r % 2 == 0)
        for _ in range(WARMUP // 10):
            call(0)
        out: list[float] = []
        for i in range(r * PER_ROUND, (r + 1) * PER_ROUND):
            t0 = clock()
            call(i)
            out.append(clock() - t0)
            if pause:
                time.sleep(pause)
        rounds.append(out)
    return rounds


def _pair_ratio(rounds: list[list[float]]) -> float:
    """The median over adjacent pairs of rounds (with, then without) of their p99 ratio: a
    burst of load from another process spoils one pair, not the figure."""
    return statistics.median(
        pct(rounds[r], 99) / pct(rounds[r + 1], 99) for r in range(0, len(rounds) - 1, 2)
    )


def test_production_p99_with_a_100pct_shadow(tmp_path: Path) -> None:
    engine = workload.workspace(tmp_path)
    engine.register(workload.model_file(engine.workspace, "v2.0", seed=2))
    settle_compiled(engine)
    log = PredictionLog(
        engine.workspace.db_path, tolerance=engine.config.thresholds.tolerance_points
    ).start()
    router = Router(engine, log=log)
    assert router.shadows is not None
    scorer = router.shadows
    data = workload.generate(2048, seed=5)
    rows = [dict(zip(workload.FEATURES, map(float, r), strict=True)) for r in data.x]
    n = len(rows)

    def call(i: int) -> Any:
        return router.predict(rows[i % n])

    def toggle(on: bool) -> None:
        running = bool(engine.status().shadows)
        if on and not running:
            engine.shadow(version="v2.0", model=workload.LINE)
        elif not on and running:
            engine.shadow_stop(model=workload.LINE)
        router.refresh(force=True)
        assert (router.route(workload.LINE).shadow is not None) == on
        scorer.flush()  # nothing of the shadow's left to do in a round without it

    for i in range(WARMUP):
        call(i)
    results = {pause: _rounds(toggle, call, pause) for pause in (0.0, PAUSE_S)}
    scorer.flush()
    log.flush()
    stats, logged = scorer.stats(), log.stats()
    router.close()
    log.close()
    engine.close()

    print(f"\n[bench shadow: production one row] {machine()} · {workload.load_average()}")
    print(
        f"  model: {workload.TREES} trees of depth {workload.DEPTH}, {len(workload.FEATURES)} "
        f"features, nthread=1; shadow v2.0 of the same size at 100%; budget "
        f"{engine.config.shadow.shadow_budget_ms:g} ms; writer every 50 ms"
    )
    for pause, rounds in results.items():
        pacing = "back to back" if not pause else f"a call every {pause * 1e3:g} ms + its time"
        with_shadow = [t for r in rounds[0::2] for t in r]
        without = [t for r in rounds[1::2] for t in r]
        print(f"  {pacing}:")
        print(line("without a shadow", without))
        print(line("with a 100% shadow", with_shadow))
        pooled = pct(with_shadow, 99) / pct(without, 99)
        paired = _pair_ratio(rounds)
        p50 = statistics.median(with_shadow) / statistics.median(without)
        verdict = "met" if paired <= TARGET_P99_RATIO else "MISSED"
        print(
            f"  p99 ratio: pooled {pooled:.2f}×, median of {len(rounds) // 2} adjacent round "
            f"pairs {paired:.2f}× (p50 {p50:.2f}×) → target ≤ {TARGET_P99_RATIO}×: {verdict}"
        )
    print(
        f"  shadow: {stats.scored:,} rows scored, {stats.dropped:,} dropped over the budget or "
        f"a full queue, {stats.write_failed} not written; log: {logged.written:,} written, "
        f"{logged.dropped} dropped"
    )
    assert stats.scored > 0 and logged.dropped == 0
