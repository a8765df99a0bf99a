"""Store parity: does the online store hold what the offline tables say it should?

The batch pipeline writes each midnight's snapshot to the offline tables, and
materialization copies it to the online store. Anything else that writes the online
store (a streaming rewrite of an aggregate, a hand-run backfill) can make the two
disagree, and serving reads the online side while training read the offline one:
skew at its source, before any request shows it.

Every few minutes (it needs no traffic), a fixed sample of each snapshot view's
entities is read from the online store, with each row's own snapshot time, and
compared with the offline table's row for that entity at that time, feature by
feature, with the skew job's tolerance (monitoring/skew.py). A row that is merely old
is freshness's business (monitoring/freshness.py); this job asks whether a row is
right for the snapshot it claims to be.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.definitions import VIEWS, feature_table_path
from monitoring.findings import Finding
from monitoring.policy import ParityConfig
from monitoring.skew import compare_values

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

_SNAPSHOTS: dict[tuple[str, float, pd.Timestamp], pd.DataFrame] = {}  # one read a day
_LAST_COMPARED: dict[str, tuple[tuple[str, float, float], pd.DataFrame, list[dict[str, Any]]]] = {}


def snapshot_views() -> list[str]:
    return [name for name, spec in VIEWS.items() if spec.online and not spec.pushed]


class SnapshotViews:
    """The snapshot views' definitions, with their materialization watermarks, read
    again only when the registry file changed: Feast rebuilds a view from its proto on
    every lookup, too slow for jobs that run every few minutes."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.registry = Path(str(store.config.registry.path))
        self._read_at: float | None = None
        self._views: dict[str, FeatureView] = {}

    def views(self) -> dict[str, FeatureView]:
        changed = self.registry.stat().st_mtime if self.registry.exists() else None
        if changed != self._read_at or not self._views:
            self._views = {
                name: self.store.get_feature_view(name, allow_registry_cache=True)
                for name in snapshot_views()
            }
            self._read_at = changed
        return self._views


def run_parity(
    views: SnapshotViews, feature_data_dir: Path, config: ParityConfig, tolerance: float
) -> Finding:
    table: list[dict[str, Any]] = []
    compared = 0
    for name, view in views.views().items():
        if not feature_table_path(feature_data_dir, name).exists():
            continue  # no offline table to hold the online rows to (features not built)
        ids = sample_ids(feature_data_dir, name, config)
        online = online_rows(views.store, view, ids)
        if online.empty:
            continue
        compared += len(online)
        table += _compared(feature_data_dir, name, online, tolerance)
    if not table:
        return Finding(
            job="parity", status="insufficient_data", summary="no online rows to compare yet"
        )
    table.sort(key=lambda row: -row["mismatch_rate"])
    wrong = [
        f"{r['view']}:{r['feature']}" for r in table if r["mismatch_rate"] > config.mismatch_above
    ]
    worst = table[0]
    return Finding(
        job="parity",
        status="ok",
        summary=(
            f"{len(wrong)} online features differ from the offline table on more than "
            f"{config.mismatch_above:.0%} of {compared} sampled rows"
            + (f": {', '.join(wrong)}" if wrong else "")
            + f" (worst {worst['feature']}: {worst['mismatch_rate']:.0%})"
        ),
        metrics={
            "mismatched_feature_count": float(len(wrong)),
            "max_mismatch_rate": float(worst["mismatch_rate"]),
        },
        details={"mismatched": wrong, "features": [r for r in table if r["mismatches"]][:20]},
    )


def _compared(
    feature_data_dir: Path, view: str, online: pd.DataFrame, tolerance: float
) -> list[dict[str, Any]]:
    """Each feature's online rows against the offline table. The snapshot views' online
    rows change only when something writes them (materialization, a fault), so most runs
    read what the last one did, and the same inputs give the same comparison: it is
    reused, which saves most of parity's cost (the offline lookup and the comparison;
    the online read, which would see a write, is made every time)."""
    path = feature_table_path(feature_data_dir, view)
    key = (str(path), path.stat().st_mtime, tolerance)
    last = _LAST_COMPARED.get(view)
    if last is not None and last[0] == key and last[1].equals(online):
        return [dict(row) for row in last[2]]
    offline = offline_rows(feature_data_dir, view, online)
    ids = online["entity"].astype(str)
    rows = [
        compare_values(feature, ids, online[feature], offline[feature], tolerance) | {"view": view}
        for feature in VIEWS[view].features
    ]
    _LAST_COMPARED[view] = (key, online, rows)
    return [dict(row) for row in rows]


def sample_ids(feature_data_dir: Path, view: str, config: ParityConfig) -> np.ndarray:
    """The same entities on every run (the first of a fixed shuffle), so a fault that
    starts shows at once rather than when the sample happens to reach it."""
    latest = _snapshot(feature_data_dir, view, None)
    ids = np.sort(latest.index.to_numpy(np.int64))
    order = np.random.default_rng(0).permutation(len(ids))
    return ids[order[: config.sample_entities]]


def online_rows(store: FeatureStore, view: FeatureView, ids: np.ndarray) -> pd.DataFrame:
    """The sampled entities' online values, and each row's snapshot time."""
    join_key = VIEWS[view.name].entity.join_key
    features = VIEWS[view.name].features
    keys = [EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=int(i))]) for i in ids]
    rows = store._get_provider().online_read(
        config=store.config, table=view, entity_keys=keys, requested_features=list(features)
    )
    records = []
    for entity, (stamp, values) in zip(ids, rows, strict=True):
        if stamp is None or not values:
            continue
        record: dict[str, Any] = {"entity": int(entity), "event_timestamp": _utc(stamp)}
        for name in features:
            value = values.get(name)
            kind = value.WhichOneof("val") if value is not None else None
            record[name] = float(getattr(value, kind)) if kind else np.nan
        records.append(record)
    return pd.DataFrame.from_records(records)


def offline_rows(feature_data_dir: Path, view: str, online: pd.DataFrame) -> pd.DataFrame:
    """The offline table's row of each online entity, at the online row's own time."""
    parts = []
    for stamp, group in online.groupby("event_timestamp"):
        snapshot = _snapshot(feature_data_dir, view, pd.Timestamp(stamp))
        parts.append(snapshot.reindex(group["entity"].to_numpy()).set_axis(group.index))
    features = VIEWS[view].features
    return pd.concat(parts).reindex(online.index)[features].astype("float64")


def _snapshot(feature_data_dir: Path, view: str, at: pd.Timestamp | None) -> pd.DataFrame:
    """One snapshot of a view's offline table, by entity (`at` None: the latest)."""
    path = feature_table_path(feature_data_dir, view)
    key = (str(path), path.stat().st_mtime, at if at is not None else pd.Timestamp(0, tz="UTC"))
    if key not in _SNAPSHOTS:
        entity = VIEWS[view].entity.join_key
        if at is None:
            table = pd.read_parquet(path, columns=[entity, "event_timestamp"])
            at = table["event_timestamp"].max()
        frame = pd.read_parquet(path, filters=[("event_timestamp", "==", at)])
        if len(_SNAPSHOTS) > 64:  # a long run moves through many days
            _SNAPSHOTS.clear()
        _SNAPSHOTS[key] = frame.set_index(entity)
    return _SNAPSHOTS[key]


def _utc(stamp: datetime) -> pd.Timestamp:
    moment = pd.Timestamp(stamp)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
