"""Performance on the prediction log with delayed labels: per version and route, the
expected label coverage next to every figure, and no label used before it arrives."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.labels import ReportingDelays, known_labels, read_label_feed
from monitoring.label_feed import settle_served
from monitoring.performance import (
    MIN_OBSERVED,
    VersionReference,
    group_metrics,
    join_labels,
    observation_weights,
    run_performance,
)
from monitoring.policy import load_policy
from monitoring.runner import references_of
from pipelines.evaluate import missed_fraud_rate
from serving.prediction_log import read_predictions
from tests.conftest import World
from tests.monitoring.conftest import MonitorWorld, served_features, write_log

REVIEW_COST = 2.0
CONFIG = load_policy().jobs.performance


@pytest.fixture(scope="module")
def served(
    world: World, monitor_world: MonitorWorld, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pd.DataFrame, Path]:
    """Days 55..65 served with a 30% canary of the LightGBM challenger."""
    mw = monitor_world
    path = tmp_path_factory.mktemp("performance") / "prediction_log.sqlite"
    frame = served_features(world, mw.day(55), mw.day(65))
    write_log(path, frame, mw.champion, mw.challenger, 0.3, shadow=False)
    return read_predictions(path, mw.day(55), mw.day(65)), path


def test_performance_reports_each_version_and_route(world, monitor_world, served):
    predictions, _ = served
    mw = monitor_world
    finding = run_performance(
        predictions, world.transactions, mw.day(75), CONFIG, review_cost=REVIEW_COST
    )

    groups = {(g["model_version"], g["route"]): g for g in finding.details["by_version_route"]}
    assert set(groups) == {(mw.champion.version, "champion"), (mw.challenger.version, "canary")}
    assert sum(g["rows"] for g in groups.values()) == len(predictions)
    champion = groups[(mw.champion.version, "champion")]
    assert finding.status == "ok"
    for name in ("average_precision", "recall", "precision", "cost_per_1k", "label_coverage"):
        assert finding.metrics[name] == pytest.approx(champion[name], nan_ok=True)
    assert finding.metrics["known_frauds"] == champion["known_frauds"] >= 10
    assert 0 < finding.metrics["recall"] <= 1 and 0 < finding.metrics["precision"] <= 1
    # Cost: missed known fraud at its amount plus a fee per flagged payment.
    rows = join_labels(predictions, world.transactions, mw.day(75))
    rows = rows[rows["route"] == "champion"]
    missed = rows.loc[(rows["label"] == 1) & ~rows["flagged"], "amount"].sum()
    cost = missed + REVIEW_COST * rows["flagged"].sum()
    assert champion["expected_cost"] == pytest.approx(cost)
    assert champion["cost_per_1k"] == pytest.approx(1000 * cost / len(rows))


def test_label_coverage_is_the_share_of_frauds_already_reported(world, monitor_world, served):
    """The expected share of the window's frauds reported by now, from the delays of frauds
    old enough to be complete, against the truth the simulator knows."""
    predictions, _ = served
    mw = monitor_world
    tx = world.transactions.set_index(world.transactions["transaction_id"].astype(str))
    champion = predictions[predictions["route"] == "champion"]
    truth = tx.loc[champion["transaction_id"]]
    frauds = truth[truth["is_fraud"] == 1]
    coverage = []
    for now in (mw.day(66), mw.day(75)):
        finding = run_performance(predictions, world.transactions, now, CONFIG, review_cost=1.0)
        reported = (frauds["label_available_at"] <= now).mean()
        assert finding.metrics["label_coverage"] == pytest.approx(reported, abs=0.15)
        assert all("label_coverage" in g for g in finding.details["by_version_route"])
        assert "expected reported by now" in finding.summary
        coverage.append(finding.metrics["label_coverage"])
    assert coverage[0] < coverage[1] < 1


def test_performance_ignores_labels_not_yet_reported(world, monitor_world, served):
    predictions, _ = served
    mw = monitor_world
    now = mw.day(66)
    tx = world.transactions
    logged = tx[tx["transaction_id"].astype(str).isin(predictions["transaction_id"])]
    late = logged[(logged["is_fraud"] == 1) & (logged["label_available_at"] > now)]
    assert len(late) > 0, "the fixture should have frauds reported after day 66"

    labelled = join_labels(predictions, tx, now).set_index("transaction_id")
    assert (labelled.loc[late["transaction_id"].astype(str), "label"] == 0).all()
    known = (logged["is_fraud"] == 1) & (logged["label_available_at"] <= now)
    assert labelled["label"].sum() == known.sum()

    early = run_performance(predictions, tx, now, CONFIG, review_cost=REVIEW_COST)
    later = run_performance(predictions, tx, mw.day(90), CONFIG, review_cost=REVIEW_COST)
    assert early.metrics["known_frauds"] < later.metrics["known_frauds"]


def test_performance_is_insufficient_without_enough_known_frauds(world, monitor_world, served):
    predictions, _ = served
    mw = monitor_world
    first_days = predictions[predictions["event_timestamp"] < mw.day(57)]
    finding = run_performance(
        first_days, world.transactions, mw.day(57), CONFIG, review_cost=REVIEW_COST
    )
    assert finding.status == "insufficient_data"
    assert finding.metrics["known_frauds"] < 10
    assert finding.summary.startswith("insufficient data")


def test_with_the_label_feed_declined_fraud_is_never_known_and_reviews_are_known_in_hours(
    world, monitor_world, served, tmp_path
):
    """The log settled by the world (`fraudlab labels settle`): the monitor then reads
    the labels the decisions produced, not the file's."""
    predictions, path = served
    mw = monitor_world
    settings = mw.settings.model_copy(update={"home": tmp_path})
    shutil.copy(path, settings.prediction_log_path)
    summary = settle_served(settings, world.transactions)
    assert summary.served == len(predictions) and summary.unmatched == 0
    assert summary.decisions.get("decline", 0) > 0 and summary.events["analyst"] > 0
    feed = read_label_feed(settings.label_feed_path, world.transactions)
    assert feed is not None

    tx = world.transactions.set_index(world.transactions["transaction_id"].astype(str))
    truth = tx.loc[predictions["transaction_id"], "is_fraud"].to_numpy()
    declined_fraud = predictions[(predictions["decision"] == "decline") & (truth == 1)]
    assert len(declined_fraud) > 0
    late = mw.day(90)  # every chargeback of the file is in by now
    with_feed = join_labels(predictions, world.transactions, late, feed).set_index("transaction_id")
    assert (with_feed.loc[declined_fraud["transaction_id"], "label"] == 0).all()
    assert (
        join_labels(predictions, world.transactions, late)["label"].sum() > with_feed["label"].sum()
    )
    # An analyst's verdict is known within hours of the review; the file's chargeback
    # for the same payment would take days to weeks.
    answered = predictions.assign(transaction_id=predictions["transaction_id"].astype("int64"))
    verdicts = feed[feed["source"] == "analyst"].merge(answered, on="transaction_id")
    assert len(verdicts) > 0 and (verdicts["decision"] == "review").all()
    served_at = pd.to_datetime(verdicts["served_at"], utc=True, format="ISO8601")
    assert ((verdicts["known_at"] - served_at) < pd.Timedelta(hours=48)).all()
    two_days_on = served_at.max() + pd.Timedelta(hours=48)
    reviewed = tx.loc[verdicts["transaction_id"].astype(str)].reset_index(drop=True)
    known = known_labels(reviewed, two_days_on, feed)
    assert known["labelled"].all() and (known["source"] == "analyst").all()


