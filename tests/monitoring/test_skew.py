"""The skew job names the feature serving computed differently, and only that one.

Each case logs one day of traffic the way serving would with one fault injected into
the feature vector serving computed (and scored); the request's own fields (amount,
timestamp, ids) stay what the payment carried, since that is what the fault did not
touch. The job must flag exactly the features the fault changed at serving: the
feature itself, plus any feature serving derived from the wrong value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.definitions import TERMINAL_RISK_FEATURES
from monitoring.policy import load_policy
from monitoring.skew import run_skew
from pipelines.training_set import with_request_features
from serving.prediction_log import read_predictions
from tests.conftest import World
from tests.monitoring.conftest import MonitorWorld, served_features, write_log

POLICY = load_policy()
SKEW = POLICY.jobs.skew
DAY = 70  # a day of "live" traffic, after the models' cutoff


@pytest.fixture(scope="module")
def traffic(world: World, monitor_world: MonitorWorld) -> pd.DataFrame:
    return served_features(world, monitor_world.day(DAY), monitor_world.day(DAY + 1))


def log_and_read(
    path: Path, payments: pd.DataFrame, served: pd.DataFrame, mw: MonitorWorld
) -> pd.DataFrame:
    """Log `served` feature vectors for `payments`, with the payments' own amounts as the
    request field (the feature `amount` may differ: that is the fault), and read the day
    back."""
    assert (served["transaction_id"].to_numpy() == payments["transaction_id"].to_numpy()).all()
    write_log(path, served.assign(request_amount=payments["amount"].to_numpy()), mw.champion)
    return read_predictions(path, mw.day(DAY), mw.day(DAY + 1))


def stale_terminal_risk(store) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Materialization stopped two days ago: terminal features come from that snapshot."""

    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        entities = frame[["transaction_id", "customer_id", "terminal_id", "event_timestamp"]]
        entities = entities.assign(
            event_timestamp=entities["event_timestamp"] - pd.Timedelta(days=2)
        )
        refs = [f"terminal_risk:{name}" for name in TERMINAL_RISK_FEATURES]
        old = store.get_historical_features(entity_df=entities, features=refs).to_df()
        old = old.set_index("transaction_id").loc[frame["transaction_id"]]
        return frame.assign(**{n: old[n].to_numpy(np.float64) for n in TERMINAL_RISK_FEATURES})

    return corrupt


def test_healthy_serving_has_no_skew(monitor_world, traffic, store, log_path, tmp_path):
    logged = log_and_read(log_path, traffic, traffic, monitor_world)
    finding = run_skew(
        store, logged, monitor_world.champion.features, tmp_path, SKEW, service_name="fraud_v2"
    )
    assert finding.status == "ok", finding.summary
    assert finding.metrics == {"max_mismatch_rate": 0.0, "skewed_feature_count": 0.0}
    assert finding.details["sampled_rows"] == min(2000, len(traffic))
    assert (tmp_path / "skew.json").exists()


UNIT_DERIVED = {"amount", "log_amount", "amount_to_customer_mean_30d"}
CASES = {
    # cents into the feature vector after the shared function ran: only `amount` is off
    "unit change in the logged amount": (
        lambda frame: frame.assign(amount=frame["amount"] * 100),
        {"amount"},
    ),
    # cents fed into the shared function: serving derives log_amount and the ratio from it
    "unit change before the request-time function": (
        lambda frame: with_request_features(frame.assign(amount=frame["amount"] * 100)),
        UNIT_DERIVED,
    ),
    "missing mean amount sent as 0 instead of missing": (
        lambda frame: frame.assign(
            customer_mean_amount_1d=frame["customer_mean_amount_1d"].fillna(0.0)
        ),
        {"customer_mean_amount_1d"},
    ),
    "7-day count computed over 30 days": (
        lambda frame: frame.assign(customer_tx_count_7d=frame["customer_tx_count_30d"]),
        {"customer_tx_count_7d"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_skew_names_the_feature_computed_differently(
    case, monitor_world, traffic, store, log_path, tmp_path
):
    corrupt, expected = CASES[case]
    logged = log_and_read(log_path, traffic, corrupt(traffic), monitor_world)
    finding = run_skew(
        store, logged, monitor_world.champion.features, tmp_path, SKEW, service_name="fraud_v2"
    )
    assert [rule.name for rule, _ in POLICY.judge([finding])] == ["feature-skew"]
    assert finding.status == "alert"
    assert set(finding.details["skewed_features"]) == expected, finding.summary
    rates = [row["mismatch_rate"] for row in finding.details["features"]]
    assert rates == sorted(rates, reverse=True)
    assert finding.metrics["skewed_feature_count"] == len(expected)
    worst = finding.details["features"][0]
    assert worst["feature"] in expected and len(worst["examples"]) == 3
    saved = json.loads((tmp_path / "skew.json").read_text())
    assert saved["details"]["skewed_features"] == finding.details["skewed_features"]


def test_skew_report_shows_the_size_and_kind_of_difference(
    monitor_world, traffic, store, log_path, tmp_path
):
    cents = traffic.assign(amount=traffic["amount"] * 100)
    logged = log_and_read(log_path, traffic, cents, monitor_world)
    amount = run_skew(store, logged, ["amount"], tmp_path, SKEW, service_name="fraud_v2").details[
        "features"
    ][0]
    assert amount["mismatch_rate"] == 1.0
    assert amount["median_ratio_served_to_offline"] == pytest.approx(100.0)
    example = amount["examples"][0]
    assert example["served"] == pytest.approx(100 * example["offline"])

    zeroed = traffic.assign(customer_mean_amount_1d=traffic["customer_mean_amount_1d"].fillna(0))
    logged = log_and_read(tmp_path / "zeroed.sqlite", traffic, zeroed, monitor_world)
    default = run_skew(
        store, logged, ["customer_mean_amount_1d"], tmp_path, SKEW, service_name="fraud_v2"
    ).details["features"][0]
    assert default["mismatches"] == default["missing_offline_only"] > 0
    assert default["examples"][0]["served"] == 0.0 and default["examples"][0]["offline"] is None


def test_stale_online_store_flags_only_the_stale_view(
    monitor_world, traffic, store, log_path, tmp_path
):
    logged = log_and_read(log_path, traffic, stale_terminal_risk(store)(traffic), monitor_world)
    finding = run_skew(
        store, logged, monitor_world.champion.features, tmp_path, SKEW, service_name="fraud_v2"
    )
    skewed = set(finding.details["skewed_features"])
    # Counts move every day; a fraud rate that stayed 0 over two days looks the same
    # stale or fresh, so which rates show depends on the data, never outside the view.
    assert {"terminal_tx_count_1d", "terminal_tx_count_7d", "terminal_tx_count_30d"} <= skewed
    assert skewed <= set(TERMINAL_RISK_FEATURES), finding.summary
