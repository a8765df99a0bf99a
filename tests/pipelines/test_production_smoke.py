"""Production mode: the same training run with MLflow on PostgreSQL and Feast's online
store on Redis (both on localhost). Skips when they are absent, unless
FRAUDLAB_REQUIRE_SERVICES=1 (CI), where absence is a failure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from features.store import apply_definitions, feature_service, materialize, open_store
from fraudlab.settings import Settings
from pipelines.registry import CHAMPION, alias_version, connect
from pipelines.train import run_training
from tests.conftest import World, reachable, services_required

POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
REDIS_TEST_DB = 7  # keeps test keys away from a demo's online store in db 0


@pytest.fixture(scope="module")
def production(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    missing = [
        name for name, addr in (("PostgreSQL", POSTGRES), ("Redis", REDIS)) if not reachable(addr)
    ]
    if missing:
        message = f"{' and '.join(missing)} not reachable on localhost"
        if services_required():
            pytest.fail(f"{message}, and FRAUDLAB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    database = f"fraudlab_test_{uuid.uuid4().hex[:8]}"
    home = tmp_path_factory.mktemp("production")
    # Same data and features as the embedded world, production services around them.
    for sub in ("data", "feature_data"):
        (home / sub).symlink_to(world.settings.home / sub)
    settings = world.settings.model_copy(
        update={
            "profile": "production",
            "home": home,
            "postgres_uri": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
            "redis_connection": f"127.0.0.1:6379,db={REDIS_TEST_DB}",
        }
    )
    apply_definitions(settings)
    yield settings
    engine = create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    engine.dispose()
    import redis

    redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_TEST_DB).flushdb()


def test_training_registers_in_mlflow_on_postgresql(production: Settings) -> None:
    assert production.tracking_uri.startswith("postgresql+psycopg2://")
    (outcome,) = run_training(production, ["lightgbm"], "fraud_v2")
    client = connect(production)
    assert alias_version(client, "fraud-detector", CHAMPION) == outcome.version
    run = client.get_run(outcome.run_id)
    assert run.data.metrics["test_average_precision"] == pytest.approx(
        outcome.metrics["average_precision"]
    )


def test_feast_online_store_on_redis_serves_materialized_values(
    production: Settings, world: World
) -> None:
    table = pd.read_parquet(production.feature_data_dir / "customer_spending.parquet")
    end = table["event_timestamp"].max()
    materialize(
        production,
        end=end.to_pydatetime() + pd.Timedelta(seconds=1),
        start=(end - pd.Timedelta(days=3)).to_pydatetime(),
    )
    store = open_store(production)
    assert store.config.online_store.type == "redis"
    latest = table[table["event_timestamp"] == end].set_index("customer_id")
    customer = int(latest.index[latest["customer_tx_count_30d"] > 0][0])
    online = store.get_online_features(
        features=feature_service(store, "fraud_v2"),
        entity_rows=[{"customer_id": customer, "terminal_id": 0}],
    ).to_dict()
    assert online["customer_tx_count_30d"][0] == latest.loc[customer, "customer_tx_count_30d"]
    assert online["customer_mean_amount_30d"][0] == pytest.approx(
        latest.loc[customer, "customer_mean_amount_30d"]
    )


def test_serving_lookup_on_redis_stays_the_same_size_lookup_after_lookup(
    production: Settings,
) -> None:
    """Feast's Redis store appends a timestamp field to the feature list it is handed;
    the serving lookup once handed it its own list, so every lookup grew the next one
    (3,006 fields after 3,000 lookups, p50 1.1 -> 16.9 ms). Same answers, same size."""
    from serving.features import OnlineFeatures

    table = pd.read_parquet(production.feature_data_dir / "customer_spending.parquet")
    end = table["event_timestamp"].max()
    materialize(production, end=end.to_pydatetime() + pd.Timedelta(seconds=1))
    store = open_store(production)
    service = feature_service(store, "fraud_v2")
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    lookup = OnlineFeatures(store, refs)
    lookup._batched = None  # the read per view (SQLite's), on Redis, whose store appends
    asked = [list(names) for _, _, names in lookup._views]
    customer = int(table.loc[table["event_timestamp"] == end, "customer_id"].iloc[0])
    first = lookup.lookup(customer, 0, 25.0, end.to_pydatetime())
    for _ in range(50):
        again = lookup.lookup(customer, 0, 25.0, end.to_pydatetime())
    assert [list(names) for _, _, names in lookup._views] == asked
    assert again.values == pytest.approx(first.values, nan_ok=True)


def test_serving_lookup_on_redis_answers_what_feast_answers(production: Settings) -> None:
    """The lookup reads every view in one Redis pipeline (serving/features.py,
    `_batched_redis_read`): the same values as Feast's get_online_features, for known
    and unknown customers and terminals, and each view's row time."""
    from serving.features import OnlineFeatures

    table = pd.read_parquet(production.feature_data_dir / "customer_spending.parquet")
    end = table["event_timestamp"].max()
    materialize(production, end=end.to_pydatetime() + pd.Timedelta(seconds=1))
    store = open_store(production)
    service = feature_service(store, "fraud_v2")
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    lookup = OnlineFeatures(store, refs)
    assert lookup._batched is not None  # the one-pipeline path, not a read per view
    customers = table.loc[table["event_timestamp"] == end, "customer_id"].head(10).tolist()
    terminals = pd.read_parquet(production.feature_data_dir / "terminal_risk.parquet")
    terminals = terminals.loc[terminals["event_timestamp"] == end, "terminal_id"].head(10).tolist()
    at = end.to_pydatetime() + pd.Timedelta(hours=1)
    for customer, terminal in [*zip(customers, terminals, strict=True), (10**12, 10**12)]:
        ours = lookup.lookup(int(customer), int(terminal), 25.0, at)
        feast = store.get_online_features(
            features=refs, entity_rows=[{"customer_id": customer, "terminal_id": terminal}]
        ).to_dict()
        for ref in refs:
            name = ref.split(":", 1)[1]
            expected = feast[name][0]
            assert ours.values[name] == pytest.approx(
                float("nan") if expected is None else expected, nan_ok=True
            ), (customer, terminal, name)
        # A row's age at the payment; no row, no age (as on SQLite): Feast's Redis store
        # reads a missing key as a row stamped 1970, which was logged as a 56-year age.
        expected_age = 3600.0 if customer != 10**12 else None
        assert ours.ages["customer_spending"] == expected_age, ours.ages
        assert ours.ages["terminal_risk"] == expected_age, ours.ages