def test_the_label_free_estimate_is_checked_against_the_frauds_known(world, monitor_world, served):
    """Scores read as probabilities: expected frauds, recall and precision without a
    label; and the frauds the scores expect known by now against those that are."""
    predictions, _ = served
    mw = monitor_world
    references = references_of(mw.settings, predictions["model_version"].unique())
    assert set(references) == {mw.champion.version, mw.challenger.version}
    # Training registered each version's missed frauds per approved payment.
    assert all(0 < r.missed_fraud_rate < 0.05 for r in references.values()), references
    for now in (mw.day(66), mw.day(90)):
        finding = run_performance(
            predictions, world.transactions, now, CONFIG, review_cost=1.0, references=references
        )
        m = finding.metrics
        assert 0 < m["expected_recall"] < 1 and 0 < m["expected_precision"] < 1
        assert "label-free" in finding.summary
        # Calibrated on the held-out periods, the scores expect about as many known
        # frauds as the chargebacks that have arrived. Not quite: this world's cutoff
        # (day 55) is younger than the 60-day chargeback window, so training could not
        # yet see how many frauds go unreported and left the calibration uncorrected
        # (about half the held-out frauds had been reported by the cutoff).
        assert 0.35 < m["expected_known_frauds"] / m["known_frauds"] < 1.5, m
    champion = predictions[predictions["route"] == "champion"]
    rows = join_labels(champion, world.transactions, mw.day(90))
    p = references[mw.champion.version].calibration(rows["score"].to_numpy())
    assert m["expected_recall"] == pytest.approx(p[rows["flagged"].to_numpy()].sum() / p.sum())


