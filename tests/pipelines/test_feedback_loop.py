"""The feedback-loop study on the shared test world: the champion's decisions choose
the labels, exploration logs its propensities, and every estimate is set against the
truth (pipelines/feedback_loop.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from fraudlab.cli import app
from fraudlab.commands.train import print_feedback_study
from fraudlab.console import console
from fraudlab.errors import ConfigError
from fraudlab.settings import get_settings
from pipelines.calibration import Calibration
from pipelines.evaluate import Thresholds, decisions_of
from pipelines.feedback_loop import run_feedback_study
from serving.scoring import ServingModel
from tests.conftest import World


def test_the_study_reads_labels_chosen_by_decisions_against_the_truth(world: World) -> None:
    study = run_feedback_study(world.settings, exploration=0.2, operation_days=21)
    p = study.periods
    assert p.history[1] <= p.history_validation[0] < p.history_validation[1] <= p.operation[0]
    assert p.operation[1] <= p.test[0] and p.test[1] == 75
    assert study.thresholds.review < study.thresholds.decline
    assert study.reviews_per_day <= world.settings.training.analyst_capacity_per_day
    # Decisions opened their own label sources; exploration changed some decisions.
    assert {"chargeback", "analyst"} <= set(study.label_sources)
    assert study.explored_per_day > 0
    truth, naive, ipw, dr = study.estimates
    assert truth.name.startswith("truth") and naive.name.startswith("naive")
    # IPW reads only the payments whose truth was let through; the others read all.
    assert ipw.rows_used < truth.rows_used == naive.rows_used == dr.rows_used
    assert math.isnan(dr.average_precision) and math.isfinite(dr.cost_per_day)
    assert all(math.isfinite(e.cost_per_day) and e.cost_per_day > 0 for e in study.estimates)
    censored, explored, ceiling = study.retrained
    assert censored.versus_censored is None
    assert explored.versus_censored is not None and ceiling.versus_censored is not None
    assert all(0 < r.average_precision <= 1 for r in study.retrained)
    with console.capture() as printed:
        print_feedback_study(study)
    text = " ".join(printed.get().split())
    for row in ("truth", "naive", "inverse propensity", "doubly robust", "the ceiling"):
        assert row in text
    assert "exploration 20%:" in text and "analyst" in text


def test_the_command_refuses_a_study_the_calendar_cannot_hold(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUDLAB_HOME", str(world.settings.home))
    monkeypatch.delenv("FRAUDLAB_CONFIG", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["feedback-loop", "--operation-days", "70"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no room for a history" in result.output


def test_a_calendar_too_short_for_the_periods_is_refused(world: World) -> None:
    with pytest.raises(ConfigError, match="no room"):
        run_feedback_study(world.settings, operation_days=60)
    with pytest.raises(ConfigError, match="exploration"):
        run_feedback_study(world.settings, exploration=0.0)


def test_the_review_threshold_keeps_within_the_analysts_capacity() -> None:
    from types import SimpleNamespace

    import numpy as np

    from pipelines.evaluate import capacity_thresholds, decisions_of

    rng = np.random.default_rng(0)
    labels = (rng.random(2_000) < 0.05).astype(int)
    scores = np.clip(0.02 + 0.5 * labels * rng.random(2_000) + 0.05 * rng.random(2_000), 0, 1)
    amounts = np.full(2_000, 500.0)  # costly frauds: the cost optimum reviews a lot
    days = 10
    free = capacity_thresholds(
        labels,
        scores,
        amounts,
        SimpleNamespace(review_cost=1.0, analyst_capacity_per_day=10**6),
        days,
    )
    tight = capacity_thresholds(
        labels, scores, amounts, SimpleNamespace(review_cost=1.0, analyst_capacity_per_day=5), days
    )
    reviews = {
        name: int((decisions_of(scores, t) == "review").sum())
        for name, t in (("free", free), ("tight", tight))
    }
    assert reviews["free"] > 5 * days  # unconstrained, it would send more than capacity
    assert reviews["tight"] == 5 * days  # exactly the capacity, no more
    assert tight.decline == free.decline


def test_the_offline_decision_rule_is_the_one_serving_applies() -> None:
    """The study decides millions of payments with `decisions_of`; serving decides one
    at a time with ServingModel.decide. Thresholds included, they must agree."""
    thresholds = Thresholds(review=0.2, decline=0.7)
    model = ServingModel(
        "m", "1", [], "fraud_v3", thresholds.review, thresholds.decline, lambda row: 0.0
    )
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.random(2_000), [0.0, 0.2, 0.7, 1.0, np.nextafter(0.2, 0)]])
    assert decisions_of(scores, thresholds).tolist() == [model.decide(s) for s in scores]


def test_calibration_maps_distorted_scores_back_to_probabilities() -> None:
    """Scores that overstate small risks (the square root of the true probability, as a
    class-weighted model gives) are mapped back: the expected frauds match the truth
    where the raw scores overcount them several times."""
    rng = np.random.default_rng(5)
    truth = 1 / (1 + np.exp(-rng.normal(-6, 1.5, 200_000)))
    labels = rng.random(len(truth)) < truth
    scores = np.sqrt(truth)
    fitted = Calibration.fit(labels[:100_000], scores[:100_000])
    held_out = scores[100_000:]
    frauds = labels[100_000:].sum()
    assert held_out.sum() > 4 * frauds
    assert fitted(held_out).sum() == pytest.approx(truth[100_000:].sum(), rel=0.1)
    # Fitted on labels of which only half had been reported, it is told so and corrects.
    reported = labels[:100_000] & (rng.random(100_000) < 0.5)
    halved = Calibration.fit(reported, scores[:100_000], coverage=0.5)
    assert halved(held_out).sum() == pytest.approx(truth[100_000:].sum(), rel=0.15)
    assert Calibration.fit(np.zeros(10), scores[:10]) == Calibration()  # one class: identity
    assert Calibration()(np.array([0.25])) == pytest.approx([0.25])
