"""Feast's DuckDB offline store, with the point-in-time join done by DuckDB's ASOF JOIN.

Feast's stock DuckDB store builds its point-in-time join with ibis as an inner join of
every entity row to every earlier feature row of its key, then a window to keep the
latest: correct, but several times slower than the join needs to be. DuckDB has a native
`ASOF LEFT JOIN` ("the latest row at or before"), so this store keeps everything of the
stock store (config, materialization, monitoring, writes) and replaces only
`get_historical_features`, for the inputs it understands: a pandas entity frame and
views backed by local Parquet files. Anything else goes to the stock implementation.

Semantics are Feast's, checked row by row against the stock store in
tests/features/test_offline_store.py: a feature row matches when its key equals the
entity's and its timestamp is at or before the entity's (a snapshot stamped exactly at
the payment's time counts); a match older than the view's ttl (entity time minus
feature time greater than ttl) gives NULLs; a ttl of zero or none means no limit.

Select it in feature_store.yaml with
`offline_store: {type: features.offline_store.DuckDBAsofOfflineStore}`.
"""

from __future__ import annotations

from typing import Any

import duckdb
import ibis
import pandas as pd
import pyarrow as pa
from feast.data_format import ParquetFormat
from feast.feature_view import FeatureView
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _write_data_source,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import StrictStr

ENTITY_TABLE = "feast_entity_df"  # the entity frame as DuckDB sees it (a zero-copy scan)
FEATURE_TS = "__feast_feature_ts"  # a view's timestamp, renamed so it cannot clash


class DuckDBAsofOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """The stock DuckDB store's settings; only the type differs."""

    type: StrictStr = "features.offline_store.DuckDBAsofOfflineStore"


class DuckDBAsofOfflineStore(DuckDBOfflineStore):
    """DuckDBOfflineStore whose historical retrieval is one ASOF LEFT JOIN per view."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if kwargs or not _supported(feature_views, feature_refs, entity_df):
            return DuckDBOfflineStore.get_historical_features(
                config=config,
                feature_views=feature_views,
                feature_refs=feature_refs,
                entity_df=entity_df,
                registry=registry,
                project=project,
                full_feature_names=full_feature_names,
                filter_by_created_timestamp=filter_by_created_timestamp,
                **kwargs,
            )
        assert isinstance(entity_df, pd.DataFrame)
        timestamp_col = _event_timestamp_column(entity_df)
        assert timestamp_col is not None
        query = asof_query(
            feature_views, feature_refs, list(entity_df.columns), timestamp_col, full_feature_names
        )
        timestamps = entity_df[timestamp_col]
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in entity_df.columns if c != timestamp_col],
            min_event_timestamp=timestamps.min().to_pydatetime(),
            max_event_timestamp=timestamps.max().to_pydatetime(),
        )
        return DuckDBAsofRetrievalJob(
            entity_df, query, full_feature_names, metadata, str(config.repo_path)
        )


def _event_timestamp_column(entity_df: pd.DataFrame) -> str | None:
    """Feast's choice of the entity timestamp, if it is a datetime column."""
    column = infer_event_timestamp_from_entity_df(
        dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
    )
    return column if pd.api.types.is_datetime64_any_dtype(entity_df[column]) else None


def _supported(
    feature_views: list[FeatureView], feature_refs: list[str], entity_df: pd.DataFrame | str | None
) -> bool:
    """True when the ASOF path gives exactly Feast's answer; else the stock store runs."""
    if not isinstance(entity_df, pd.DataFrame) or _event_timestamp_column(entity_df) is None:
        return False
    view_names = set()
    for view in feature_views:
        if not isinstance(view, FeatureView) or not _plain_parquet(view.batch_source):
            return False
        join_keys = _join_keys(view)
        if not set(join_keys.values()) <= set(entity_df.columns):
            return False  # let the stock store report the missing key its own way
        view_names.add(view.projection.name_to_use())
    # A ref to a view not in feature_views is an on-demand view: the stock store runs those.
    return all(ref.split(":", 1)[0] in view_names for ref in feature_refs)


def _join_keys(view: FeatureView) -> dict[str, str]:
    """Feature-table key -> entity frame column."""
    return view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}


def _plain_parquet(source: object) -> bool:
    """A local Parquet file read as is: no remote path, Delta, renames or created stamps."""
    return (
        isinstance(source, FileSource)
        and "://" not in source.path
        and not source.field_mapping
        and not source.created_timestamp_column
        and (
            isinstance(source.file_format, ParquetFormat)
            or (source.file_format is None and source.path.endswith(".parquet"))
        )
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def asof_query(
    feature_views: list[FeatureView],
    feature_refs: list[str],
    entity_columns: list[str],
    timestamp_col: str,
    full_feature_names: bool,
) -> str:
    """SELECT every entity row with each view's latest fresh features at its timestamp."""
    entity_ts = f"e.{_ident(timestamp_col)}"
    selects = [f"e.{_ident(c)}" for c in entity_columns]
    joins = []
    for i, view in enumerate(feature_views):
        alias = f"v{i}"
        prefix = view.projection.name_to_use()
        features = [r.split(":", 1)[1] for r in feature_refs if r.startswith(f"{prefix}:")]
        output_prefix = view.projection.name_alias or view.name
        join_keys = _join_keys(view)
        source = view.batch_source
        assert isinstance(source, FileSource)
        # TIMESTAMPTZ is microseconds: the entity side's precision, whatever the file holds.
        columns = [
            *(_ident(k) for k in join_keys),
            f"CAST({_ident(source.timestamp_field)} AS TIMESTAMPTZ) AS {FEATURE_TS}",
            *(_ident(f) for f in features),
        ]
        on = [
            f"e.{_ident(entity_col)} = {alias}.{_ident(key)}"
            for key, entity_col in join_keys.items()
        ]
        on.append(f"{entity_ts} >= {alias}.{FEATURE_TS}")
        joins.append(
            f"ASOF LEFT JOIN (SELECT {', '.join(columns)} "
            f"FROM read_parquet({_literal(source.path)})) AS {alias} "
            f"ON {' AND '.join(on)}"
        )
        ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0
        fresh = f"{alias}.{FEATURE_TS} + to_microseconds({ttl_us}) >= {entity_ts}"
        for feature in features:
            name = f"{output_prefix}__{feature}" if full_feature_names else feature
            value = f"{alias}.{_ident(feature)}"
            selects.append(
                f"CASE WHEN {fresh} THEN {value} END AS {_ident(name)}"
                if ttl_us
                else f"{value} AS {_ident(name)}"
            )
    return f"SELECT {', '.join(selects)} FROM {ENTITY_TABLE} AS e {' '.join(joins)}"


class DuckDBAsofRetrievalJob(RetrievalJob):
    """Runs the ASOF query on its own in-memory DuckDB, over the entity frame in place."""

    def __init__(
        self,
        entity_df: pd.DataFrame,
        query: str,
        full_feature_names: bool,
        metadata: RetrievalMetadata,
        repo_path: str,
    ) -> None:
        super().__init__()
        self._connection = duckdb.connect()
        self._connection.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ casts and output in UTC
        self._connection.register(ENTITY_TABLE, entity_df)
        self.query = query
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self._repo_path = repo_path

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return self._connection.sql(self.query).to_arrow_table()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []

    @property
    def metadata(self) -> RetrievalMetadata:
        return self._metadata

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        _write_data_source(
            ibis.memtable(self.to_arrow()),
            storage.to_data_source(),
            self._repo_path,
            "overwrite",
            allow_overwrite,
        )
