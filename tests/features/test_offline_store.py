"""The ASOF offline store answers exactly what Feast's stock DuckDB store answers, and
Feast's Spark offline store (the scale path) builds the same training frame."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from data.simulator import SimulationConfig, generate
from features.build import build_feature_tables
from features.definitions import SNAPSHOT_TTL
from features.offline_store import (
    DuckDBAsofOfflineStore,
    DuckDBAsofRetrievalJob,
)
from features.store import apply_definitions, feature_service, open_store
from fraudlab.errors import ConfigError
from fraudlab.settings import Settings
from pipelines.training_set import point_in_time_frame
from tests.conftest import services_required

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.infra.offline_stores.offline_store import RetrievalJob

US = pd.Timedelta(microseconds=1)
ENTITY_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "event_timestamp"]
UNSEEN_ID = 10**9
ASOF_STORE_TYPE = "features.offline_store.DuckDBAsofOfflineStore"


@dataclass(frozen=True)
class Stores:
    settings: Settings
    repository: FeatureStore  # as features/repo/feature_store.yaml configures it
    ours: FeatureStore
    stock: FeatureStore
    entity_df: pd.DataFrame  # every payment's keys and time, and the edge rows
    payments: pd.DataFrame  # the simulated payments, every column
    edges: dict[str, int]  # what each hand-made row tests -> its transaction_id


def _edge_rows(tx: pd.DataFrame, snapshots: pd.Series) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows at the ttl boundary, before any snapshot, exactly on one, and for unseen keys."""
    first, last = snapshots.min(), snapshots.max()
    customer, terminal = int(tx["customer_id"].iloc[0]), int(tx["terminal_id"].iloc[0])
    cases = {
        "exactly_ttl_old": (customer, terminal, last + SNAPSHOT_TTL),
        "just_older_than_ttl": (customer, terminal, last + SNAPSHOT_TTL + US),
        "long_after_last_snapshot": (customer, terminal, last + 10 * SNAPSHOT_TTL),
        "before_first_snapshot": (customer, terminal, first - US),
        "exactly_on_first_snapshot": (customer, terminal, first),
        "exactly_on_a_snapshot": (customer, terminal, first + pd.Timedelta(days=5)),
        "unseen_customer": (UNSEEN_ID, terminal, first + pd.Timedelta(days=5, hours=3)),
        "unseen_terminal": (customer, UNSEEN_ID, first + pd.Timedelta(days=5, hours=3)),
    }
    next_id = int(tx["transaction_id"].max()) + 1
    ids = {name: next_id + i for i, name in enumerate(cases)}
    rows = pd.DataFrame(
        [(ids[name], *case) for name, case in cases.items()], columns=ENTITY_COLUMNS
    )
    rows["event_timestamp"] = rows["event_timestamp"].astype(tx["event_timestamp"].dtype)
    return rows, ids


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    settings = Settings(home=tmp_path_factory.mktemp("offline_store"))
    config = SimulationConfig(
        customers=200, terminals=400, days=40, seed=3, start_date=date(2026, 1, 1)
    )
    generate(config, settings.transactions_path)
    tx = pd.read_parquet(settings.transactions_path)
    build_feature_tables(tx, settings.feature_data_dir)
    apply_definitions(settings)
    snapshots = pd.read_parquet(settings.feature_data_dir / "customer_spending.parquet")
    edges, ids = _edge_rows(tx, snapshots["event_timestamp"])
    entity_df = pd.concat([tx[ENTITY_COLUMNS], edges], ignore_index=True)
    repository = open_store(settings)
    ours = open_store(settings, offline_store={"type": ASOF_STORE_TYPE})
    stock = open_store(settings, offline_store={"type": "duckdb"})  # the reference
    return Stores(settings, repository, ours, stock, entity_df, tx, ids)


def _job(
    store: FeatureStore, entity_df: pd.DataFrame, service: str, full_names: bool
) -> RetrievalJob:
    service_ = feature_service(store, service)
    return store.get_historical_features(
        entity_df=entity_df, features=service_, full_feature_names=full_names
    )


def _retrieve(
    store: FeatureStore, entity_df: pd.DataFrame, service: str, full_names: bool
) -> pd.DataFrame:
    return (
        _job(store, entity_df, service, full_names)
        .to_df()
        .sort_values("transaction_id")
        .reset_index(drop=True)
    )


def test_the_repository_uses_the_asof_store(stores: Stores) -> None:
    assert isinstance(stores.repository._get_provider().offline_store, DuckDBAsofOfflineStore)


@pytest.mark.parametrize(
    ("service", "full_names"), [("fraud_v2", False), ("fraud_v1", False), ("fraud_v2", True)]
)
def test_asof_store_equals_stock_duckdb_store_row_by_row(
    stores: Stores, service: str, full_names: bool
) -> None:
    assert isinstance(
        _job(stores.ours, stores.entity_df, service, full_names), DuckDBAsofRetrievalJob
    )  # the ASOF path ran, not the fallback to the stock store
    ours = _retrieve(stores.ours, stores.entity_df, service, full_names)
    stock = _retrieve(stores.stock, stores.entity_df, service, full_names)
    assert len(ours) == len(stores.entity_df)
    assert list(ours.columns) == list(stock.columns)
    pd.testing.assert_frame_equal(ours, stock)  # NaN equals NaN here


