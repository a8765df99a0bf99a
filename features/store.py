"""Opening the Feast repository with the locations and online store the settings pick.

features/repo/feature_store.yaml describes the repository, with the embedded profile's
default locations for the `feast` CLI: this module reads it and puts the settings'
locations in (the registry and the SQLite online store under the home, or Redis in the
production profile). Nothing is
exported to the environment: the config is handed to Feast as an object.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from features.definitions import (
    FEATURE_SERVICE_NAMES,
    REQUEST_FEATURES_TAG,
    SNAPSHOT_TTL,
    VIEWS,
    define,
)
from fraudlab.errors import (
    ConfigError,
    FeatureServiceNotFound,
    MissingInput,
    ServiceUnavailable,
)
from fraudlab.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore
    from feast.repo_config import RepoConfig

REPO_DIR = Path(__file__).parent / "repo"
EFFECTIVE_CONFIG = "feature_store.yaml"  # under settings.feast_dir: for the `feast` CLI


def repo_config_values(settings: Settings, single_writer: bool = False) -> dict[str, Any]:
    """feature_store.yaml with this settings' locations and online store.

    `single_writer`: the store of a process that is the only writer of the rows it
    writes and reads each row before merging into it (the stream worker, for the
    payment state): Feast's Redis store then skips its own read of every key's
    timestamp before a write (`skip_dedup`), one round trip per batch instead of two."""
    values: dict[str, Any] = yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text())
    values["registry"] = str(settings.feast_dir / "registry.db")
    if settings.offline_store == "spark":
        values["offline_store"] = {"type": "spark", "spark_conf": spark_conf(settings)}
    if settings.online_store_type == "redis":
        values["online_store"] = {
            "type": "redis",
            "connection_string": settings.redis_connection,
        }
        if single_writer:
            values["online_store"]["skip_dedup"] = True
    else:
        values["online_store"] = {"type": "sqlite", "path": str(settings.feast_dir / "online.db")}
    return values


def spark_conf(settings: Settings) -> dict[str, str]:
    """The Spark session Feast's Spark offline store starts (settings.spark_master).
    Refuses, in one line, a machine that cannot start it in local mode."""
    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError("offline_store: spark needs PySpark: pip install 'pyspark==4.3.0'")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):  # every driver is a JVM
        raise ConfigError(
            "offline_store: spark runs a PySpark driver, which needs Java 17 or newer "
            "(Debian: apt-get install default-jre-headless); or set offline_store: duckdb"
        )
    return {
        "spark.master": settings.spark_master,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.session.timeZone": "UTC",  # the tables' timestamps are UTC
        "spark.ui.enabled": "false",  # no web UI on a port nobody asked for
        "spark.ui.showConsoleProgress": "false",  # its bars would cut through our output
        "spark.log.level": "ERROR",  # not a WARN per large entity upload
        # Arrow moves the entity frame in and the joined rows out as columns.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": "8",  # Spark's 200 are for a cluster
        # The training frame comes back whole to train on (1.2 GB at 10M payments of
        # fraud_v2, past Spark's 1 GB default): the driver's heap is the bound.
        "spark.driver.maxResultSize": "0",
    }


def repo_config(settings: Settings, single_writer: bool = False, **overrides: Any) -> RepoConfig:
    from feast.repo_config import RepoConfig

    config = RepoConfig(**{**repo_config_values(settings, single_writer), **overrides})
    config.repo_path = REPO_DIR
    return config


def open_store(settings: Settings, single_writer: bool = False, **overrides: Any) -> FeatureStore:
    """The repository as these settings see it; `overrides` replace config keys (e.g.
    another offline store, to compare stores); `single_writer`: see repo_config_values."""
    from feast import FeatureStore

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    config = repo_config(settings, single_writer, **overrides)
    return FeatureStore(repo_path=str(REPO_DIR), config=config)


def apply_definitions(settings: Settings) -> list[str]:
    """`feast apply`: register entities, views and services; returns their names.

    Also writes the effective config to <home>/feast/feature_store.yaml, so the `feast`
    CLI can be pointed at exactly what fraudlab uses (`feast -f <it> ...`)."""
    store = open_store(settings)
    objects = define(settings.feature_data_dir, settings.offline_store).objects
    store.apply(objects)
    (settings.feast_dir / EFFECTIVE_CONFIG).write_text(
        yaml.safe_dump(repo_config_values(settings), sort_keys=False)
    )
    return [obj.name for obj in objects]


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    """A feature service from the registry (a registry may hold more than ours)."""
    try:
        return store.get_feature_service(name)
    except Exception as exc:  # feast raises its own not-found error type per registry
        if name in FEATURE_SERVICE_NAMES:
            raise MissingInput(
                f"feature service {name!r} is not registered yet: run `fraudlab features apply`"
            ) from exc
        raise FeatureServiceNotFound(
            f"unknown feature service {name!r}; defined: {', '.join(FEATURE_SERVICE_NAMES)}"
        ) from exc


def historical_features(
    store: FeatureStore, entity_df: pd.DataFrame, service: FeatureService
) -> pd.DataFrame:
    """`get_historical_features(...).to_df()`, once the registry's sources are checked to
    be the kind this store's offline store reads: a registry applied under the other
    `offline_store` setting is one clear line, not Feast's assertion."""
    spark = store.config.offline_store.type == "spark"
    for projection in service.feature_view_projections:
        source = store.get_feature_view(projection.name).batch_source
        if (type(source).__name__ == "SparkSource") != spark:
            raise ConfigError(
                f"the registry's feature views were applied for offline_store: "
                f"{'duckdb' if spark else 'spark'}, and the setting is now "
                f"{'spark' if spark else 'duckdb'}: run `fraudlab features apply`"
            )
    return store.get_historical_features(entity_df=entity_df, features=service).to_df()


def service_features(service: FeatureService) -> tuple[list[str], list[str]]:
    """(entity features, request features) that a feature service names, in order."""
    entity = [f.name for proj in service.feature_view_projections for f in proj.features]
    request = [n for n in service.tags.get(REQUEST_FEATURES_TAG, "").split(",") if n]
    return entity, request


def materialize(
    settings: Settings,
    end: datetime,
    start: datetime | None = None,
    *,
    payment_state: bool = False,
) -> None:
    """Copy the latest snapshot per entity in [start, end] into the online store.

    Snapshots are daily and dense (every entity, every midnight), so the default
    window of one snapshot TTL before `end` always holds each entity's latest row.
    Feast's own `materialize_incremental` measures its first window from the wall
    clock, which would skip a simulated history entirely.

    The payment-state views (velocity) belong to serving once it runs: its updates
    carry them on. So they are copied only when asked (`payment_state`: seeding a new
    online store, `fraudlab features materialize`); a daily batch run leaves them alone.
    """
    store = open_store(settings)
    views = [
        name for name, spec in VIEWS.items() if spec.online and (payment_state or not spec.pushed)
    ]
    try:
        store.materialize(start_date=start or end - SNAPSHOT_TTL, end_date=end, feature_views=views)
    except ConnectionError as exc:
        raise ServiceUnavailable(f"online store unreachable: {exc}") from exc
