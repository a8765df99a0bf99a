"""What does the serving plane need for a stated volume? A capacity sheet COMPUTED from
per-request costs MEASURED on this machine in the same run; not a load test at that volume.

Reads the demo's home (`make demo`; another with `--home`) through a copy of its stores
(benchmarks/_world.py `copied_world`): nothing here writes to it. Then measures:

- CPU per scored request in-process: `ScoringService.score()` on the champion, online
  features from the embedded (SQLite) store, one call at a time; this process's threads
  (the prediction log's writer among them) and the payment-state writer process counted;
- CPU per scored request over HTTP: the API as benchmarks/serving.py starts it (uvicorn,
  one worker, embedded profile) at its fixed 200 requests/s; the server's processes only;
- Redis memory per card (the `customer` entity) and per terminal: the copy's snapshots
  and payment states loaded into a database of its own (`--redis`, emptied first and
  after), `MEMORY USAGE` of sampled keys as loaded, then again once each sampled
  entity's payment state is rewritten, through serving's own state writer, to the size
  it has at the stated volume (the demo's entities pay at other rates).

From these it computes the peak rate, API cores and replicas at the target utilisation,
the online store's memory for the stated entity counts and the cost per million scores.
Last line: `capacity_sheet payments_per_day=N peak_rps=X http_cpu_ms=X replicas=N
redis_gib=X usd_per_million=X`.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from benchmarks._world import World
    from serving.velocity_state import PaymentEvent

ROOT = Path(__file__).resolve().parents[1]
REDIS = "127.0.0.1:6379,db=13"  # its own database (demo 0, tests 7 and 9, serving.py 11)
SEED = 13  # the sampled entities and their synthetic payments: alike from run to run
DAY_SECONDS = 86_400
CARD = {"customer": "card", "terminal": "terminal"}  # a customer is keyed by its card


@dataclass(frozen=True)
class Volume:
    payments_per_day: int
    peak_to_mean: float
    cards: int
    terminals: int
    cost_per_core_hour: float
    target_utilisation: float

    @property
    def peak_rps(self) -> float:
        return self.payments_per_day / DAY_SECONDS * self.peak_to_mean

    def entities(self, kind: str) -> int:
        return self.cards if kind == "customer" else self.terminals


@dataclass(frozen=True)
class CpuCost:
    ms_per_request: dict[str, float]  # CPU time (user + system) by process group
    requests: int
    fallback_share: float  # answers scored on missing or stale features
    failures: int  # answers other than a score

    @property
    def total_ms(self) -> float:
        return sum(self.ms_per_request.values())


@dataclass(frozen=True)
class EntityMemory:
    sampled: int
    bytes_as_loaded: float  # mean MEMORY USAGE of a key, with the demo's payment states
    payments_as_loaded: float  # mean payments in those states
    bytes_at_volume: float  # the same keys, states rewritten to the stated volume's size
    payments_at_volume: float
    # Redis keeps a small hash as a listpack, and converts it to a hashtable (about twice
    # the bytes) once a value outgrows `hash-max-listpack-value`, for good: a state of two
    # payments does it. The share of sampled keys converted, after the rewrite.
    hashtable_share: float


# ---- measured -----------------------------------------------------------------------------


def in_process_cost(world: World, bodies: list[dict[str, object]], count: int) -> CpuCost:
    import psutil

    from benchmarks._update_path import _cpu_seconds
    from benchmarks.serving import WARMUP
    from serving.schemas import ScoreRequest
    from serving.service import ScoringService

    requests = [
        ScoreRequest.model_validate(bodies[i % len(bodies)] | {"transaction_id": f"c-{i}"})
        for i in range(WARMUP + count)
    ]
    service = ScoringService(world.settings)
    service.start()
    try:
        service.clock.hold(max(r.timestamp for r in requests))  # as serving.py holds it
        for request in requests[:WARMUP]:
            service.score(request)
        this = psutil.Process()
        groups = {"this process": [this], "writer": this.children(recursive=True)}
        before = {name: _cpu_seconds(group) for name, group in groups.items()}
        fallbacks = sum(service.score(request).fallback for request in requests[WARMUP:])
        time.sleep(2 * world.settings.serving.log_flush_seconds)  # the log's last batch
        ms = {n: 1e3 * (_cpu_seconds(g) - before[n]) / count for n, g in groups.items()}
    finally:
        service.close()
    return CpuCost(ms, count, fallbacks / count, 0)


def http_cost(world: World, bodies: list[dict[str, object]], count: int) -> CpuCost:
    import secrets

    from benchmarks._update_path import _cpu_seconds, _server_processes
    from benchmarks.serving import (
        CONCURRENCY,
        OURS,
        RATE,
        WARMUP,
        drive,
        encode,
        hold_clock,
        uvicorn_server,
    )

    token = secrets.token_hex(16)
    home = world.settings.home
    env = {"FRAUDLAB_HOME": str(home), "FRAUDLAB_PROFILE": "embedded"}
    with uvicorn_server(OURS, env | {"FRAUDLAB_SERVING__ADMIN_TOKEN": token}, home) as port:
        hold_clock(port, token, str(bodies[-1]["timestamp"]))
        drive(port, encode(bodies, "w", port, WARMUP), [], None, CONCURRENCY)
        groups = _server_processes(inline=True)  # "api" and "writer"
        before = {name: _cpu_seconds(group) for name, group in groups.items()}
        load = drive(port, [], encode(bodies, "h", port, count), RATE, CONCURRENCY)
        time.sleep(2 * world.settings.serving.log_flush_seconds)
        ms = {n: 1e3 * (_cpu_seconds(g) - before[n]) / count for n, g in groups.items()}
    return CpuCost(ms, count, load.fallback / count, load.failures)


def redis_memory(world: World, volume: Volume, redis: str, sample: int) -> dict[str, EntityMemory]:
    """Per entity kind, the mean bytes of a sampled key: as loaded from the demo, then
    with its payment state as large as at the stated volume."""
    import os
    from contextlib import redirect_stdout

    import numpy as np
    import pandas as pd
    from feast.infra.online_stores.helpers import _redis_key

    from benchmarks._world import load_redis, production_settings
    from features.store import open_store
    from fraudlab.redis_client import redis_client
    from serving.velocity_state import KINDS, PaymentStates, entity_key

    settings = production_settings(world, redis)
    with open(os.devnull, "w") as quiet, redirect_stdout(quiet):  # Feast prints each view
        load_redis(world, settings, say=lambda _: None)
    store, client = open_store(settings), redis_client(redis, 10.0)
    states = PaymentStates(store)
    tx = pd.read_parquet(world.settings.transactions_path, columns=["customer_id", "terminal_id"])
    rng = np.random.default_rng(SEED)
    version = store.config.entity_key_serialization_version

    def measure(kind: str, ids: list[int]) -> tuple[float, float, float]:
        """Mean bytes of the entities' keys, mean payments in their states, and the share
        of keys held as a hashtable."""
        pipe = client.pipeline(transaction=False)
        for i in ids:
            key = _redis_key(store.project, entity_key(kind, i), version)
            pipe.memory_usage(key, samples=0)  # 0: every field counted, not an estimate
            pipe.object("encoding", key)
        replies = pipe.execute()
        sizes, encodings = replies[::2], replies[1::2]
        if None in sizes:
            raise RuntimeError(f"a sampled {kind} has no key in {redis}: the load missed it")
        payments = [len(state) for state, _ in states.read(kind, ids)]
        hashtables = [encoding == b"hashtable" for encoding in encodings]
        return float(np.mean(sizes)), float(np.mean(payments)), float(np.mean(hashtables))

    found: dict[str, EntityMemory] = {}
    try:
        for kind in KINDS:
            known = tx[f"{kind}_id"].unique()
            ids = [int(i) for i in rng.choice(known, min(sample, len(known)), replace=False)]
            as_loaded = measure(kind, ids)[:2]
            rate = volume.payments_per_day / DAY_SECONDS / volume.entities(kind)  # per entity
            states.apply(state_at_rate(kind, ids, rate, world, rng), kinds=(kind,))
            found[kind] = EntityMemory(len(ids), *as_loaded, *measure(kind, ids))
    finally:
        client.flushdb()  # the database left empty, as found
    return found


def state_at_rate(
    kind: str, ids: list[int], rate: float, world: World, rng: np.random.Generator
) -> list[PaymentEvent]:
    """Payments that leave each entity's state as it is when the entity pays `rate` times
    a second: a state keeps its newest payment and those within its retention before it
    (features/velocity.py), so 1 + Poisson(rate x retention) payments. They are a month
    after the demo's, so the merge prunes the demo's own payments from the state."""
    from features.velocity import DAY_US, STATE_RETENTION_US
    from serving.velocity_state import PaymentEvent, micros

    retention_us = STATE_RETENTION_US[kind]
    newest_us = micros(world.online_until.to_pydatetime()) + 30 * DAY_US
    others = rng.poisson(rate * retention_us / 1e6, size=len(ids))
    return [
        PaymentEvent(
            transaction_id=int(rng.integers(2**62)),
            customer_id=entity,  # a state packs (id, time, amount, terminal): 32 bytes,
            terminal_id=entity,  # whichever ids and amount it holds
            amount=50.0,
            event_us=newest_us - int(age_us),
            served_us=newest_us,
        )
        for entity, count in zip(ids, others, strict=True)
        for age_us in [0, *rng.integers(1, retention_us, size=count)]
    ]


# ---- computed -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    quantity: str
    value: str
    how: str  # "measured" or "computed"
    basis: str


def sheet(
    volume: Volume, in_process: CpuCost, http: CpuCost, memory: dict[str, EntityMemory]
) -> tuple[list[Line], dict[str, float]]:
    """The sheet's lines and its last line's figures. Pure: numbers in, text out."""
    cpu_lines, replicas = serving_lines(volume, in_process, http)
    store_lines, store_bytes = memory_lines(volume, memory)
    fleet_usd_a_day = replicas * 24 * volume.cost_per_core_hour
    usd_per_million = fleet_usd_a_day / volume.payments_per_day * 1e6
    cpu_core_hours = http.total_ms / 1e3 * 1e6 / 3_600  # per million scores
    costs = [
        Line(
            "cost per million scores",
            f"${usd_per_million:,.4f}",
            "computed",
            f"{replicas} replicas x 24 h x ${volume.cost_per_core_hour:g} a core-hour / "
            f"{volume.payments_per_day / 1e6:,g}M scores a day: a fleet sized for peak, all day",
        ),
        Line(
            "cost per million scores, CPU only",
            f"${cpu_core_hours * volume.cost_per_core_hour:,.4f}",
            "computed",
            f"{cpu_core_hours:,.2f} core-hours of HTTP CPU: a fleet that followed the load",
        ),
    ]
    figures = {
        "peak_rps": volume.peak_rps,
        "http_cpu_ms": http.total_ms,
        "replicas": replicas,
        "redis_gib": store_bytes / 2**30,
        "usd_per_million": usd_per_million,
    }
    return cpu_lines + store_lines + costs, figures


def serving_lines(volume: Volume, in_process: CpuCost, http: CpuCost) -> tuple[list[Line], int]:
    """The rate, the CPU a request costs, and the API replicas the peak needs."""
    v = volume
    cores = v.peak_rps * http.total_ms / 1e3  # busy at peak; an API process spends HTTP too
    replicas = max(1, math.ceil(cores / v.target_utilisation))  # one 1-worker replica a core

    def parts(cost: CpuCost) -> str:
        return " + ".join(f"{name} {ms:.2f}" for name, ms in cost.ms_per_request.items())

    return [
        Line(
            "peak payments/s",
            f"{v.peak_rps:,.1f}",
            "computed",
            f"{v.payments_per_day:,} a day / 86,400 s = {v.payments_per_day / DAY_SECONDS:,.1f}"
            f"/s mean, x {v.peak_to_mean:g} peak to mean",
        ),
        Line(
            "CPU per request, score() in-process",
            f"{in_process.total_ms:.2f} ms",
            "measured",
            f"{in_process.requests:,} calls, one at a time: {parts(in_process)} ms; "
            f"{in_process.fallback_share:.1%} fallbacks",
        ),
        Line(
            "CPU per request, HTTP",
            f"{http.total_ms:.2f} ms",
            "measured",
            f"{http.requests:,} requests at 200/s, uvicorn 1 worker, embedded profile: "
            f"{parts(http)} ms; {http.fallback_share:.1%} fallbacks, {http.failures} failed",
        ),
        Line("API CPU busy at peak", f"{cores:,.2f} cores", "computed", "peak/s x HTTP CPU"),
        Line(
            "API replicas at peak",
            f"{replicas:,}",
            "computed",
            f"{cores:,.2f} cores / {v.target_utilisation:.0%} target utilisation, rounded up; "
            "a replica is one 1-worker process on one core",
        ),
    ], replicas


def memory_lines(volume: Volume, memory: dict[str, EntityMemory]) -> tuple[list[Line], float]:
    """Bytes per entity as measured, and the online store's for the stated counts."""
    lines = []
    for kind, m in memory.items():
        name, count = CARD[kind], volume.entities(kind)
        lines += [
            Line(
                f"Redis bytes per {name}, demo's state",
                f"{m.bytes_as_loaded:,.0f} B",
                "measured",
                f"MEMORY USAGE of {m.sampled:,} keys as loaded: {m.payments_as_loaded:.1f} "
                "payments in state",
            ),
            Line(
                f"Redis bytes per {name}, this volume",
                f"{m.bytes_at_volume:,.0f} B",
                "measured",
                f"the same keys, states rewritten to {m.payments_at_volume:.1f} payments "
                f"({volume.payments_per_day:,} a day over {count:,}); "
                f"{m.hashtable_share:.0%} hashtable-encoded",
            ),
        ]
    store_bytes = sum(m.bytes_at_volume * volume.entities(k) for k, m in memory.items())
    sizes = " + ".join(
        f"{volume.entities(k):,} x {m.bytes_at_volume:,.0f} B" for k, m in memory.items()
    )
    lines.append(
        Line(
            "Redis memory, online store",
            f"{store_bytes / 2**30:,.2f} GiB",
            "computed",
            f"{sizes}; allocator overhead and replicas on top",
        )
    )
    return lines, store_bytes


