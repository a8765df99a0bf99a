"""Performance on the prediction log with delayed labels: per version and route, label
maturity next to every figure, and no label used before it arrives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from monitoring.performance import join_labels, run_performance
from serving.prediction_log import read_predictions
from tests.conftest import World
from tests.monitoring.conftest import MonitorWorld, served_features, write_log

REVIEW_COST = 2.0


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
    finding = run_performance(predictions, world.transactions, mw.day(75), review_cost=REVIEW_COST)

    groups = {(g["model_version"], g["route"]): g for g in finding.details["by_version_route"]}
    assert set(groups) == {(mw.champion.version, "champion"), (mw.challenger.version, "canary")}
    assert sum(g["rows"] for g in groups.values()) == len(predictions)
    champion = groups[(mw.champion.version, "champion")]
    assert finding.status == "ok"
    for name in ("average_precision", "recall", "precision", "cost_per_1k", "label_maturity"):
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


def test_performance_shows_label_maturity_next_to_each_figure(world, monitor_world, served):
    predictions, _ = served
    mw = monitor_world
    tx = world.transactions.set_index(world.transactions["transaction_id"].astype(str))
    available = tx.loc[predictions["transaction_id"], "label_available_at"]
    for now in (mw.day(75), mw.day(130)):  # legitimate labels become final after 60 days
        finding = run_performance(predictions, world.transactions, now, review_cost=REVIEW_COST)
        champion = (predictions["route"] == "champion").to_numpy()
        final = (available.notna() & (available <= now)).to_numpy()
        assert finding.metrics["label_maturity"] == pytest.approx(final[champion].mean())
        assert all("label_maturity" in g for g in finding.details["by_version_route"])
        assert "final]" in finding.summary and "optimistic" in finding.summary
    assert finding.metrics["label_maturity"] > 0.95  # day 130: all but unreported fraud


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
    assert not labelled.loc[late["transaction_id"].astype(str), "label_final"].any()
    known = (logged["is_fraud"] == 1) & (logged["label_available_at"] <= now)
    assert labelled["label"].sum() == known.sum()

    early = run_performance(predictions, tx, now, review_cost=REVIEW_COST)
    later = run_performance(predictions, tx, mw.day(90), review_cost=REVIEW_COST)
    assert early.metrics["known_frauds"] < later.metrics["known_frauds"]


def test_performance_is_insufficient_without_enough_known_frauds(world, monitor_world, served):
    predictions, _ = served
    mw = monitor_world
    first_days = predictions[predictions["event_timestamp"] < mw.day(57)]
    finding = run_performance(first_days, world.transactions, mw.day(57), review_cost=REVIEW_COST)
    assert finding.status == "insufficient_data"
    assert finding.metrics["known_frauds"] < 10
    assert finding.summary.startswith("insufficient data")