def test_edges_follow_feast_semantics(stores: Stores) -> None:
    frame = _retrieve(stores.ours, stores.entity_df, "fraud_v2", False).set_index("transaction_id")
    count, rate = "customer_tx_count_30d", "terminal_tx_count_30d"

    def found(case: str, column: str) -> bool:
        return bool(np.isfinite(frame.loc[stores.edges[case], column]))

    assert found("exactly_ttl_old", count) and found("exactly_ttl_old", rate)
    assert not found("just_older_than_ttl", count) and not found("just_older_than_ttl", rate)
    assert not found("long_after_last_snapshot", count)
    assert not found("before_first_snapshot", count)
    assert found("exactly_on_first_snapshot", count)  # a snapshot at the payment's time counts
    assert frame.loc[stores.edges["exactly_on_first_snapshot"], count] == 0
    assert found("exactly_on_a_snapshot", count)
    assert not found("unseen_customer", count) and found("unseen_customer", rate)
    assert found("unseen_terminal", count) and not found("unseen_terminal", rate)


@pytest.fixture(scope="module")
def spark(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    """The same repository on Feast's Spark offline store (PySpark in local mode): a
    home of its own, applied with `offline_store: spark`, over the same feature tables.
    Skipped where Java is absent, failed instead under FRAUDLAB_REQUIRE_SERVICES=1."""
    if shutil.which("java") is None:
        message = "Java is not installed: PySpark needs it (Debian: default-jre-headless)"
        if services_required():
            pytest.fail(f"{message}, and FRAUDLAB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    settings = Settings(home=tmp_path_factory.mktemp("spark"), offline_store="spark")
    (settings.home / "feature_data").symlink_to(stores.settings.feature_data_dir)
    apply_definitions(settings)
    yield open_store(settings)
    from pyspark.sql import SparkSession

    if (session := SparkSession.getActiveSession()) is not None:
        session.stop()  # its JVM would otherwise hold the driver's heap for the worker's life


def test_spark_store_answers_what_ours_answers_row_by_row(
    stores: Stores, spark: FeatureStore
) -> None:
    """Every payment and edge row, every feature of every service's view
    (fraud_v3_candidates: the snapshot views, the matured-label views and both velocity
    views, one row per payment). Spark hands the entity's timestamp back without its zone; the join
    is what counts, and the payment's own time comes from the payment."""
    assert type(spark._get_provider().offline_store).__name__ == "SparkOfflineStore"
    ours = _retrieve(stores.ours, stores.entity_df, "fraud_v3_candidates", False)
    by_spark = _retrieve(spark, stores.entity_df, "fraud_v3_candidates", False)
    by_spark["event_timestamp"] = by_spark["event_timestamp"].dt.tz_localize("UTC").dt.as_unit("us")
    assert len(ours) == len(stores.entity_df)
    pd.testing.assert_frame_equal(by_spark, ours)  # NaN equals NaN here


def test_spark_store_builds_the_same_training_frame(stores: Stores, spark: FeatureStore) -> None:
    """pipelines/training_set.py's frame, features and request features, through each."""
    frames = [
        point_in_time_frame(store, stores.payments, feature_service(store, "fraud_v3"))
        .sort_values("transaction_id")
        .reset_index(drop=True)
        for store in (stores.ours, spark)
    ]
    pd.testing.assert_frame_equal(frames[1], frames[0])


def test_spark_without_java_is_one_clear_line_and_registers_nothing(
    stores: Stores, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A machine with no Java (PATH and JAVA_HOME without it): `features apply` on the
    Spark setting says what is missing, exit 2, no traceback, and writes no registry."""
    from typer.testing import CliRunner

    from fraudlab.cli import app
    from fraudlab.settings import get_settings

    (tmp_path / "feature_data").symlink_to(stores.settings.feature_data_dir)
    registry = Settings(home=tmp_path).feast_dir / "registry.db"
    monkeypatch.setenv("FRAUDLAB_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUDLAB_OFFLINE_STORE", "spark")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["features", "apply"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "needs Java 17" in result.output and "Traceback" not in result.output
    assert not registry.exists()


def test_a_registry_applied_for_spark_is_refused_by_the_duckdb_setting(
    stores: Stores, spark: FeatureStore
) -> None:
    """The setting changed back without `features apply`: one line naming the command,
    not Feast's assertion deep in its DuckDB store."""
    home = Path(str(spark.config.registry.path)).parents[1]
    duckdb = open_store(Settings(home=home))
    service = feature_service(duckdb, "fraud_v2")
    with pytest.raises(ConfigError, match="run `fraudlab features apply`"):
        point_in_time_frame(duckdb, stores.payments, service)
