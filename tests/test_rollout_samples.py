"""A step's samples are its own: labelled predictions served since it began, to the
millisecond. Counted from the minute rollups, a step begun mid-minute inherited that minute's
labels at the old share, and the demo's rollout passed two steps on the same rows."""

from __future__ import annotations

from engine import Engine
from engine.deploy.rollouts import ROLLOUT_ACTOR, step_figures
from tests.conftest import BOTH_BACKENDS
from tests.serving_helpers import serving
from tests.test_monitoring import feed

TEST = "ro"


def test_a_new_step_counts_no_label_of_the_step_before(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", ab_test=TEST, rollout=[10, 50, 100])
    feed(engine, "v1.0", 2000, within=0.8, experiment=TEST)
    feed(engine, "v2.0", 250, within=0.97, experiment=TEST, arm="candidate")

    engine.evaluate()  # 10% → 50%: every gate passed
    test = engine.experiment(TEST)
    assert test.rollout is not None and test.rollout.step == 1
    engine.evaluate()  # the same minute's rows again: no new sample, so it holds
    held = engine.experiment(TEST)
    assert held.rollout is not None and (held.rollout.step, held.status) == (1, "running")
    steps = [e for e in engine.history() if e.actor == ROLLOUT_ACTOR]
    assert [e.action for e in steps] == ["rollout_step"]


@BOTH_BACKENDS
def test_labelled_since_counts_single_and_batch_rows_served_after_it(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", ab_test=TEST, rollout=[50, 100])
    with serving(engine.workspace) as (router, plog):
        assert plog is not None
        before = [router.predict([0.1, 0.2, 0.3, 0.1, 0.2]) for _ in range(6)]
        singles = [router.predict([0.1, 0.2, 0.3, 0.1, 0.2]) for _ in range(10)]
        batch = router.predict_batch([[0.1, 0.2, 0.3, 0.1, 0.2]] * 8)
        plog.flush()
    served = [*before, *singles, *batch]
    engine.feedback_many([(p.prediction_id, 50.0) for p in served[::2]])
    labelled = served[::2]
    with engine.store.read() as tx:
        counts = tx.predictions.labelled_since(TEST, 0)
    arms = [sum(p.arm == arm for p in labelled) for arm in ("production", "candidate")]
    assert counts == (arms[0], arms[1])
    with engine.store.read() as tx:
        assert tx.predictions.labelled_since(TEST, 2**42) == (0, 0)
    test = engine.experiment(TEST)
    assert test.rollout is not None
    report = engine.monitoring.report()
    [found] = report.experiments
    with engine.store.read() as tx:
        figures = step_figures(tx, engine.config, found, test.rollout)
    assert (figures.control.labelled, figures.candidate.labelled) == (arms[0], arms[1])