def print_sheet(volume: Volume, world: World, lines: list[Line], figures: dict[str, float]) -> None:
    import os

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    console.print(
        f"\n[bold]Capacity sheet for {volume.payments_per_day:,} payments a day[/]: COMPUTED "
        f"from per-request costs MEASURED on this machine ({os.cpu_count()} cores, shared) in "
        "this run; not a load test at that volume."
    )
    table = Table("quantity", "value", "how", "from")
    for line in lines:
        how = f"[bold]{line.how}[/]" if line.how == "measured" else line.how
        table.add_row(line.quantity, line.value, how, line.basis)
    console.print(table)
    console.print(
        "Replicas are sized on the HTTP path's CPU in the embedded profile: SQLite lookups, "
        "the inline state writer's CPU included. In production the lookups go to Redis and "
        "stream workers apply the states, on CPU outside these cores. Redundancy and deploys "
        "need replicas on top."
    )
    console.print(
        "Redis keeps an entity's hash as a listpack while every value fits "
        "`hash-max-listpack-value` (64 B by default); a payment state of two payments "
        "outgrows it, and the hash stays a hashtable for good, about twice the bytes. "
        "Raising that limit (Redis-wide) is a memory lever this sheet does not measure."
    )
    if world.challenger is None:
        console.print("No challenger in the registry: no shadow scoring in these figures.")
    figures_text = " ".join(f"{name}={value:.4g}" for name, value in figures.items())
    print(f"capacity_sheet payments_per_day={volume.payments_per_day} {figures_text}")


