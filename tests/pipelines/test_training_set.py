"""Point-in-time correctness: every joined feature equals a brute-force recomputation from
the raw payments, using only payments and chargebacks known at that payment's time."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.labels import labels_known_at
from features.build import observed_label_delay_days
from features.definitions import LONG_WINDOW_DAYS, MATURED_WINDOWS_DAYS, WINDOWS_DAYS
from pipelines.train import make_split
from pipelines.training_set import build_training_frame
from tests.conftest import World

DAY = pd.Timedelta(days=1)


def brute_force_features(tx: pd.DataFrame, row: pd.Series) -> dict[str, float]:
    """What a careful analyst would compute by hand for one payment.

    The feature pipeline publishes once a day at midnight, so a payment at time t sees
    the snapshot of midnight s = floor(t): payments of days before s, and only the
    chargebacks that had arrived by s. Both are known at t, since s <= t.
    """
    s = row["event_timestamp"].floor("D")
    out: dict[str, float] = {}
    for w in WINDOWS_DAYS:
        in_window = (tx["event_timestamp"] >= s - w * DAY) & (tx["event_timestamp"] < s)
        mine = tx[in_window & (tx["customer_id"] == row["customer_id"])]
        out[f"customer_tx_count_{w}d"] = len(mine)
        out[f"customer_mean_amount_{w}d"] = mine["amount"].mean() if len(mine) else math.nan
        there = tx[in_window & (tx["terminal_id"] == row["terminal_id"])]
        known = (there["is_fraud"] == 1) & (there["label_available_at"] <= s)
        out[f"terminal_tx_count_{w}d"] = len(there)
        out[f"terminal_fraud_rate_{w}d"] = known.sum() / len(there) if len(there) else math.nan
    return out


def brute_force_fraud_history(
    tx: pd.DataFrame, row: pd.Series, key: str, delay_days: int
) -> dict[str, float]:
    """The known-fraud history built for late labels, by hand: at the snapshot s of the
    payment's day, rates over windows ending `delay_days` before s, frauds of the last
    90 days, and days since the latest fraud, each counting a fraud only once its
    chargeback had arrived by s."""
    s = row["event_timestamp"].floor("D")
    prefix = key.removesuffix("_id")
    mine = tx[tx[key] == row[key]]
    known = (mine["is_fraud"] == 1) & (mine["label_available_at"] <= s)
    out: dict[str, float] = {}
    for w in MATURED_WINDOWS_DAYS:
        end = s - delay_days * DAY
        window = (mine["event_timestamp"] >= end - w * DAY) & (mine["event_timestamp"] < end)
        rate = (known & window).sum() / window.sum() if window.any() else math.nan
        out[f"{prefix}_matured_fraud_rate_{w}d"] = rate
    recent = (mine["event_timestamp"] >= s - LONG_WINDOW_DAYS * DAY) & (mine["event_timestamp"] < s)
    out[f"{prefix}_known_fraud_count_{LONG_WINDOW_DAYS}d"] = (known & recent).sum()
    before = known & (mine["event_timestamp"] < s)
    latest = mine.loc[before, "event_timestamp"].max()
    out[f"{prefix}_days_since_known_fraud"] = (
        (s - latest.floor("D")) / DAY if before.any() else math.nan
    )
    return out


def brute_force_velocity(tx: pd.DataFrame, row: pd.Series) -> dict[str, float]:
    """The velocity features by hand: the customer's (and terminal's) payments at an
    earlier instant within each window ending at the payment itself."""
    t = row["event_timestamp"]
    earlier = tx["event_timestamp"] < t
    mine = tx[earlier & (tx["customer_id"] == row["customer_id"])]
    out: dict[str, float] = {}
    for name, width in (("10m", "10min"), ("1h", "1h"), ("24h", "24h")):
        window = mine[mine["event_timestamp"] >= t - pd.Timedelta(width)]["amount"]
        out[f"customer_payments_{name}"] = len(window)
        out[f"customer_amount_sum_{name}"] = window.sum()
        out[f"customer_amount_mean_{name}"] = window.mean() if len(window) else math.nan
        out[f"customer_amount_max_{name}"] = window.max() if len(window) else math.nan
    last_day = mine[mine["event_timestamp"] >= t - DAY]
    out["customer_seconds_since_previous"] = (
        (t - last_day["event_timestamp"].max()).total_seconds() if len(last_day) else math.nan
    )
    today = mine[mine["event_timestamp"] >= t.floor("D")]
    out["customer_terminals_today"] = today["terminal_id"].nunique()
    there = tx[earlier & (tx["terminal_id"] == row["terminal_id"])]
    out["terminal_payments_1h"] = int((there["event_timestamp"] >= t - pd.Timedelta("1h")).sum())
    return out


def _v3_truth(tx: pd.DataFrame, row: pd.Series) -> dict[str, float]:
    delay = observed_label_delay_days(tx)
    return (
        brute_force_features(tx, row)
        | {
            name: value
            for key in ("terminal_id", "customer_id")
            for name, value in brute_force_fraud_history(tx, row, key, delay).items()
        }
        | brute_force_velocity(tx, row)
    )


def _mismatches(
    frame: pd.DataFrame,
    tx: pd.DataFrame,
    rows: list[int],
    truth: Callable[[pd.DataFrame, pd.Series], dict[str, float]] = brute_force_features,
) -> list[str]:
    found = []
    for i in rows:
        row = frame.iloc[i]
        for name, expected in truth(tx, row).items():
            got = row[name]
            same = (math.isnan(expected) and pd.isna(got)) or (
                not pd.isna(got) and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)
            )
            if not same:
                found.append(f"tx {row['transaction_id']} {name}: joined {got}, truth {expected}")
    return found


@pytest.fixture(scope="module")
def frames(world: World, store) -> dict[str, pd.DataFrame]:
    split = make_split(world.settings, world.transactions, world.settings.training.cutoff_day)
    frames = {
        join: build_training_frame(store, world.transactions, split, "fraud_v2", join)
        for join in ("pit", "naive")
    }
    frames["v3"] = build_training_frame(
        store, world.transactions, split, "fraud_v3_candidates", "pit"
    )
    return frames


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_pit_join_equals_brute_force_recomputation(world: World, frames, data) -> None:
    frame = frames["pit"]
    rows = data.draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=5))
    assert _mismatches(frame, world.transactions, rows) == []


def test_pit_join_checked_on_fraud_rows_too(world: World, frames) -> None:
    """Random rows are almost never fraud; check the rows where terminal risk matters."""
    frame = frames["pit"]
    fraud_rows = list(np.flatnonzero(frame["is_fraud"].to_numpy() == 1)[:25])
    assert len(fraud_rows) >= 10
    assert _mismatches(frame, world.transactions, fraud_rows) == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fraud_history_for_late_labels_equals_brute_force_recomputation(
    world: World, frames, data
) -> None:
    frame = frames["v3"]
    rows = data.draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=4))
    assert _mismatches(frame, world.transactions, rows, _v3_truth) == []


def test_fraud_history_checked_where_it_is_not_empty(world: World, frames) -> None:
    """Random rows mostly have no known fraud in their history: check rows that do."""
    frame = frames["v3"]
    delay = observed_label_delay_days(world.transactions)
    assert delay >= 1  # the simulator's chargebacks take days
    with_history = np.flatnonzero(frame["terminal_days_since_known_fraud"].notna().to_numpy())
    with_customer = np.flatnonzero(frame["customer_days_since_known_fraud"].notna().to_numpy())
    rows = [*with_history[:: max(1, len(with_history) // 12)][:12], *with_customer[:8]]
    assert len(rows) >= 15
    assert _mismatches(frame, world.transactions, rows, _v3_truth) == []


def test_velocity_checked_where_the_payment_has_recent_history(world: World, frames) -> None:
    """Most payments have no earlier one within 10 minutes: check the ones that do,
    including bursts at one terminal, and payments a day apart at the window's edge."""
    frame = frames["v3"]
    burst = np.flatnonzero(frame["customer_payments_10m"].to_numpy() > 0)
    busy_terminal = np.flatnonzero(frame["terminal_payments_1h"].to_numpy() > 0)
    several_today = np.flatnonzero(frame["customer_terminals_today"].to_numpy() > 1)
    rows = [*burst[:8], *busy_terminal[:6], *several_today[:6]]
    assert len(burst) >= 8 and len(busy_terminal) >= 6 and len(several_today) >= 6
    assert _mismatches(frame, world.transactions, rows, _v3_truth) == []