def test_the_weighted_recall_stands_explored_declines_in_for_the_censored_ones():
    """Twenty frauds: the model declines ten and approves ten. Exploration (share 0.2)
    approved two of the declines, so only those two of the ten get a chargeback; the
    eight declines that stood are never labelled. Read naively the labels say the model
    caught 2 of 12; each explored decline weighted by 1 / 0.2 says 10 of 20, the truth."""
    share = 0.2
    declined = ["decline"] * 8 + ["approve"] * 2  # served: the last two explored
    rows = pd.DataFrame(
        {
            "label": [0] * 8 + [1] * 2 + [1] * 10,  # as known: a decline that stood, never
            "decision": declined + ["approve"] * 10,
            "model_decision": ["decline"] * 10 + ["approve"] * 10,
            "propensity": [1 - share] * 8 + [share] * 2 + [1.0] * 10,
            "score": [0.9] * 10 + [0.1] * 10,
            "amount": 10.0,
        }
    )
    rows["flagged"] = rows["decision"] != "approve"
    figures = group_metrics(rows, REVIEW_COST, None, pd.Timestamp(0), VersionReference(), 1.5)
    assert figures["ipw_recall"] == pytest.approx(0.5)
    assert figures["explored_frauds"] == 2
    # The served decisions' recall: the explored frauds went through, so it caught none.
    assert figures["recall"] == 0
    # Without exploration no decline is ever labelled: the labels say the model caught
    # none of the twenty frauds it caught half of.
    rows["propensity"] = 1.0
    rows.loc[8:9, ["decision", "label"]] = ["decline", 0]
    rows["flagged"] = rows["decision"] != "approve"
    without = group_metrics(rows, REVIEW_COST, None, pd.Timestamp(0), VersionReference(), 1.5)
    assert without["ipw_recall"] == 0 and without["explored_frauds"] == 0


def test_observation_weights_follow_each_decisions_path_to_a_label():
    """Approved: the chargeback, r. Reviewed: the analyst (1 - s) or, explored, the
    chargeback (s r). Declined: only explored, s r. Floored at MIN_OBSERVED."""
    share, r = 0.2, 0.5
    rows = pd.DataFrame(
        {
            "model_decision": ["approve", "review", "review", "decline", "approve"],
            "decision": ["approve", "review", "approve", "approve", "approve"],
            "propensity": [1.0, 1 - share, share, share, 1.0],
        }
    )
    weights = observation_weights(rows, np.array([r, r, r, r, 0.01]))
    expected = [1 / r, 1 / (1 - share + share * r), 1 / (1 - share + share * r), 1 / (share * r)]
    assert weights[:4] == pytest.approx(expected)
    assert weights[4] == pytest.approx(1 / MIN_OBSERVED)


def _approved_and_declined(missed: int, declined_frauds_known: int) -> pd.DataFrame:
    """1,000 payments the model approved, `missed` of them frauds (charged back), and 20
    it declined, all frauds, `declined_frauds_known` of them labelled."""
    approved = pd.DataFrame(
        {
            "label": [1] * missed + [0] * (1000 - missed),
            "model_decision": "approve",
            "decision": "approve",
            "score": 0.01,
        }
    )
    declined = pd.DataFrame(
        {
            "label": [1] * declined_frauds_known + [0] * (20 - declined_frauds_known),
            "model_decision": "decline",
            "decision": "decline",
            "score": 0.95,
        }
    )
    rows = pd.concat([approved, declined], ignore_index=True).assign(propensity=1.0, amount=10.0)
    rows["flagged"] = rows["decision"] != "approve"
    return rows


