"""Training sets: labelled payments joined to their features as known at payment time.

The point-in-time (`pit`) join asks Feast for each payment's features as of its own
timestamp, and labels each payment as the bank knew it at the training cutoff.

The `naive` join is the classic notebook mistake, built on purpose for the leakage
story. It recomputes the feature tables in memory with every chargeback treated as
known the moment the payment happened, joins each payment to its calendar day's
end-of-day row (so the day's own payments, itself included, are in its features), and
labels with the final truth. Offline it looks excellent; online those values never
exist, because chargebacks arrive weeks later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from data.labels import fraud_reported_at, labels_known_at
from features.build import DayGrid, customer_spending, terminal_risk
from features.store import feature_service, historical_features
from features.transforms import request_features
from fraudlab.errors import ConfigError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

JoinKind = Literal["pit", "naive"]
ENTITY_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "event_timestamp"]


@dataclass(frozen=True)
class TimeSplit:
    """train | gap | validation | gap | test | label maturity wait | cutoff.

    Labels are those known at the cutoff. The last days before it are left out: most
    of their frauds have not been reported yet, so they would teach and grade the
    model with frauds labelled legitimate.
    """

    train_start: pd.Timestamp
    validation_start: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    cutoff: pd.Timestamp
    gap: pd.Timedelta

    @classmethod
    def ending_at(
        cls,
        cutoff: pd.Timestamp,
        train_start: pd.Timestamp,
        validation_days: int,
        test_days: int,
        gap_days: int,
        maturity_days: int,
    ) -> TimeSplit:
        gap = pd.Timedelta(days=gap_days)
        test_end = cutoff - pd.Timedelta(days=maturity_days)
        test_start = test_end - pd.Timedelta(days=test_days)
        validation_start = test_start - gap - pd.Timedelta(days=validation_days)
        if validation_start - gap <= train_start:
            raise ValueError(
                f"no training period left: training would run {train_start:%Y-%m-%d} to "
                f"{validation_start - gap:%Y-%m-%d}; move the cutoff later or shorten "
                "the validation, test or gap days"
            )
        return cls(train_start, validation_start, test_start, test_end, cutoff, gap)

    def period_of(self, ts: pd.Series) -> pd.Series:
        """'train', 'validation', 'test' or '' (in a gap or outside the window)."""
        period = pd.Series("", index=ts.index, dtype=object)
        period[(ts >= self.train_start) & (ts < self.validation_start - self.gap)] = "train"
        period[(ts >= self.validation_start) & (ts < self.test_start - self.gap)] = "validation"
        period[(ts >= self.test_start) & (ts < self.test_end)] = "test"
        return period

    def train_period(self) -> str:
        """Event dates of the training rows (what a model's `train_period` tag says)."""
        return f"{self.train_start:%Y-%m-%d}..{self.validation_start - self.gap:%Y-%m-%d}"

    def describe(self) -> str:
        fmt = "%Y-%m-%d"
        return (
            f"train {self.train_start:{fmt}}..{self.validation_start - self.gap:{fmt}}, "
            f"validation {self.validation_start:{fmt}}..{self.test_start - self.gap:{fmt}}, "
            f"test {self.test_start:{fmt}}..{self.test_end:{fmt}}, "
            f"labels as known at {self.cutoff:{fmt}}"
        )


def with_request_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the request-time features with the one shared function serving also uses."""
    seconds = frame["event_timestamp"].dt.as_unit("us").astype("int64") // 1_000_000
    mean_30d = frame.get("customer_mean_amount_30d")
    computed = request_features(
        frame["amount"].to_numpy(),
        seconds.to_numpy(),
        None if mean_30d is None else mean_30d.to_numpy(),
    )
    return frame.assign(**computed)


NAIVE_VIEWS = ("customer_spending", "terminal_risk")  # what `_naive_join` recomputes
NAIVE_SERVICE = "fraud_v2"  # the newest service made of those views only


def _naive_join(tx: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The leak, on purpose: end-of-day features with every chargeback known at once."""
    everything_known = history.assign(label_available_at=history["event_timestamp"])
    grid = DayGrid.covering(history["event_timestamp"])
    spending = customer_spending(history, grid)
    risk = terminal_risk(everything_known, grid, fraud_reported_at(everything_known))
    end_of_day = tx["event_timestamp"].dt.floor("D") + pd.Timedelta(days=1)
    frame = tx.assign(_day=end_of_day.dt.as_unit("us"))
    for table, key in ((spending, "customer_id"), (risk, "terminal_id")):
        renamed = table.rename(columns={"event_timestamp": "_day"})
        frame = frame.merge(renamed, on=[key, "_day"], how="left", validate="many_to_one")
    return frame.drop(columns="_day")


def build_training_frame(
    store: FeatureStore,
    tx: pd.DataFrame,
    split: TimeSplit,
    service_name: str,
    join: JoinKind = "pit",
    label_events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every payment in the split's periods with the features of `service_name`,
    `label` (as known at the cutoff, from `label_events`: default the file's own) and
    `period`."""
    full_history = tx
    tx = tx.assign(period=split.period_of(tx["event_timestamp"]))
    tx = tx[tx["period"] != ""].reset_index(drop=True)
    service = feature_service(store, service_name)  # validates the name in either case
    if join == "naive":
        views = {p.name for p in service.feature_view_projections} - set(NAIVE_VIEWS)
        if views:
            raise ConfigError(
                f"the naive join builds only {', '.join(NAIVE_VIEWS)} (the leak is in "
                f"terminal_risk); {service_name} also names {', '.join(sorted(views))}: train "
                f"the leaky model on {NAIVE_SERVICE} (--feature-service {NAIVE_SERVICE})"
            )
        frame = _naive_join(tx, full_history)
        frame["label"] = frame["is_fraud"].astype(np.int8)  # the final truth, known or not
        frame = with_request_features(frame)
    else:
        frame = point_in_time_frame(store, tx, service)
        frame["label"] = labels_known_at(frame, split.cutoff, label_events)
    return frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def point_in_time_frame(
    store: FeatureStore, tx: pd.DataFrame, service: FeatureService
) -> pd.DataFrame:
    """`tx` with the service's features as of each payment (one Feast point-in-time
    join) and the request-time features; no label."""
    joined = historical_features(store, tx[ENTITY_COLUMNS], service)
    joined = joined.drop(columns=["customer_id", "terminal_id", "event_timestamp"])
    frame = tx.merge(joined, on="transaction_id", how="left", validate="one_to_one")
    return with_request_features(frame)
