"""How fast is the training set's point-in-time join, against what it could be?

Builds one simulated history of about `--rows` payments and its feature tables in a
temporary folder, then joins every payment to all features of the fraud_v2 service in
one run (`--service fraud_v3`: its velocity views are one row per payment), three ways:

- ours: `store.get_historical_features(...).to_df()` through the offline store that
  features/repo/feature_store.yaml configures (pipelines/training_set.py's call);
- Feast's stock DuckDB offline store (ibis), the one ours replaces the join of;
- Feast's file (dask) offline store on the same registry and files;
- pandas `merge_asof` per view (backward, by entity, tolerance = the view's ttl), reading
  the same Parquet files: the lower bound for a single-process join.

Each store is checked against merge_asof row by row. Prints seconds, peak memory and,
last, `pit_join service=S rows=N ours_s=S stock_duckdb_s=S file_store_s=S merge_asof_s=S ratio=R`
where R is ours over merge_asof (best of `--repeats` warm runs each, the stock DuckDB
store's too; the first run is shown beside; the file store runs once).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore, FeatureView, FileSource

from data.simulator import SimulationConfig, generate
from features.build import build_feature_tables
from features.store import apply_definitions, feature_service, open_store
from fraudlab.settings import Settings
from pipelines.training_set import ENTITY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]

SERVICE = "fraud_v2"
DAYS = 50  # ~2 payments per customer-day: customers = rows / 100 for ~rows payments
SEED = 11


def simulate(home: Path, rows: int) -> tuple[Settings, pd.DataFrame]:
    """Payments and feature tables under `home`, registered with Feast."""
    settings = Settings(home=home)
    customers = max(10, round(rows / (2 * DAYS)))
    config = SimulationConfig(
        customers=customers,
        terminals=2 * customers,
        days=DAYS,
        seed=SEED,
        start_date=date(2026, 1, 1),
    )
    started = time.perf_counter()
    summary = generate(config, settings.transactions_path)
    tx = pd.read_parquet(settings.transactions_path)
    simulated = time.perf_counter()
    tables = build_feature_tables(tx, settings.feature_data_dir)
    built = time.perf_counter()
    apply_definitions(settings)
    print(
        f"simulated {summary.rows:,} payments ({customers:,} customers, {2 * customers:,} "
        f"terminals, {DAYS} days) in {simulated - started:.1f} s; every feature table "
        f"(`fraudlab features build`) in {built - simulated:.1f} s"
    )
    for name, count in tables.items():
        print(f"  feature table {name}: {count:,} rows")
    return settings, tx


def views_of(store: FeatureStore, service: FeatureService) -> list[tuple[FeatureView, list[str]]]:
    """Each view of the service with the features the service selects from it."""
    return [
        (store.get_feature_view(p.name), [f.name for f in p.features])
        for p in service.feature_view_projections
    ]


def merge_asof_join(
    entity_df: pd.DataFrame, views: list[tuple[FeatureView, list[str]]]
) -> pd.DataFrame:
    """The lower bound: pandas' sorted as-of merge, one view after the other."""
    joined = entity_df.sort_values("event_timestamp", kind="stable")
    for view, features in views:
        source = view.batch_source
        assert isinstance(source, FileSource)
        key, ts = view.entity_columns[0].name, source.timestamp_field  # one key per view here
        table = pd.read_parquet(source.path, columns=[key, ts, *features])
        table = table.rename(columns={ts: "event_timestamp"})
        # features/build.py writes ns; merge_asof needs the payments' us on both sides.
        table["event_timestamp"] = table["event_timestamp"].dt.as_unit("us")
        table = table.sort_values("event_timestamp", kind="stable")
        joined = pd.merge_asof(
            joined,
            table,
            on="event_timestamp",
            by=key,
            direction="backward",
            tolerance=pd.Timedelta(view.ttl),
        )
    return joined