def test_missed_frauds_on_approved_traffic_ignore_what_censoring_hides():
    """The retrain signal: frauds among the model's approvals against its reference
    rate. Censoring the declines (no chargeback for a declined fraud) drops recall from
    0.8 to 0 and leaves the missed-fraud figures as they were."""
    reference = VersionReference(missed_fraud_rate=5 / 1000)
    labelled = group_metrics(
        _approved_and_declined(5, 20), 1.0, None, pd.Timestamp(0), reference, 1.5
    )
    censored = group_metrics(
        _approved_and_declined(5, 0), 1.0, None, pd.Timestamp(0), reference, 1.5
    )
    assert labelled["recall"] == pytest.approx(0.8) and censored["recall"] == 0
    for m in (labelled, censored):
        assert m["missed_frauds"] == 5 and m["expected_missed_frauds"] == pytest.approx(5)
        assert m["missed_fraud_ratio"] == pytest.approx(1)
        assert m["missed_fraud_p"] > 0.5  # five where x1.5 expects 7.5: no excess
    # Three times the reference is an excess the rule (p < 0.001) acts on...
    worse = group_metrics(_approved_and_declined(20, 0), 1.0, None, pd.Timestamp(0), reference, 1.5)
    assert worse["missed_fraud_ratio"] == pytest.approx(4) and worse["missed_fraud_p"] < 0.001
    # ... and without a reference (a version registered before the tag) there is no verdict.
    blind = group_metrics(
        _approved_and_declined(20, 0), 1.0, None, pd.Timestamp(0), VersionReference(), 1.5
    )
    assert np.isnan(blind["missed_fraud_p"]) and np.isnan(blind["missed_fraud_ratio"])


def test_missed_frauds_expected_follow_how_much_of_the_labels_has_arrived():
    """Half of the frauds are ever reported, within a day: at two days old, half as many
    known misses are expected as the reference rate gives."""
    delays = ReportingDelays(pd.Timedelta(days=60), np.array([1.0]), cohort=2)
    now = pd.Timestamp("2026-03-10", tz="UTC")
    rows = _approved_and_declined(5, 0).assign(event_timestamp=now - pd.Timedelta(days=2))
    reference = VersionReference(missed_fraud_rate=5 / 1000)
    m = group_metrics(rows, 1.0, delays, now, reference, 1.5)
    assert m["expected_missed_frauds"] == pytest.approx(2.5)


def test_the_reference_rate_counts_each_approval_by_the_chance_its_fraud_is_known():
    """Four frauds among the approvals, each approval's fraud known with chance 0.5:
    (4 + 1) / (1,000 x 0.5); the flagged rows do not count."""
    labels = np.array([1] * 4 + [0] * 996 + [1] * 10)
    scores = np.array([0.1] * 1000 + [0.9] * 10)
    rate = missed_fraud_rate(labels, scores, 0.5, np.full(len(labels), 0.5))
    assert rate == pytest.approx(5 / 500)


def test_a_slice_the_champion_stops_catching_is_named_and_its_age_is_counted(
    world, monitor_world, served
):
    predictions, _ = served
    mw = monitor_world
    now = mw.day(75)
    reference = VersionReference(labels_as_of=mw.day(40))
    finding = run_performance(
        predictions,
        world.transactions,
        now,
        CONFIG,
        review_cost=REVIEW_COST,
        references={mw.champion.version: reference},
    )
    assert finding.metrics["model_age_days"] == pytest.approx(35.0)
    slices = {(s["cut"], s["slice"]): s for s in finding.details["champion_slices"]}
    assert {cut for cut, _ in slices} == {"fraud pattern", "amount"}
    # Only slices with enough known frauds are judged: a ratio over a dozen is noise.
    judged = [s for s in slices.values() if s["known_frauds"] >= CONFIG.min_slice_frauds]
    assert len(judged) < len(slices)
    worst = min(judged, key=lambda s: s["recall_ratio"])
    assert finding.metrics["worst_slice_recall_ratio"] == worst["recall_ratio"]

    # The champion stops flagging the leaked cards' frauds: that pattern's recall
    # collapses to nothing and the finding says which.
    tx = world.transactions.set_index(world.transactions["transaction_id"].astype(str))
    pattern = tx["fraud_pattern"].reindex(predictions["transaction_id"]).to_numpy()
    blind = predictions.copy()
    hidden = pattern == "leaked_card"
    blind.loc[hidden, "decision"] = "approve"
    blind.loc[hidden, "model_decision"] = "approve"
    after = run_performance(blind, world.transactions, now, CONFIG, review_cost=REVIEW_COST)
    assert after.metrics["worst_slice_recall_ratio"] == 0.0
    named = {(s["cut"], s["slice"]): s for s in after.details["champion_slices"]}
    assert named[("fraud pattern", "leaked_card")]["recall"] == 0.0
