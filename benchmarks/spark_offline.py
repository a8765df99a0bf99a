"""When does Feast's Spark offline store pay off? Ours (DuckDB in this process) against
Spark in local mode, on the same feature tables, for each size in `--rows`.

For each size: simulate about that many payments and build every feature table
(benchmarks/pit_join.py's world), register them twice (a DuckDB home, and a Spark home
over the same files: `offline_store: spark`), then join every payment to the
`--service`'s features through each store, pipelines/training_set.py's call. Ours runs
warm (best of `--repeats`); Spark's first run includes starting its JVM, which a
training job on a cluster pays too, so both of its runs are shown and the best counted.
Each size runs in a process of its own.
Memory is the peak resident set of this process and its children (Spark's JVM), sampled
every 0.1 s during each store's runs. The two results are compared row by row.

Last lines, one per size: `spark_offline rows=N ours_s=S spark_s=S spark_first_s=S
ours_peak_mb=M spark_peak_mb=M mismatched=K`
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks.*` when run as a script

from benchmarks._arguments import at_least_one  # noqa: E402
from benchmarks.pit_join import mismatched_rows, simulate  # noqa: E402
from features.store import apply_definitions, feature_service, open_store  # noqa: E402
from fraudlab.settings import Settings  # noqa: E402
from pipelines.training_set import ENTITY_COLUMNS  # noqa: E402

SERVICE = "fraud_v2"


class PeakMemory:
    """The peak resident set of this process and all its children, sampled."""

    def __init__(self) -> None:
        self.peak_mb = 0.0

    def sample(self) -> None:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with suppress(psutil.NoSuchProcess):  # a child that ended meanwhile
                total += child.memory_info().rss
        self.peak_mb = max(self.peak_mb, total / 2**20)


@contextmanager
def sampled(every: float = 0.1) -> Iterator[PeakMemory]:
    peak = PeakMemory()
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every):
            peak.sample()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak.sample()


def runs(join: Callable[[], pd.DataFrame], repeats: int) -> tuple[list[float], pd.DataFrame]:
    seconds: list[float] = []
    result = pd.DataFrame()
    for _ in range(repeats):
        started = time.perf_counter()
        result = join()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def one_size(rows: int, service_name: str, repeats: int, driver_memory: str) -> str:
    with tempfile.TemporaryDirectory(prefix="spark_offline_") as folder:
        settings, tx = simulate(Path(folder) / "duckdb", rows)
        entity_df = tx[ENTITY_COLUMNS]
        spark_settings = Settings(
            home=Path(folder) / "spark", offline_store="spark", spark_driver_memory=driver_memory
        )
        spark_settings.home.mkdir()
        (spark_settings.home / "feature_data").symlink_to(settings.feature_data_dir)
        apply_definitions(spark_settings)

        ours, spark = open_store(settings), open_store(spark_settings)
        service = feature_service(ours, service_name)
        features = [f.name for p in service.feature_view_projections for f in p.features]

        def join(store: object) -> Callable[[], pd.DataFrame]:
            return lambda: store.get_historical_features(  # type: ignore[attr-defined]
                entity_df=entity_df, features=feature_service(store, service_name)
            ).to_df()

        with sampled() as ours_memory:
            ours_seconds, by_ours = runs(join(ours), repeats)
        print(f"  ours (DuckDB): {', '.join(f'{s:.2f}' for s in ours_seconds)} s")
        with sampled() as spark_memory:
            spark_seconds, by_spark = runs(join(spark), max(2, repeats))
        print(f"  Spark (local[*]): {', '.join(f'{s:.2f}' for s in spark_seconds)} s")
        mismatched = mismatched_rows(by_spark, by_ours, features)
        print(f"  {mismatched} mismatched rows of {len(by_ours):,}")
        ours_s, spark_s = min(ours_seconds), min(spark_seconds[1:])
        print(
            f"  Spark takes {spark_s / ours_s:.1f}x as long as ours; peak memory "
            f"ours {ours_memory.peak_mb:,.0f} MB, Spark {spark_memory.peak_mb:,.0f} MB "
            "(this process and the JVM)"
        )
        return (
            f"spark_offline rows={len(entity_df)} ours_s={ours_s:.3f} spark_s={spark_s:.3f} "
            f"spark_first_s={spark_seconds[0]:.3f} ours_peak_mb={ours_memory.peak_mb:.0f} "
            f"spark_peak_mb={spark_memory.peak_mb:.0f} mismatched={mismatched}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=at_least_one,
        nargs="+",
        default=[1_000_000, 10_000_000],
        help="payments to simulate, one world per size",
    )
    parser.add_argument("--repeats", type=at_least_one, default=2, help="runs of each store")
    parser.add_argument("--service", default=SERVICE, help="the feature service joined")
    parser.add_argument(
        "--driver-memory", default="16g", help="Spark driver's heap (it collects the rows)"
    )
    args = parser.parse_args()
    if len(args.rows) == 1:
        print(f"== about {args.rows[0]:,} payments, {args.service}", flush=True)
        print(one_size(args.rows[0], args.service, args.repeats, args.driver_memory))
        return
    # One process per size: Spark's JVM (and its heap) starts afresh for each, and the
    # smaller size's JVM is not in the larger one's memory.
    lines = []
    for rows in args.rows:
        one = [sys.executable, __file__, "--rows", str(rows), "--service", args.service]
        one += ["--repeats", str(args.repeats), "--driver-memory", args.driver_memory]
        done = subprocess.run(one, stdout=subprocess.PIPE, text=True, check=True)
        print(done.stdout, end="", flush=True)
        lines.append(done.stdout.strip().splitlines()[-1])
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