def test_one_pipeline_reads_what_a_read_per_view_reads_on_redis(production: Settings) -> None:
    """fraud_v3 on Redis: four snapshot views and the customer's payment state (bytes),
    one pipeline against one `online_read` per view, row by row, unknown ids too."""
    from serving.features import OnlineFeatures

    table = pd.read_parquet(production.feature_data_dir / "customer_spending.parquet")
    end = table["event_timestamp"].max()
    materialize(production, end=end.to_pydatetime() + pd.Timedelta(seconds=1), payment_state=True)
    store = open_store(production)
    service = feature_service(store, "fraud_v3")
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    lookup = OnlineFeatures(store, refs, budget_seconds=10.0)  # no view skipped for time
    assert lookup._batched is not None and len(lookup._views) == 5
    (state,) = [i for i, (v, _, _) in enumerate(lookup._views) if v.name.endswith("_state")]
    customers = table.loc[table["event_timestamp"] == end, "customer_id"].head(20).tolist()
    states = 0
    for customer in [*customers, 10**12]:
        ids = {"customer_id": int(customer), "terminal_id": int(customer) % 50}
        batched, each = lookup._batched(ids), lookup._read_each(ids)
        assert batched == each, customer
        row = batched[state][1]
        states += row is not None and any(value.bytes_val for value in row.values())
    assert states > 0  # payment states were read, not only empty rows