# ---- the run ------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    from benchmarks._arguments import at_least_one, at_least_one_times, positive_number, share

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # the sheet's volume, shown
    )
    volume = parser.add_argument_group("the volume the sheet is for")
    volume.add_argument(
        "--payments-per-day", type=at_least_one, default=10_000_000, help="scored payments"
    )
    volume.add_argument(
        "--peak-to-mean", type=at_least_one_times, default=3.0, help="busiest second over mean"
    )
    volume.add_argument("--cards", type=at_least_one, default=20_000_000, help="in the store")
    volume.add_argument("--terminals", type=at_least_one, default=1_000_000, help="in the store")
    volume.add_argument("--cost-per-core-hour", type=positive_number, default=0.05, help="USD")
    volume.add_argument(
        "--target-utilisation",
        type=share,
        default=0.6,
        help="a replica's CPU share at peak: the rest is room for bursts and a lost replica",
    )
    measured = parser.add_argument_group("what is measured")
    measured.add_argument("--requests", type=at_least_one, default=2_000, help="per path")
    measured.add_argument(
        "--sample-entities", type=at_least_one, default=500, help="Redis keys per entity kind"
    )
    measured.add_argument(
        "--home", type=Path, help="the demo's home, read, never written (None: the settings' home)"
    )
    measured.add_argument("--redis", default=REDIS, help="a database of its own: emptied")
    return parser.parse_args()


