"""Does the payment stream keep up, and what does the velocity state cost in Redis?

Real Redis (`--redis`, a database of its own that is emptied first), a real Feast
registry with the payment-state views, and `fraudlab stream worker` as a child process
(one worker; `--workers` for more), fed by the API's own publisher
(serving/payment_stream.py) with simulated payments:

1. at a fixed `--rate` payments/s for `--seconds`, each event stamped with the wall
   clock when it is published: the worker's event-to-online-store lag (p50, p99),
   measured when its write returns;
2. saturated: `--burst` events published as fast as the publisher goes; the worker's
   throughput is the events over the time from the first publish to the last apply;
3. the state's size: Redis's MEMORY USAGE of a sample of customer and terminal keys,
   scaled to a million customers (and the terminals that many customers bring, at the
   simulator's ratio).

Last line: `stream rate=R p50_lag_ms=X p99_lag_ms=X max_events_per_s=X
state_mb_per_million_customers=X` (targets: keeps up with >= 2,000 payments/s).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REDIS = "127.0.0.1:6379,db=11"  # its own database (demo 0, tests 7, 9 and 11): emptied first
TARGET_RATE = 2_000


def main() -> None:
    sys.path.insert(0, str(ROOT))  # `benchmarks._arguments`
    from benchmarks._arguments import at_least_one, positive_seconds

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=at_least_one, default=TARGET_RATE, help="payments/s in phase 1"
    )
    parser.add_argument("--seconds", type=positive_seconds, default=15.0, help="length of phase 1")
    parser.add_argument("--burst", type=at_least_one, default=60_000, help="events in phase 2")
    parser.add_argument("--workers", type=at_least_one, default=1, help="stream workers")
    parser.add_argument("--redis", default=REDIS, help="Redis for the stream and the state")
    parser.add_argument(
        "--customers", type=at_least_one, default=20_000, help="simulated customers"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stream_bench_") as home:
        run(args, Path(home))


def run(args: argparse.Namespace, home: Path) -> None:
    from data.simulator import SimulationConfig, generate
    from features.store import apply_definitions
    from fraudlab.redis_client import redis_client
    from fraudlab.settings import Settings, SimulationSettings

    simulation = SimulationSettings(customers=args.customers, terminals=args.customers, days=30)
    settings = Settings(
        home=home,
        profile="production",
        redis_connection=args.redis,
        simulation=simulation,
    )
    settings = settings.model_copy(
        update={"stream": settings.stream.model_copy(update={"workers": args.workers})}
    )
    client = redis_client(settings.redis_connection, timeout_seconds=5)
    client.flushdb()
    apply_definitions(settings)
    generate(SimulationConfig.from_settings(simulation), settings.transactions_path)
    tx = pd.read_parquet(settings.transactions_path).sort_values("event_timestamp")
    print(f"{len(tx):,} simulated payments of {args.customers:,} customers; {os.cpu_count()} cores")
    payments = tx[["transaction_id", "customer_id", "terminal_id", "amount"]].to_numpy()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDLAB_")} | {
        "FRAUDLAB_HOME": str(home),
        "FRAUDLAB_PROFILE": "production",
        "FRAUDLAB_REDIS_CONNECTION": args.redis,
        "FRAUDLAB_STREAM__WORKERS": str(args.workers),
    }
    fixed = int(args.rate * args.seconds)
    with workers(env, args.workers, home / "fixed") as logs:
        publish(settings, payments[:fixed], rate=args.rate)
        drain(client, settings)
    lags = [lag_line(log.read_text()) for log in logs]
    p50, p99 = max(lag[0] for lag in lags), max(lag[1] for lag in lags)
    print(
        f"1. {fixed:,} events at {args.rate:,}/s: event to online store p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms"
    )
    burst = payments[fixed : fixed + args.burst]
    with workers(env, args.workers, home / "burst"):
        started = time.perf_counter()
        published_s = publish(settings, burst, rate=None)
        drain(client, settings)
        applied_s = time.perf_counter() - started
    rate = len(burst) / applied_s
    print(
        f"2. {len(burst):,} events published in {published_s:.1f} s "
        f"({len(burst) / published_s:,.0f}/s), applied in {applied_s:.1f} s: "
        f"{rate:,.0f} events/s"
    )
    per_million = state_megabytes_per_million(settings, client, payments[: fixed + len(burst)])
    met = "met" if rate >= TARGET_RATE and p99 < 1_000 else "NOT MET"
    print(f"target: keeps up with >= {TARGET_RATE:,} payments/s: {met}")
    print(
        f"stream rate={args.rate} p50_lag_ms={p50:.1f} p99_lag_ms={p99:.1f} "
        f"max_events_per_s={rate:.0f} state_mb_per_million_customers={per_million:.0f}"
    )
    client.flushdb()


class workers:
    """`fraudlab stream worker` child processes; stopped (SIGTERM) on exit, their output
    (the lag line) left in `<folder>/worker-<i>.log`."""

    def __init__(self, env: dict[str, str], count: int, folder: Path) -> None:
        self.env, self.count, self.folder = env, count, folder
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> list[Path]:
        self.folder.mkdir(parents=True)
        logs = [self.folder / f"worker-{i}.log" for i in range(self.count)]
        for i, log in enumerate(logs):
            command = [sys.executable, "-m", "fraudlab", "stream", "worker", "--index", str(i)]
            with log.open("wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        for log in logs:  # ready once it says which streams it owns
            deadline = time.monotonic() + 120
            while "streams under" not in log.read_text():
                if time.monotonic() > deadline:
                    raise TimeoutError(log.read_text())
                time.sleep(0.2)
        return logs

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(timeout=30)


def publish(settings, payments: np.ndarray, rate: float | None) -> float:  # type: ignore[no-untyped-def]
    """Queue the payments on the API's publisher, each stamped with the wall clock, at
    `rate` per second (None: as fast as it goes); returns seconds until all are sent."""
    from datetime import UTC, datetime

    from serving.payment_stream import StreamPublisher
    from serving.velocity_state import PaymentEvent, micros

    publisher = StreamPublisher(settings, timeout_seconds=5, backlog=len(payments) + 1)
    started = time.perf_counter()
    for i, (tx_id, customer, terminal, amount) in enumerate(payments):
        if rate is not None:
            wait = started + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        now = micros(datetime.now(UTC))
        publisher.publish(
            PaymentEvent(int(tx_id), int(customer), int(terminal), float(amount), now, now)
        )
    while publisher.backlog():
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    publisher.close()
    return seconds


def drain(client, settings, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    from serving.payment_stream import all_streams, stream_lag

    deadline = time.monotonic() + timeout
    while stream_lag(client, all_streams(settings)).pending_events:
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not catch up")
        time.sleep(0.02)


def lag_line(output: str) -> tuple[float, float]:
    found = re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms", output)
    if not found:
        raise RuntimeError(f"no lag line in the worker's output:\n{output[-2000:]}")
    return float(found[1]), float(found[2])


def state_megabytes_per_million(settings, client, payments: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """Mean MEMORY USAGE of the state keys of sampled customers and terminals, times a
    million customers and the terminals per customer the simulation has."""
    from feast.infra.online_stores.helpers import _redis_key

    from features.store import open_store
    from serving.velocity_state import entity_key

    project = open_store(settings).project
    rng = random.Random(0)
    sizes = {}
    for kind, column in (("customer", 1), ("terminal", 2)):
        ids = sorted({int(x) for x in payments[:, column]})
        sample = rng.sample(ids, min(2_000, len(ids)))
        keys = [_redis_key(project, entity_key(kind, i), 3) for i in sample]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key)
        used = [u for u in pipe.execute() if u is not None]
        sizes[kind] = (float(np.mean(used)) if used else 0.0, len(ids))
    customer_bytes, customers = sizes["customer"]
    terminal_bytes, terminals = sizes["terminal"]
    per_customer = customer_bytes + terminal_bytes * terminals / customers
    print(
        f"3. state per customer {customer_bytes:,.0f} B, per terminal {terminal_bytes:,.0f} B "
        f"(Redis MEMORY USAGE, {customers:,} customers and {terminals:,} terminals with state)"
    )
    return per_customer * 1e6 / 2**20


if __name__ == "__main__":
    main()
