"""The evaluation a design round asks about, on numbers small enough to check by hand:
intervals that respect clustered fraud, card-level precision, calibration and its
error, power, the rules baseline, slices and the staleness arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.calibration import Calibration, calibration_error, compare_calibrations
from pipelines.evaluate import Clusters, bootstrap_ap_difference, card_precision_top_k_per_day
from pipelines.power import canary_plans, frauds_needed
from pipelines.rules import RULES, rules_score, rules_threshold
from pipelines.slices import slice_metrics
from pipelines.staleness import Curve, due_after_weeks

DAY = pd.Timestamp("2026-03-01", tz="UTC")


def _clustered_frauds(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """20 days, 400 cards; 12 stolen cards whose every payment is fraud. Each model
    ranks a stolen card's payments all high or all low: one card is one piece of
    evidence, however many payments it made."""
    rng = np.random.default_rng(seed)
    n = 16_000
    card = rng.integers(0, 400, n)
    stolen = np.isin(card, np.arange(12))
    frame = pd.DataFrame(
        {
            "event_timestamp": DAY + pd.to_timedelta(rng.integers(0, 20, n), unit="D"),
            "customer_id": card,
            "label": stolen.astype(int),
        }
    )
    card_luck = rng.normal(0, 1.5, (2, 400))  # per model, per card
    a = stolen * 2.0 + card_luck[0][card] + rng.normal(0, 0.3, n)
    b = stolen * 2.0 + card_luck[1][card] + rng.normal(0, 0.3, n)
    return frame, a, b


def test_resampling_cards_widens_the_interval_that_resampling_payments_narrows() -> None:
    frame, a, b = _clustered_frauds()
    y = frame["label"].to_numpy()
    rows = bootstrap_ap_difference(y, a, b, 200, seed=1)
    clustered = bootstrap_ap_difference(y, a, b, 200, seed=1, clusters=Clusters.of(frame))
    assert rows.delta_ap == clustered.delta_ap  # the same observed difference
    assert (rows.resampled, clustered.resampled) == ("rows", "days x cards")
    assert clustered.se > 2 * rows.se  # twelve cards, not ~480 payments, carry the signal
    assert clustered.ci_high - clustered.ci_low > 2 * (rows.ci_high - rows.ci_low)
    assert clustered.se_candidate > 0


def test_card_precision_counts_a_card_once_and_never_again_once_caught() -> None:
    frame = pd.DataFrame(
        {
            "event_timestamp": [DAY] * 4 + [DAY + pd.Timedelta(days=1)] * 2,
            "customer_id": [1, 1, 1, 2, 1, 3],
            "label": [1, 1, 1, 0, 1, 0],
        }
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.1])
    payments = frame["label"].to_numpy()[:2].mean()  # day 1's top two payments: card 1 twice
    assert payments == 1.0
    # Day 1: cards 1 (fraud) and 2 reviewed, 1/2. Day 2: card 1 is blocked, card 3 is
    # reviewed and clean, 0/1.
    assert card_precision_top_k_per_day(frame, scores, k=2) == pytest.approx(0.25)


def test_calibration_maps_overconfident_scores_back_and_the_error_says_how_far() -> None:
    rng = np.random.default_rng(3)
    truth = rng.beta(0.5, 60, 60_000)  # fraud probabilities under 1%, like payments
    y = (rng.random(truth.size) < truth).astype(int)
    inflated = np.clip(truth * 3, 0, 1)  # scores three times too high
    assert calibration_error(y, truth) < 0.001
    assert calibration_error(y, inflated) > 3 * calibration_error(y, truth)
    half = slice(0, 30_000), slice(30_000, None)
    choice = compare_calibrations(y[half[0]], inflated[half[0]], y[half[1]], inflated[half[1]])
    raw, platt, isotonic = choice.rows
    assert raw.method == "none" and choice.chosen in ("platt", "isotonic")
    assert min(platt.calibration_error, isotonic.calibration_error) < raw.calibration_error / 2
    fitted = Calibration.fit(y, inflated, method="isotonic")
    assert fitted.method == "isotonic" and 2 <= len(fitted.xs) <= 64
    again = Calibration.from_tags(1.0, 0.0, fitted.points_tag())
    assert again(inflated[:100]) == pytest.approx(fitted(inflated[:100]), rel=1e-4)
    # Labels known for half the frauds: the fitted odds are doubled back.
    seen = y * (rng.random(y.size) < 0.5)
    corrected = Calibration.fit(seen, inflated, coverage=0.5, method="isotonic")
    assert corrected(inflated).mean() == pytest.approx(y.mean(), rel=0.15)


def test_power_needs_four_times_the_frauds_for_half_the_difference() -> None:
    base = frauds_needed(se=0.05, frauds=200, delta=0.02)
    assert base == pytest.approx(200 * ((1.6449 + 0.8416) * 0.05 / 0.02) ** 2)
    assert frauds_needed(0.05, 200, 0.01) == pytest.approx(4 * base)
    assert math.isnan(frauds_needed(0.05, 0, 0.01))
    plans = canary_plans(0.03, 0.04, 200, 0.02, frauds_per_day=10, payments_per_day=5_000)
    assert len({p.days_paired for p in plans}) == 1  # shadow traffic ignores the share
    days = [p.days_by_arms for p in plans]  # 5% .. 50%: more share, fewer days
    assert days == sorted(days, reverse=True)
    assert plans[0].payments_exposed == pytest.approx(0.05 * 5_000 * days[0])


def test_rules_count_what_breaks_and_skip_what_the_frame_lacks() -> None:
    frame = pd.DataFrame(
        {
            "amount": [500.0, 10.0, 10.0],
            "amount_to_customer_mean_30d": [4.0, 0.5, np.nan],
            "customer_days_since_known_fraud": [2.0, np.nan, 30.0],
        }
    )
    score = rules_score(frame)
    assert score[0] >= rules_threshold(3)  # amount, habit, a fraud reported last week
    assert rules_threshold(0) <= score[1] < rules_threshold(1)  # nothing breaks
    assert score[1] == score[2]  # missing values break nothing
    assert len(RULES) == 5 and score.max() < 1.0


def test_slices_show_a_pattern_the_total_hides() -> None:
    frame = pd.DataFrame(
        {
            "label": [1, 1, 1, 1, 0, 0, 0, 0],
            "fraud_pattern": ["leaked_card"] * 2 + ["card_testing"] * 2 + [""] * 4,
            "amount": [300.0, 250.0, 2.0, 3.0, 40.0, 50.0, 5.0, 60.0],
        }
    )
    scores = np.array([0.9, 0.8, 0.1, 0.05, 0.2, 0.3, 0.01, 0.02])
    rows = {(r.cut, r.name): r for r in slice_metrics(frame, scores, review_threshold=0.5)}
    assert rows[("fraud pattern", "leaked_card")].recall == 1.0
    assert rows[("fraud pattern", "card_testing")].recall == 0.0
    assert rows[("amount", "0-20")].frauds == 2
    assert rows[("fraud pattern", "card_testing")].key == "fraud_pattern_card_testing"


def test_staleness_reads_the_loss_on_the_same_week() -> None:
    # Week 14 is hard for every model; the old model loses 0.05 on each shared week.
    curve = Curve(
        "as simulated",
        "lightgbm",
        {7: {7: 0.70, 14: 0.35}, 14: {14: 0.40, 21: 0.70}, 21: {21: 0.75}},
    )
    losses = curve.loss_by_age()
    assert losses[0] == (0.0, 0.0, 3)
    assert losses[1][0] == pytest.approx(0.05) and losses[1][2] == 2
    assert due_after_weeks(curve, tolerance=0.02) == 1
    assert due_after_weeks(curve, tolerance=0.10) == 2  # never due within the ages measured
