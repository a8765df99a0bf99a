"""Every feature fraudlab knows, defined once. Training, serving and the skew job read
these; the `feast` CLI reads them through the thin shim in features/repo/definitions.py.

An *entity* is the key you fetch features by (a customer, a terminal). A *feature view*
is a table of feature values per entity over time, backed by a Parquet file that
`fraudlab features build` writes. A *feature service* is the exact list of features a
model was trained on: the model records its service's name and serving asks for that.

Most views are daily snapshots: the row stamped at midnight of day d summarises the
payments of the days before d (never day d itself), and counts a fraud label only once
its chargeback has arrived. So a value is always computable from what was known at its
timestamp, and a point-in-time join picks the latest snapshot at or before a payment.
The velocity views have one row per payment, stamped at it, holding what happened just
before it (features/velocity.py); online, serving computes them from the payment-state
views, which its own updates keep.

Pure: importing this module reads no settings and touches no file. Where the tables
live is an argument of `define`, given by whoever knows (settings, or the shim).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.data_source import DataSource
from feast.types import Bytes, Float64, Int64
from feast.value_type import ValueType

from features.transforms import REQUEST_FEATURES
from features.velocity import (
    CUSTOMER_VELOCITY_FEATURES,
    STATE_FIELDS,
    STATE_VIEWS,
    TERMINAL_VELOCITY_FEATURES,
)

if TYPE_CHECKING:
    from fraudlab.settings import OfflineEngine

WINDOWS_DAYS = (1, 7, 30)
# Known-fraud features built for late labels (features/build.py, matured_fraud_history):
# rates over windows ending a label delay before the snapshot, and a long-window count.
MATURED_WINDOWS_DAYS = (7, 30)
LONG_WINDOW_DAYS = 90
# A snapshot older than this is stale: Feast returns it as missing, serving falls back.
SNAPSHOT_TTL = timedelta(days=2)
TIMESTAMP_FIELD = "event_timestamp"

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


def fraud_history_features(prefix: str) -> list[str]:
    return [
        *(f"{prefix}_matured_fraud_rate_{w}d" for w in MATURED_WINDOWS_DAYS),
        f"{prefix}_known_fraud_count_{LONG_WINDOW_DAYS}d",
        f"{prefix}_days_since_known_fraud",
    ]


# A velocity row is stamped at its own payment and a training join always meets it
# exactly; a second is plenty of slack and makes any other match come back missing.
VELOCITY_TTL = timedelta(seconds=1)


@dataclass(frozen=True)
class ViewSpec:
    """A view's entity and features. `online`: materialized and read by serving as
    stored; the velocity views are offline tables whose online values serving computes
    from the payment-state views; those are `pushed` (a Feast push source: serving's
    updates and the stream worker write them) and hold lists."""

    entity: Entity
    features: list[str]
    description: str
    ttl: timedelta = SNAPSHOT_TTL
    online: bool = True
    pushed: bool = False


def is_count(feature: str) -> bool:
    """Integer-valued features (counts), stored as Int64; everything else is Float64."""
    return "_count_" in feature or "_payments_" in feature or feature.endswith("_today")


VIEWS: dict[str, ViewSpec] = {
    "customer_spending": ViewSpec(
        customer,
        CUSTOMER_SPENDING_FEATURES,
        "How much and how often a customer paid over the last 1, 7 and 30 days. "
        "Mean amount is missing (not zero) when there were no payments.",
    ),
    "terminal_risk": ViewSpec(
        terminal,
        TERMINAL_RISK_FEATURES,
        "Payments at a terminal and the share already reported as fraud over the last "
        "1, 7 and 30 days, counting only chargebacks that had arrived by the snapshot.",
    ),
    # With chargebacks a week or more late, "frauds of the last 1 or 7 days already
    # known" is almost always zero; these windows end one label delay (the data's
    # median, or a setting) before the snapshot, where most labels have arrived.
    "terminal_matured_risk": ViewSpec(
        terminal,
        fraud_history_features("terminal"),
        "A terminal's known fraud rate over the 7 and 30 days ending one label delay "
        f"before the snapshot, its known frauds over {LONG_WINDOW_DAYS} days, and days "
        "since its latest known fraud (missing when none is known).",
    ),
    "customer_fraud_history": ViewSpec(
        customer,
        fraud_history_features("customer"),
        "The same known-fraud history for a customer's card.",
    ),
    "customer_velocity": ViewSpec(
        customer,
        CUSTOMER_VELOCITY_FEATURES,
        "A customer's payments just before each payment (its own day included): count, "
        "amount sum, mean and max over 10 minutes, 1 hour and 24 hours, seconds since "
        "the previous payment, distinct terminals today. One row per payment; online "
        "they are computed from customer_payment_state (features/velocity.py).",
        ttl=VELOCITY_TTL,
        online=False,
    ),
    "terminal_velocity": ViewSpec(
        terminal,
        TERMINAL_VELOCITY_FEATURES,
        "Payments at a terminal in the hour before each payment; online from "
        "terminal_payment_state.",
        ttl=VELOCITY_TTL,
        online=False,
    ),
    STATE_VIEWS["customer"]: ViewSpec(
        customer,
        STATE_FIELDS,
        "A customer's recent payments, packed (id, time, amount, terminal; "
        "features/velocity.py PaymentState): the online state the velocity features are "
        "computed from, pushed by every scored payment.",
        pushed=True,
    ),
    STATE_VIEWS["terminal"]: ViewSpec(
        terminal,
        STATE_FIELDS,
        "A terminal's recent payments: the state terminal_velocity is computed from.",
        pushed=True,
    ),
}


@dataclass(frozen=True)
class ServiceSpec:
    """A model's inputs: features per view (None: all of the view's), then the
    request-time features computed from the payment itself (features/transforms.py)."""

    views: dict[str, list[str] | None]
    request_features: list[str]
    description: str


SERVICES: dict[str, ServiceSpec] = {
    "fraud_v1": ServiceSpec(
        {
            "customer_spending": ["customer_tx_count_1d", "customer_mean_amount_7d"],
            "terminal_risk": ["terminal_fraud_rate_30d"],
        },
        ["amount", "hour_of_day", "is_night"],
        "A small first model: amount, time of day, spending, terminal risk.",
    ),
    "fraud_v2": ServiceSpec(
        {"customer_spending": None, "terminal_risk": None},
        list(REQUEST_FEATURES),
        "Every customer, terminal and request-time feature.",
    ),
    # What earned its place in `fraudlab ablation` (docs/training-plane.md), on the
    # demo's history and on one with card testing: the known-fraud history built for
    # late labels (terminal and card) and the customer's velocity. The terminal's hourly
    # count cost LightGBM AP on both, so it stays a candidate only.
    "fraud_v3": ServiceSpec(
        {
            "customer_spending": None,
            "terminal_risk": None,
            "terminal_matured_risk": None,
            "customer_fraud_history": None,
            "customer_velocity": None,
        },
        list(REQUEST_FEATURES),
        "fraud_v2, the terminal's and the card's known-fraud history built for late "
        "labels, and the customer's velocity up to the payment.",
    ),
    # Every candidate feature, for the ablation that decides what a service keeps.
    "fraud_v3_candidates": ServiceSpec(
        {
            "customer_spending": None,
            "terminal_risk": None,
            "terminal_matured_risk": None,
            "customer_fraud_history": None,
            "customer_velocity": None,
            "terminal_velocity": None,
        },
        list(REQUEST_FEATURES),
        "Every view: what `fraudlab ablation` takes apart.",
    ),
}
FEATURE_SERVICE_NAMES = tuple(SERVICES)
REQUEST_FEATURES_TAG = "request_features"  # Feast stores no request features: a tag names them


def feature_table_path(feature_data_dir: Path, view: str) -> Path:
    """The Parquet file behind a view: `fraudlab features build` writes it, Feast reads it."""
    return feature_data_dir / f"{view}.parquet"


@dataclass(frozen=True)
class FeatureDefinitions:
    """The Feast objects of one repository, with tables under one data folder."""

    views: dict[str, FeatureView]
    services: dict[str, FeatureService]

    @property
    def objects(self) -> list[Any]:
        return [customer, terminal, *self.views.values(), *self.services.values()]


def _batch_source(name: str, path: Path, engine: OfflineEngine) -> DataSource:
    """The view's Parquet table as the offline store reads it: a FileSource for DuckDB
    (ours, features/offline_store.py), a SparkSource over the same file for Spark."""
    if engine == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        return SparkSource(
            name=f"{name}_source",
            path=str(path),
            file_format="parquet",
            timestamp_field=TIMESTAMP_FIELD,
        )
    return FileSource(name=f"{name}_source", path=str(path), timestamp_field=TIMESTAMP_FIELD)


def _view(name: str, spec: ViewSpec, feature_data_dir: Path, engine: OfflineEngine) -> FeatureView:
    batch = _batch_source(name, feature_table_path(feature_data_dir, name), engine)
    if spec.pushed:
        source: DataSource = PushSource(name=f"{name}_push", batch_source=batch)
        schema = [Field(name=n, dtype=Bytes) for n in spec.features]  # PaymentState.packed
    else:
        source = batch
        schema = [Field(name=n, dtype=Int64 if is_count(n) else Float64) for n in spec.features]
    return FeatureView(
        name=name,
        entities=[spec.entity],
        ttl=spec.ttl,
        schema=schema,
        source=source,
        online=spec.online,
        description=spec.description,
    )


def define(feature_data_dir: Path, engine: OfflineEngine = "duckdb") -> FeatureDefinitions:
    """Every view and service, over the feature tables in `feature_data_dir`, as sources
    the `engine`'s offline store reads (settings.offline_store)."""
    views = {name: _view(name, spec, feature_data_dir, engine) for name, spec in VIEWS.items()}
    services = {
        name: FeatureService(
            name=name,
            features=[
                views[view] if chosen is None else views[view][chosen]
                for view, chosen in spec.views.items()
            ],
            tags={REQUEST_FEATURES_TAG: ",".join(spec.request_features)},
            description=spec.description,
        )
        for name, spec in SERVICES.items()
    }
    return FeatureDefinitions(views, services)
