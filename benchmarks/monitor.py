"""How long does one monitor run take over ~100k logged requests, and in how much memory?

Builds (or reuses, with `--home`) the benchmark world of benchmarks/_world.py (~475k
simulated payments, Feast tables, a LightGBM champion with its 5,000-row reference
sample in MLflow), then a prediction log of the most recent `--rows` payments written
as the server writes it: the features serving computes (each payment's own midnight
snapshot and the shared request-time function), the champion's score and decision, one
row per request through serving's PredictionLog. The log is kept in the home and reused.

The jobs then run in a fresh process, so its peak memory is the monitor's alone:
read the log, load the champion's reference, drift (Evidently), skew (Feast offline
recomputation of a 2,000-request sample), performance (labels as known at the end of
the window; skipped with performance_s=nan if monitoring/performance.py is absent).
Then the minute jobs (guardrails, freshness, store parity: monitoring/minute_jobs.py
`run_minute_jobs`, the code the schedule runs) over a 15-minute window of 1,000
requests/s (`--rate`): 900,000 answers, the log's rows replayed at that rate into a
home of their own beside the world; the median of five runs.
Last lines:
`minute_jobs window_rows=N median_s=X runs=5 (target < 1 s)`
`monitor rows=N drift_s=X skew_s=X performance_s=X total_s=X peak_mb=X`
(total_s: the whole daily run, reading the log and the inputs included).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

LOG_NAME = "monitor_bench_log.sqlite"  # under the home, next to the world it was built from
ROOT = Path(__file__).resolve().parents[1]


def build_log(home: Path, rows: int, say=print) -> Path:
    """A prediction log of the last `rows` payments, as the server would have written it."""
    import numpy as np
    import pandas as pd

    from benchmarks._world import build_world
    from features.store import open_store
    from fraudlab.settings import Settings
    from pipelines.registry import CHAMPION, connect, load_version
    from pipelines.training_set import TimeSplit, build_training_frame
    from serving.prediction_log import count_rows, write_records
    from serving.scoring import ServingModel

    path = home / LOG_NAME
    if path.exists() and count_rows(path) == rows:
        say(f"reusing the prediction log {path}")
        return path
    path.unlink(missing_ok=True)
    world = build_world(Settings(home=home), say)
    settings = world.settings
    started = time.perf_counter()
    tx = pd.read_parquet(settings.transactions_path).sort_values("event_timestamp").tail(rows)
    since = tx["event_timestamp"].iloc[0]
    until = tx["event_timestamp"].iloc[-1] + pd.Timedelta(microseconds=1)
    split = TimeSplit(since, since, since, until, until, pd.Timedelta(0))  # all of it "test"
    client = connect(settings)
    name = settings.training.model_name
    registered = load_version(client, name, world.champion)
    # The champion's own service (fraud_v3 by default: a fixed fraud_v2 broke this
    # benchmark when the default moved).
    service = registered.tags.feature_service
    frame = build_training_frame(open_store(settings), tx, split, service)
    champion = ServingModel.from_registered(name, registered)
    from pipelines.models import score

    matrix = frame[champion.features].to_numpy(np.float64, na_value=np.nan)
    frame["score"] = score(registered.model, matrix)  # the same numbers serving computes
    records = []
    for record, vector in zip(frame.to_dict("records"), matrix.tolist(), strict=True):
        features = dict(zip(champion.features, vector, strict=True))
        decision = champion.decide(float(record["score"]))
        records.append(
            champion_answer(
                request_id=f"bench-{record['transaction_id']}",
                transaction_id=str(record["transaction_id"]),
                at=record["event_timestamp"],
                customer_id=int(record["customer_id"]),
                terminal_id=int(record["terminal_id"]),
                amount=float(record["amount"]),
                model=(CHAMPION, champion.version, champion.version),
                score=float(record["score"]),
                decisions=(decision, decision),
                features=features,
            )
        )
    write_records(path, records)
    say(f"logged {count_rows(path):,} requests in {time.perf_counter() - started:.0f} s")
    return path


def champion_answer(
    *,
    request_id: str,
    transaction_id: str,
    at: Any,
    customer_id: int,
    terminal_id: int,
    amount: float,
    model: tuple[str, str, str],  # alias, version, champion version
    score: float,
    decisions: tuple[str, str],  # served, the model's own
    features: dict[str, float],
) -> Any:
    """A champion-routed log record with the benchmark's fixed stage timings."""
    from serving.prediction_log import PredictionRecord

    alias, version, champion_version = model
    return PredictionRecord(
        request_id=request_id,
        transaction_id=transaction_id,
        event_timestamp=at,
        served_at=at,
        customer_id=customer_id,
        terminal_id=terminal_id,
        amount=amount,
        route="champion",
        model_alias=alias,
        model_version=version,
        score=score,
        decision=decisions[0],
        model_decision=decisions[1],
        champion_version=champion_version,
        challenger_version=None,
        fallback_features=[],
        features=features,
        features_ms=0.3,
        model_ms=0.05,
        total_ms=1.0,
        logged_at=0.0,
    )