def check_redis(connection: str) -> None:
    """Before a minute of measuring: the memory figures need this Redis."""
    import redis

    from fraudlab.errors import ServiceUnavailable
    from fraudlab.redis_client import redis_client

    try:
        redis_client(connection, 2.0).ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"Redis at {connection} is not answering ({exc}): start one, or name it with --redis"
        ) from None


def run(args: argparse.Namespace) -> None:
    from benchmarks._world import copied_world, payloads
    from fraudlab.console import quiet_libraries
    from fraudlab.errors import MissingInput
    from fraudlab.settings import get_settings

    quiet_libraries()
    volume = Volume(
        args.payments_per_day,
        args.peak_to_mean,
        args.cards,
        args.terminals,
        args.cost_per_core_hour,
        args.target_utilisation,
    )
    source = get_settings()
    if args.home is not None:
        source = source.model_copy(update={"home": args.home.expanduser().resolve()})
    check_redis(args.redis)
    with tempfile.TemporaryDirectory(prefix="capacity_sheet_") as folder:
        started = time.perf_counter()
        world = copied_world(source, Path(folder))
        bodies = payloads(world, args.requests)
        if not bodies:
            raise MissingInput(f"{source.home}: no payments in the day after its snapshot")
        print(
            f"{source.home} copied: champion v{world.champion}, snapshots up to "
            f"{world.online_until:%Y-%m-%d}; {len(bodies):,} payments of the day after "
            f"({time.perf_counter() - started:.0f} s)"
        )
        costs: list[CpuCost] = []
        for path, measure in (("score() in-process", in_process_cost), ("HTTP", http_cost)):
            started = time.perf_counter()
            costs.append(measure(world, bodies, args.requests))
            took = time.perf_counter() - started
            print(f"{path}: {costs[-1].total_ms:.2f} ms CPU a request ({took:.0f} s)")
        started = time.perf_counter()
        memory = redis_memory(world, volume, args.redis, args.sample_entities)
        print(
            f"Redis {args.redis}: loaded, measured, emptied ({time.perf_counter() - started:.0f} s)"
        )
    in_process, http = costs
    lines, figures = sheet(volume, in_process, http, memory)
    print_sheet(volume, world, lines, figures)


def main() -> None:
    # benchmarks/serving.py shares its name with the `serving` package this imports.
    sys.path.insert(0, str(ROOT))
    args = arguments()
    from fraudlab.errors import FraudlabError

    try:
        run(args)
    except FraudlabError as exc:  # one line, no traceback: no demo, no Redis
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