def test_naive_join_leaks_the_future_and_is_detected(world: World, frames) -> None:
    """The same brute-force check catches the naive join on most rows: it is not PIT."""
    frame = frames["naive"]
    rng = np.random.default_rng(0)
    rows = list(rng.choice(len(frame), size=60, replace=False))
    leaking_rows = {m.split()[1] for m in _mismatches(frame, world.transactions, rows)}
    assert len(leaking_rows) >= 45, "naive features should disagree with PIT on most rows"


def test_naive_join_uses_chargebacks_that_arrive_after_the_payment(frames) -> None:
    naive, pit = frames["naive"], frames["pit"]
    assert (naive["terminal_fraud_rate_30d"] > 0).mean() > (
        pit["terminal_fraud_rate_30d"] > 0
    ).mean()
    assert naive["label"].sum() > pit["label"].sum()  # unreported and late frauds as labels


def test_labels_are_those_known_at_the_cutoff(world: World) -> None:
    tx = world.transactions
    cutoff = tx["event_timestamp"].quantile(0.5)
    labels = labels_known_at(tx, cutoff)
    late = (tx["is_fraud"] == 1) & ~(tx["label_available_at"] <= cutoff)
    assert labels[late].sum() == 0
    assert labels.sum() == ((tx["is_fraud"] == 1) & (tx["label_available_at"] <= cutoff)).sum()
    assert late.sum() > 0  # the check is not vacuous


def test_split_periods_are_ordered_with_gaps(world: World, frames) -> None:
    frame = frames["pit"]
    bounds = frame.groupby("period")["event_timestamp"].agg(["min", "max"])
    gap = pd.Timedelta(days=world.settings.training.gap_days)
    assert bounds.loc["train", "max"] + gap <= bounds.loc["validation", "min"]
    assert bounds.loc["validation", "max"] + gap <= bounds.loc["test", "min"]