MINUTES = 15  # the guardrail's window (policy: minute_jobs.window_minutes)


def build_burst_home(home: Path, log: Path, rate: int, say=print) -> Path:
    """A home beside the world (its data, features and registry linked) whose prediction
    log holds `MINUTES` of `rate` requests/s: the benchmark log's rows, replayed."""
    import pandas as pd

    from serving.prediction_log import (
        COLUMNS,
        count_rows,
        read_predictions,
        write_records,
    )

    burst = home / "minute_jobs_bench"
    path = burst / "prediction_log.sqlite"
    total = rate * MINUTES * 60
    if path.exists() and count_rows(path) == total:
        say(f"reusing the {total:,}-answer log in {burst}")
        return burst
    shutil.rmtree(burst, ignore_errors=True)
    burst.mkdir()
    for linked in ("data", "feature_data", "feast", "mlflow.db", "mlartifacts"):
        (burst / linked).symlink_to(home / linked)
    started = time.perf_counter()
    whole = (pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
    rows = read_predictions(log, *whole)
    start = rows["event_timestamp"].max().ceil("h")
    own = {*COLUMNS, "request_amount"}  # the log's own columns; the rest are features
    feature_names = [c for c in rows.columns if c not in own and not c.startswith("age__")]
    records = rows.to_dict("records")
    step = pd.Timedelta(seconds=1) / rate
    for first in range(0, total, 100_000):
        chunk = []
        for i in range(first, min(first + 100_000, total)):
            r = records[i % len(records)]
            at = start + i * step
            chunk.append(
                champion_answer(
                    request_id=f"burst-{i}",
                    transaction_id=str(r["transaction_id"]),
                    at=at.to_pydatetime(),
                    # Each replay of the log as other customers: 900,000 answers, not 100,000
                    # customers nine times over.
                    customer_id=int(r["customer_id"]) + (i // len(rows)) * 10**7,
                    terminal_id=int(r["terminal_id"]),
                    amount=float(r["request_amount"]),
                    model=(
                        str(r["model_alias"]),
                        str(r["model_version"]),
                        str(r["champion_version"]),
                    ),
                    score=float(r["score"]),
                    decisions=(str(r["decision"]), str(r["model_decision"])),
                    features={n: float(r[n]) for n in feature_names},
                )
            )
        write_records(path, chunk)
    say(f"logged {total:,} answers at {rate:,}/s in {time.perf_counter() - started:.0f} s")
    return burst


def time_minute_jobs(burst_home: str, rate: int) -> dict[str, float]:
    """Five runs of the minute jobs over the last 15 minutes; runs in a fresh process."""
    import statistics

    import pandas as pd

    from fraudlab.settings import Settings
    from monitoring.minute_jobs import run_minute_jobs
    from monitoring.policy import load_policy
    from monitoring.window import Window
    from serving.prediction_log import latest_service_time

    settings = Settings(home=Path(burst_home))
    policy = load_policy()
    until = latest_service_time(settings.prediction_log_path) + pd.Timedelta(microseconds=1)
    window = Window(until - pd.Timedelta(minutes=MINUTES), until)
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        findings, _ = run_minute_jobs(settings, window, policy)
        seconds.append(time.perf_counter() - started)
    for finding in findings:
        print(f"  minute jobs, {finding.job}: {finding.status}: {finding.summary[:150]}")
    return {"median_s": statistics.median(seconds), "rows": float(rate * MINUTES * 60)}


def run_jobs(home: str, log_name: str) -> dict[str, float]:
    """One monitor run over the whole log; runs in a fresh process."""
    import pandas as pd

    from data.validate import load_transactions
    from features.store import open_store
    from fraudlab.settings import Settings
    from monitoring.drift import run_drift
    from monitoring.performance import run_performance
    from monitoring.policy import load_policy
    from monitoring.skew import run_skew
    from pipelines.reference import load_reference
    from serving.prediction_log import read_predictions

    settings = Settings(home=Path(home))
    out_dir = Path(home) / "monitor_bench_reports"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    whole_log = (pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))
    predictions = read_predictions(Path(home) / log_name, *whole_log)
    timings["read_s"] = time.perf_counter() - started
    t = time.perf_counter()
    sample = load_reference(settings)
    version, reference, features = sample.version, sample.frame, sample.features
    timings["reference_s"] = time.perf_counter() - t
    t = time.perf_counter()
    jobs = load_policy().jobs
    drift = run_drift(predictions, reference, features, out_dir, jobs.drift)
    timings["drift_s"] = time.perf_counter() - t
    t = time.perf_counter()
    skew = run_skew(
        open_store(settings),
        predictions,
        features,
        out_dir,
        jobs.skew,
        service_name=sample.tags.feature_service,
    )
    timings["skew_s"] = time.perf_counter() - t
    t = time.perf_counter()
    transactions = load_transactions(settings)
    timings["inputs_s"] = time.perf_counter() - t
    t = time.perf_counter()
    now = predictions["event_timestamp"].max() + pd.Timedelta(microseconds=1)
    performance = run_performance(
        predictions, transactions, now, jobs.performance, review_cost=settings.training.review_cost
    )
    timings["performance_s"] = time.perf_counter() - t
    print(f"  performance: {performance.status}: {performance.summary[:160]}")
    timings["total_s"] = time.perf_counter() - started
    timings["rows"] = float(len(predictions))
    timings["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    print(f"  champion v{version}; drift: {drift.status}: {drift.summary}")
    print(f"  drift compared {drift.details['compared_rows']:,} of {len(predictions):,} rows")
    print(f"  skew: {skew.status}: {skew.summary}")
    return timings


def main() -> None:
    sys.path.insert(0, str(ROOT))  # `benchmarks._world`; spawned children inherit the path
    from benchmarks._arguments import at_least_one

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=at_least_one, default=100_000, help="logged requests")
    parser.add_argument("--home", type=Path, help="build or reuse the world here (kept)")
    parser.add_argument("--rate", type=at_least_one, default=1_000, help="minute jobs: requests/s")
    args = parser.parse_args()
    home = args.home.resolve() if args.home else Path(tempfile.mkdtemp(prefix="monitor_bench_"))
    try:
        log = build_log(home, args.rows)
        burst = build_burst_home(home, log, args.rate)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            minute = pool.submit(time_minute_jobs, str(burst), args.rate).result()
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            t = pool.submit(run_jobs, str(home), log.name).result()
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)
    if t["performance_s"] != t["performance_s"]:
        print("  performance_s=nan: monitoring/performance.py (run_performance) is absent")
    parts = ("read_s", "reference_s", "inputs_s")
    print("  " + " ".join(f"{k}={t[k]:.2f}" for k in parts if k in t))
    print(
        f"minute_jobs window_rows={minute['rows']:.0f} median_s={minute['median_s']:.3f} "
        f"runs=5 (target < 1 s)"
    )
    print(
        f"monitor rows={t['rows']:.0f} drift_s={t['drift_s']:.2f} skew_s={t['skew_s']:.2f} "
        f"performance_s={t['performance_s']:.2f} total_s={t['total_s']:.2f} "
        f"peak_mb={t['peak_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
