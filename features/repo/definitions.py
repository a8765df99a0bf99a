"""Every feature fraudlab knows, defined once. Training and serving both read these.

An *entity* is the key you fetch features by (a customer, a terminal). A *feature view*
is a table of feature values per entity over time, backed by a Parquet file that
`fraudlab features build` writes. A *feature service* is the exact list of features a
model was trained on: the model records its service's name and serving asks for that.

Feature values are daily snapshots: the row stamped at midnight of day d summarises the
payments of the days before d (never day d itself), and counts a fraud label only once
its chargeback has arrived. So a value is always computable from what was known at its
timestamp, and a point-in-time join picks the latest snapshot at or before a payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

from features.transforms import REQUEST_FEATURES
from fraudlab.settings import get_settings

WINDOWS_DAYS = (1, 7, 30)
# A snapshot older than this is stale: Feast returns it as missing, serving falls back.
SNAPSHOT_TTL = timedelta(days=2)

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A card holder.",
)
terminal = Entity(
    name="terminal",
    join_keys=["terminal_id"],
    value_type=ValueType.INT64,
    description="A merchant's payment terminal.",
)

CUSTOMER_SPENDING_FEATURES = [f"customer_tx_count_{w}d" for w in WINDOWS_DAYS] + [
    f"customer_mean_amount_{w}d" for w in WINDOWS_DAYS
]
TERMINAL_RISK_FEATURES = [f"terminal_tx_count_{w}d" for w in WINDOWS_DAYS] + [
    f"terminal_fraud_rate_{w}d" for w in WINDOWS_DAYS
]


@dataclass(frozen=True)
class FeatureDefinitions:
    """The Feast objects of one repository, with tables under one data folder."""

    customer_spending: FeatureView
    terminal_risk: FeatureView
    services: dict[str, FeatureService]

    @property
    def objects(self) -> list[Any]:
        return [
            customer,
            terminal,
            self.customer_spending,
            self.terminal_risk,
            *self.services.values(),
        ]


def _schema(names: list[str]) -> list[Field]:
    return [Field(name=n, dtype=Int64 if "_count_" in n else Float64) for n in names]


def _view(
    name: str, entity: Entity, features: list[str], data_dir: Path, description: str
) -> FeatureView:
    source = FileSource(
        name=f"{name}_source",
        path=str(data_dir / f"{name}.parquet"),
        timestamp_field="event_timestamp",
    )
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=SNAPSHOT_TTL,
        schema=_schema(features),
        source=source,
        online=True,
        description=description,
    )


def define(feature_data_dir: Path) -> FeatureDefinitions:
    """Build every view and service over the feature tables in `feature_data_dir`."""
    spending = _view(
        "customer_spending",
        customer,
        CUSTOMER_SPENDING_FEATURES,
        feature_data_dir,
        "How much and how often a customer paid over the last 1, 7 and 30 days. "
        "Mean amount is missing (not zero) when there were no payments.",
    )
    risk = _view(
        "terminal_risk",
        terminal,
        TERMINAL_RISK_FEATURES,
        feature_data_dir,
        "Payments at a terminal and the share already reported as fraud over the last "
        "1, 7 and 30 days, counting only chargebacks that had arrived by the snapshot.",
    )
    # Request-time features come from the payment itself (features/transforms.py);
    # Feast does not store them, so a service names them in a tag both sides read.
    v1 = FeatureService(
        name="fraud_v1",
        features=[
            spending[["customer_tx_count_1d", "customer_mean_amount_7d"]],
            risk[["terminal_fraud_rate_30d"]],
        ],
        tags={"request_features": "amount,hour_of_day,is_night"},
        description="A small first model: amount, time of day, spending, terminal risk.",
    )
    v2 = FeatureService(
        name="fraud_v2",
        features=[spending, risk],
        tags={"request_features": ",".join(REQUEST_FEATURES)},
        description="Every customer, terminal and request-time feature.",
    )
    return FeatureDefinitions(spending, risk, {"fraud_v1": v1, "fraud_v2": v2})


# Module-level objects so the `feast` CLI finds them when it scans this repository.
_definitions = define(get_settings().feature_data_dir)
customer_spending = _definitions.customer_spending
terminal_risk = _definitions.terminal_risk
fraud_v1 = _definitions.services["fraud_v1"]
fraud_v2 = _definitions.services["fraud_v2"]

FEATURE_SERVICE_NAMES = ("fraud_v1", "fraud_v2")