def mismatched_rows(result: pd.DataFrame, reference: pd.DataFrame, features: list[str]) -> int:
    """Rows whose features differ (NaN equals NaN), matched by transaction id."""
    a = result.set_index("transaction_id").loc[reference["transaction_id"], features]
    b = reference.set_index("transaction_id")[features]
    x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    return int((~same.all(axis=1)).sum())


def timed(label: str, run: Callable[[], pd.DataFrame], repeats: int) -> tuple[float, pd.DataFrame]:
    """Best seconds over `repeats` runs (first run printed too) and the last result."""
    seconds: list[float] = []
    result = pd.DataFrame()
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    print(
        f"{label:<34} first {seconds[0]:7.2f} s   best {min(seconds):7.2f} s   "
        f"peak RSS so far {peak_mb():,.0f} MB"
    )
    return min(seconds), result


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    sys.path.insert(0, str(ROOT))  # `benchmarks._arguments`
    from benchmarks._arguments import at_least_one

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=at_least_one, default=1_000_000, help="payments to simulate")
    parser.add_argument(
        "--repeats", type=at_least_one, default=3, help="runs of ours and merge_asof"
    )
    parser.add_argument(
        "--service", default=SERVICE, help="the feature service joined (e.g. fraud_v3)"
    )
    parser.add_argument(
        "--skip-file-store",
        action="store_true",
        help="skip Feast's file (dask) store: it takes a minute or more",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pit_join_") as home:
        settings, tx = simulate(Path(home), args.rows)
        entity_df = tx[ENTITY_COLUMNS]
        store = open_store(settings)
        service = feature_service(store, args.service)
        views = views_of(store, service)
        features = [f for _, names in views for f in names]
        offline = type(store._get_provider().offline_store).__name__
        print(f"{len(entity_df):,} payments x {len(features)} features of {args.service}:")

        asof_s, reference = timed(
            "pandas merge_asof (lower bound)",
            lambda: merge_asof_join(entity_df, views),
            args.repeats,
        )
        ours_s, ours = timed(
            f"ours ({offline})",
            lambda: store.get_historical_features(entity_df=entity_df, features=service).to_df(),
            args.repeats,
        )
        print(
            f"  ours vs merge_asof: {mismatched_rows(ours, reference, features)} "
            f"mismatched rows of {len(reference):,}"
        )
        stock = open_store(settings, offline_store={"type": "duckdb"})
        stock_s, by_stock = timed(
            "Feast stock DuckDB store",
            lambda: stock.get_historical_features(entity_df=entity_df, features=service).to_df(),
            args.repeats,
        )
        print(
            f"  stock DuckDB store vs merge_asof: "
            f"{mismatched_rows(by_stock, reference, features)} mismatched rows "
            f"of {len(reference):,}"
        )
        file_s = float("nan")
        if not args.skip_file_store:
            file_store = open_store(settings, offline_store={"type": "file"})
            file_s, by_file = timed(
                "Feast file (dask) store",
                lambda: file_store.get_historical_features(
                    entity_df=entity_df, features=service
                ).to_df(),
                1,
            )
            print(
                f"  file store vs merge_asof: {mismatched_rows(by_file, reference, features)} "
                f"mismatched rows of {len(reference):,}"
            )
    ratio = ours_s / asof_s
    versus_file = (
        "" if np.isnan(file_s) else f", {file_s / ours_s:.0f}x faster than Feast's file store"
    )
    print(
        f"ours takes {ratio:.1f}x merge_asof's time (target: within 5x), "
        f"{stock_s / ours_s:.1f}x faster than Feast's stock DuckDB store{versus_file}; "
        f"peak RSS {peak_mb():,.0f} MB"
    )
    print(
        f"pit_join service={args.service} rows={len(entity_df)} ours_s={ours_s:.3f} "
        f"stock_duckdb_s={stock_s:.3f} file_store_s={file_s:.3f} "
        f"merge_asof_s={asof_s:.3f} ratio={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
