"""How fast is the scoring service, live, against the plain way of serving the same model?

Builds (or reuses, with `--home`) a benchmark world: ~475k simulated payments, Feast
tables and online store, a LightGBM champion and a logistic-regression challenger in
MLflow (benchmarks/_world.py). Starts the scoring API as a child process in two
profiles, one after the other, and drives each with the same load from another process
(a raw asyncio HTTP/1.1 keep-alive client, so the client is not the bottleneck) with
payments after the cutoff:

- embedded: SQLite online store, one uvicorn worker (the figures in the docs);
- production: Feast's online store on Redis (`--redis`, a database of its own that is
  emptied and loaded first), two uvicorn workers (`--workers`). A routing change
  reaches the second worker on its next alias poll, so the run waits one poll after
  each.

The load, per profile:

- at a fixed 200 requests/s (open loop: each request leaves on schedule, on any idle
  connection): (a) champion only, (b) champion plus shadow, (c) champion plus a 50%
  canary, switched with POST /admin/routing and interleaved over `--rounds` rounds so
  drift on a busy machine does not favour one of them;
- saturated, at fixed concurrency, with the default routing (shadow on) and champion only;
- the plain way (benchmarks/_plain_app.py: Feast get_online_features + pyfunc predict
  on a one-row DataFrame), saturated the same way;
- the framework's ceiling (benchmarks/_empty_app.py: the same route and request schema
  with nothing behind them), saturated the same way, one worker.

Latency is measured in the client, from writing a request to reading its whole response.
Where the server's time goes (features, model, the rest) is read back from the
prediction log. The last three lines:
`serving_production p50_ms=X p99_ms=X max_rps=X vs_embedded=X workers=N`
`serving_ceiling empty_rps=X ours_rps=X vs_ceiling=X workers=1`
`serving p50_ms=X p99_ms=X shadow_p50_overhead_pct=X max_rps=X vs_plain=X`
(p50 and p99 at 200 requests/s with shadow on; max_rps saturated with shadow on;
vs_plain = embedded saturated rps over plain's; vs_embedded = production's over it).

With `--update-path` (or `--update-path-only`), each profile is then measured with the
velocity state's update path off (today's path) and on (inline writes; the stream and
a running worker), shadow on, over `--update-rounds` interleaved pairs of runs, each
from a reseeded state, with the CPU time per request of the API, the worker and Redis
(benchmarks/_update_path.py), and a last line `serving_updates embedded_p99_ratio=X
embedded_rps_ratio=X embedded_cpu_ratio=X production_...` (ratios of the medians;
targets: p99 <= 1.2x, rps >= 0.8x).

The servers inherit this process's environment, so e.g. `OMP_NUM_THREADS=1 python
benchmarks/serving.py` shows what LightGBM's OpenMP threads cost on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks._world import World
    from client.http import Answer
    from fraudlab.settings import Settings

RATE = 200  # requests/s of the latency targets
CONCURRENCY = 16  # in-flight requests when saturated: enough to keep one worker busy
CONNECTIONS = 32  # fixed-rate pool: a slow response never holds the next request back
WARMUP = 200  # unmeasured requests before each measurement
OURS, PLAIN = "serving.app:create_app", "benchmarks._plain_app:create_app"
EMPTY = "benchmarks._empty_app:create_app"  # the framework's ceiling
REDIS = "127.0.0.1:6379,db=11"  # its own database (demo 0, tests 7 and 9): emptied first
ROOT = Path(__file__).resolve().parents[1]
ROUTINGS: dict[str, dict[str, object]] = {  # fixed-rate scenario -> POST /admin/routing body
    "a champion only": {"shadow": False, "canary_share": 0.0},
    "b champion + shadow": {"shadow": True, "canary_share": 0.0},
    "c champion + 50% canary": {"shadow": False, "canary_share": 0.5},
}


# ---- the load generator (client/http.py), in a process of its own -------------------


@dataclass
class LoadResult:
    latencies_ms: list[float]
    seconds: float  # wall time of the whole measurement
    failures: int  # responses other than 200
    canary: int  # responses routed to the challenger
    fallback: int  # responses scored with missing or stale features
    worst_lag_ms: float = 0.0  # fixed rate: latest departure behind schedule


def _tally(result: LoadResult, answer: Answer) -> None:
    result.latencies_ms[answer.index] = answer.latency_ms
    result.failures += answer.status != 200
    result.canary += b'"route":"canary"' in answer.body
    result.fallback += b'"fallback":true' in answer.body


def drive(
    port: int, warmup: list[bytes], requests: list[bytes], rate: float | None, concurrency: int
) -> LoadResult:
    """Warm up, then measure: at `rate` requests/s, or saturated when rate is None."""
    from client.http import send_all

    send_all("127.0.0.1", port, warmup, rate=0, connections=4, on_answer=lambda _: None)
    result = LoadResult([0.0] * len(requests), 0.0, 0, 0, 0)
    started = time.perf_counter()
    result.worst_lag_ms = send_all(
        "127.0.0.1",
        port,
        requests,
        rate=rate or 0,
        connections=concurrency if rate is None else CONNECTIONS,
        on_answer=lambda answer: _tally(result, answer),
    )
    result.seconds = time.perf_counter() - started
    return result


# ---- servers: uvicorn child processes ---------------------------------------------------


@contextmanager
def uvicorn_server(
    app: str, env: dict[str, str], log_dir: Path, workers: int = 1, name: str = ""
) -> Iterator[int]:
    """uvicorn serving `app`; yields its port once every worker's /readyz answers 200."""
    from serving.process import running_server  # after _fix_import_path: see main()

    log_file = log_dir / f"{app.split(':')[0]}{name}.log"
    with running_server(
        env, app=app, workers=workers, log_file=log_file, ready_timeout=180, cwd=ROOT
    ) as url:
        yield int(url.rsplit(":", 1)[1])


