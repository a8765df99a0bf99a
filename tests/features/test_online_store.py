"""Materialization: the online store holds each entity's latest snapshot, as offline."""

from __future__ import annotations

import pandas as pd
import pytest

from features.store import feature_service, materialize, open_store
from tests.conftest import World


@pytest.fixture(scope="module")
def online(world: World):
    table = pd.read_parquet(world.settings.feature_data_dir / "customer_spending.parquet")
    cutoff = table["event_timestamp"].min() + pd.Timedelta(days=40)
    materialize(world.settings, end=cutoff.to_pydatetime())  # default window: no start
    return open_store(world.settings), table[table["event_timestamp"] == cutoff]


def test_materialize_without_start_fills_the_online_store_with_the_latest_snapshot(
    online,
) -> None:
    store, snapshot = online
    active = snapshot[snapshot["customer_tx_count_7d"] > 0].head(20)
    rows = [{"customer_id": int(c), "terminal_id": 0} for c in active["customer_id"]]
    got = store.get_online_features(
        features=feature_service(store, "fraud_v2"), entity_rows=rows
    ).to_dict()
    assert got["customer_tx_count_30d"] == active["customer_tx_count_30d"].tolist()
    assert got["customer_mean_amount_7d"] == pytest.approx(
        active["customer_mean_amount_7d"].tolist(), nan_ok=True
    )


def test_unknown_entity_comes_back_missing_not_zero(online) -> None:
    store, _ = online
    got = store.get_online_features(
        features=feature_service(store, "fraud_v2"),
        entity_rows=[{"customer_id": 10**12, "terminal_id": 10**12}],
    ).to_dict()
    assert got["customer_tx_count_30d"] == [None]
    assert got["terminal_fraud_rate_30d"] == [None]


def test_serving_lookup_returns_exactly_what_feast_get_online_features_returns(online) -> None:
    """serving/features.py reads through the provider for speed; same values, same gaps."""
    import math

    from serving.features import OnlineFeatures

    store, snapshot = online
    service = feature_service(store, "fraud_v2")
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    lookup = OnlineFeatures(store, refs)
    when = snapshot["event_timestamp"].iloc[0].to_pydatetime() + pd.Timedelta(hours=9)
    customers = [*snapshot["customer_id"].head(15).tolist(), 10**12]  # and one unknown
    for i, customer in enumerate(customers):
        ours = lookup.lookup(int(customer), i, 25.0, when)
        feast = store.get_online_features(
            features=refs, entity_rows=[{"customer_id": int(customer), "terminal_id": i}]
        ).to_dict()
        for name in lookup.names:
            expected = feast[name][0]
            got = ours.values[name]
            assert (expected is None and math.isnan(got)) or got == pytest.approx(expected), name
    unknown = lookup.lookup(10**12, 10**12, 25.0, when)
    assert set(unknown.fallback) == set(lookup.names)