def set_routing(port: int, token: str, routing: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/routing",
        data=json.dumps(routing).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        state = json.load(response)  # the whole routing: the breaker too
    assert {key: state.get(key) for key in routing} == routing, f"routing not applied: {state}"


def hold_clock(port: int, token: str, instant: str) -> None:
    """Simulated time: the service's clock held at the payloads' time (serving/clock.py)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/clock",
        data=json.dumps({"now": instant}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["held"], "the clock was not held"


# ---- the run ------------------------------------------------------------------------------


def encode(payloads: list[dict[str, object]], tag: str, port: int, count: int) -> list[bytes]:
    """`count` POST /v1/score requests, cycling through the payloads; transaction ids
    carry `tag` so the prediction log tells the scenarios apart."""
    from client.http import post

    return [
        post(
            "127.0.0.1",
            port,
            "/v1/score",
            payloads[i % len(payloads)] | {"transaction_id": f"{tag}-{i}"},
        )
        for i in range(count)
    ]


@dataclass
class Row:
    scenario: str
    p50_ms: float
    p99_ms: float
    rps: float
    failures: int
    canary_pct: float
    fallback_pct: float
    tag: str


def summarize_rows(scenario: str, tag: str, results: list[LoadResult]) -> Row:
    import numpy as np

    latencies = np.concatenate([r.latencies_ms for r in results])
    answered = len(latencies)
    return Row(
        scenario,
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        answered / sum(r.seconds for r in results),
        sum(r.failures for r in results),
        100 * sum(r.canary for r in results) / answered,
        100 * sum(r.fallback for r in results) / answered,
        tag,
    )


def stage_breakdown(log_path: Path, tag: str, client_p50_ms: float) -> str:
    """Median server-side stage times of one scenario, from the prediction log."""
    from serving.prediction_log import stage_latency

    stages = stage_latency(log_path, transaction_prefix=tag)
    if stages.empty:
        return "no prediction log rows"
    features, model, total = stages.median()
    rest = client_p50_ms - total  # HTTP, uvicorn, FastAPI, pydantic, the client's read
    return (
        f"features {features:.2f}, model {model:.2f}, score() {total:.2f}, the rest {rest:.2f} ms"
    )


@dataclass(frozen=True)
class Profile:
    name: str  # "embedded" or "production"
    label: str  # how the tables name it
    tag: str  # transaction-id prefix of its requests in the prediction log
    env: dict[str, str]
    workers: int
    routing_settles_s: float  # wait after a routing change: 0 with one worker


def run(args: argparse.Namespace, home: Path, pool: ProcessPoolExecutor) -> None:
    from benchmarks._world import (
        build_world,
        load_redis,
        payloads,
        production_env,
        production_settings,
    )
    from fraudlab.settings import Settings

    world = build_world(Settings(home=home))
    bodies = payloads(world, 5_000)
    token = secrets.token_hex(16)
    admin = {"FRAUDLAB_SERVING__ADMIN_TOKEN": token}
    production = production_settings(world, args.redis)
    load_redis(world, production)
    poll = world.settings.serving.alias_poll_seconds
    embedded_env = {"FRAUDLAB_HOME": str(home), "FRAUDLAB_PROFILE": "embedded"}
    profiles = [
        Profile("embedded", "SQLite, 1 worker", "E", embedded_env | admin, 1, 0),
        Profile(
            "production",
            f"Redis, {args.workers} workers",
            "P",
            production_env(production) | admin,
            args.workers,
            poll + 0.5 if args.workers > 1 else 0,
        ),
    ]
    run_id = secrets.token_hex(3)
    n = args.requests
    print(
        f"{n} requests per scenario and profile, {os.cpu_count()} cores; "
        f"saturated = {CONCURRENCY} in flight; profiles: "
        + "; ".join(f"{p.name} ({p.label})" for p in profiles)
    )

    def measure(port: int, tag: str, count: int, rate: float | None) -> LoadResult:
        warmup = encode(bodies, f"{run_id}w", port, WARMUP)
        requests = encode(bodies, f"{run_id}{tag}", port, count)
        return pool.submit(drive, port, warmup, requests, rate, CONCURRENCY).result()

    settings_of = {"embedded": world.settings, "production": production}
    if args.update_path_only:
        update_path(profiles, settings_of, world, token, bodies, measure, args)
        return
    rows: dict[str, list[Row]] = {}
    for profile in profiles:
        with uvicorn_server(OURS, profile.env, home, profile.workers, profile.tag) as port:
            hold_clock(port, token, str(bodies[-1]["timestamp"]))
            rows[profile.name] = measure_profile(profile, port, token, args, measure)
    with uvicorn_server(PLAIN, profiles[0].env, home) as port:
        plain = summarize_rows("saturated, plain way", "p", [measure(port, "p", n, None)])
    with uvicorn_server(EMPTY, profiles[0].env, home) as port:
        ceiling = summarize_rows("saturated, empty endpoint", "x", [measure(port, "x", n, None)])
    rows["embedded"].append(plain)
    report(rows, profiles, world.settings.prediction_log_path, run_id, ceiling)
    if args.update_path:
        update_path(profiles, settings_of, world, token, bodies, measure, args)


def update_path(
    profiles: list[Profile],
    settings_of: dict[str, Settings],
    world: World,
    token: str,
    bodies: list[dict[str, object]],
    measure: Callable[[int, str, int, float | None], LoadResult],
    args: argparse.Namespace,
) -> None:
    """The velocity state's update path against today's path (no update), shadow on, in
    each profile, interleaved over rounds (benchmarks/_update_path.py)."""
    from benchmarks._update_path import MODES, UpdateRun, reseed, run_once, summarize

    print(
        f"\nupdate path (shadow on), {args.update_rounds} interleaved rounds; off = today's path, "
        "the payment state reseeded before every run"
    )
    lines = []
    for profile in profiles:
        settings, mode = settings_of[profile.name], MODES[profile.name]

        @contextmanager
        def server(env: dict[str, str], profile: Profile = profile) -> Iterator[int]:
            with uvicorn_server(OURS, env, world.settings.home, profile.workers, "u") as port:
                hold_clock(port, token, str(bodies[-1]["timestamp"]))
                set_routing(port, token, ROUTINGS["b champion + shadow"])
                time.sleep(profile.routing_settles_s)
                yield port

        runs: dict[str, list[UpdateRun]] = {"off": [], mode: []}
        for r in range(args.update_rounds):
            for updates in runs:  # off first, then on, in every round
                reseed(world, settings)
                tag = f"{profile.tag}u{updates[0]}{r}"
                runs[updates].append(
                    run_once(
                        server,
                        profile.env,
                        settings,
                        updates,
                        lambda port, phase, rate, tag=tag: summarize_load(
                            measure(port, tag + phase, args.requests, rate)
                        ),
                        args.requests + WARMUP,  # the CPU window holds the warm-up too
                        ROOT,
                    )
                )
        lines.append(summarize(profile.name, runs))
    print("serving_updates " + " ".join(lines))


def summarize_load(result: LoadResult) -> Row:
    return summarize_rows("", "", [result])


def measure_profile(
    profile: Profile,
    port: int,
    token: str,
    args: argparse.Namespace,
    measure: Callable[[int, str, int, float | None], LoadResult],
) -> list[Row]:
    """The fixed-rate scenarios, interleaved over rounds, then the two saturated ones."""

    def route(routing: dict[str, object]) -> None:
        set_routing(port, token, routing)
        time.sleep(profile.routing_settles_s)  # the other workers apply it on their next poll

    t = profile.tag
    results: dict[str, list[LoadResult]] = {name: [] for name in ROUTINGS}
    for r in range(args.rounds):  # interleaved, so machine drift hits every scenario alike
        for scenario, routing in ROUTINGS.items():
            route(routing)
            results[scenario].append(
                measure(port, f"{t}{scenario[0]}{r}", args.requests // args.rounds, RATE)
            )
    rows = [
        summarize_rows(f"{scenario} @ {RATE} rps", f"{t}{scenario[0]}", got)
        for scenario, got in results.items()
    ]
    route(ROUTINGS["b champion + shadow"])
    saturated = [measure(port, f"{t}s", args.requests, None)]
    rows.append(summarize_rows("saturated, shadow on", f"{t}s", saturated))
    route(ROUTINGS["a champion only"])
    saturated = [measure(port, f"{t}o", args.requests, None)]
    rows.append(summarize_rows("saturated, champion only", f"{t}o", saturated))
    return rows


def _table(rows: list[Row]) -> None:
    header = f"{'p50 ms':>8}{'p99 ms':>8}{'rps':>8}{'fail':>6}{'canary%':>9}{'fallback%':>10}"
    print(f"{'scenario':<36}{header}")
    for r in rows:
        print(
            f"{r.scenario:<36}{r.p50_ms:8.2f}{r.p99_ms:8.2f}{r.rps:8.0f}{r.failures:6d}"
            f"{r.canary_pct:9.1f}{r.fallback_pct:10.1f}"
        )


def report(
    all_rows: dict[str, list[Row]],
    profiles: list[Profile],
    log_path: Path,
    run_id: str,
    ceiling: Row,
) -> None:
    rows, production = all_rows["embedded"], all_rows["production"]
    print(f"\nembedded profile ({profiles[0].label}), the plain way and the framework's ceiling:")
    _table([*rows, ceiling])
    print(f"\nproduction profile ({profiles[1].label}):")
    _table(production)
    print("\nsame load, side by side (p50 ms / p99 ms / requests/s):")
    print(f"{'scenario':<36}{'embedded':>24}{'production':>24}")
    for e, p in zip(rows, production, strict=False):
        cells = [f"{r.p50_ms:.2f} / {r.p99_ms:.2f} / {r.rps:.0f}" for r in (e, p)]
        print(f"{e.scenario:<36}{cells[0]:>24}{cells[1]:>24}")
    print("\nwhere the server's time goes (medians, prediction log):")
    for profile, measured in ((profiles[0], rows[:-1]), (profiles[1], production)):
        for r in measured:
            name = f"{profile.name[:4]} {r.scenario}"
            print(f"  {name:<39}{stage_breakdown(log_path, run_id + r.tag, r.p50_ms)}")
    champion, shadow, plain, ours = rows[0], rows[1], rows[-1], rows[3]
    overhead = 100 * (shadow.p50_ms - champion.p50_ms) / champion.p50_ms
    vs_plain = ours.rps / plain.rps
    checks = [
        (f"p99 at {RATE} rps with shadow <= 5 ms", f"{shadow.p99_ms:.2f} ms", shadow.p99_ms <= 5),
        ("shadow adds <= 10% to p50", f"{overhead:+.1f}%", overhead <= 10),
        ("saturated >= 1000 rps (shadow on)", f"{ours.rps:.0f} rps", ours.rps >= 1000),
        ("saturated >= 3x the plain way", f"{vs_plain:.2f}x", vs_plain >= 3),
    ]
    failures = sum(r.failures for r in rows + production)
    print("\ntargets (one worker):" + ("" if not failures else f"  {failures} FAILED REQUESTS"))
    for target, got, met in checks:
        print(f"  {target:<40}{got:>12}  {'met' if met else 'NOT MET'}")
    p_shadow, p_ours = production[1], production[3]
    print(
        f"serving_production p50_ms={p_shadow.p50_ms:.3f} p99_ms={p_shadow.p99_ms:.3f} "
        f"max_rps={p_ours.rps:.0f} vs_embedded={p_ours.rps / ours.rps:.2f} "
        f"workers={profiles[1].workers}"
    )
    print(
        f"serving_ceiling empty_rps={ceiling.rps:.0f} ours_rps={ours.rps:.0f} "
        f"vs_ceiling={ours.rps / ceiling.rps:.2f} workers=1"
    )
    print(
        f"serving p50_ms={shadow.p50_ms:.3f} p99_ms={shadow.p99_ms:.3f} "
        f"shadow_p50_overhead_pct={overhead:.1f} max_rps={ours.rps:.0f} vs_plain={vs_plain:.2f}"
    )


def _fix_import_path() -> None:
    """This file shares its name with the `serving` package it measures: keep its own
    folder off the import path, and put the repository root on it."""
    here = str(ROOT / "benchmarks")
    sys.path[:] = [str(ROOT), *(p for p in sys.path if os.path.abspath(p or ".") != here)]


def main() -> None:
    _fix_import_path()
    from benchmarks._arguments import at_least_one

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=at_least_one, default=4_000, help="measured per scenario"
    )
    parser.add_argument(
        "--rounds", type=at_least_one, default=2, help="interleaved fixed-rate rounds"
    )
    parser.add_argument("--home", type=Path, help="build or reuse the world here (kept)")
    parser.add_argument(
        "--redis", default=REDIS, help="production profile's online store (db emptied first)"
    )
    parser.add_argument(
        "--workers", type=at_least_one, default=2, help="production profile's workers"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary world")
    parser.add_argument(
        "--update-path",
        action="store_true",
        help="also measure the velocity state's update path against none, per profile",
    )
    parser.add_argument(
        "--update-path-only", action="store_true", help="measure only the update path"
    )
    parser.add_argument(
        "--update-rounds",
        type=at_least_one,
        default=7,
        help="update path: interleaved off/on pairs (medians of 3 swung with one slow round)",
    )
    args = parser.parse_args()
    spawn = get_context("spawn")  # the load generator is a process of its own
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        if args.home is not None:
            run(args, args.home.resolve(), pool)
            return
        home = Path(tempfile.mkdtemp(prefix="serving_bench_"))
        try:
            run(args, home, pool)
        finally:
            if args.keep:
                print(f"world kept in {home} (reuse it with --home {home})")
            else:
                import shutil

                shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
