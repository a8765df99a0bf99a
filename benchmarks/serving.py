"""How fast is the scoring service, live, against the plain way of serving the same model?

Builds (or reuses, with `--home`) a benchmark world: ~475k simulated payments, Feast
tables and online store, a LightGBM champion and a logistic-regression challenger in
MLflow (benchmarks/_world.py). Starts `uvicorn serving.app:create_app` with one worker
as a child process, and drives it from another process (a raw asyncio HTTP/1.1
keep-alive client, so the client is not the bottleneck) with payments after the cutoff:

- at a fixed 200 requests/s (open loop: each request leaves on schedule, on any idle
  connection): (a) champion only, (b) champion plus shadow, (c) champion plus a 50%
  canary, switched with POST /admin/routing and interleaved over `--rounds` rounds so
  drift on a busy machine does not favour one of them;
- saturated, at fixed concurrency, with the default routing (shadow on) and champion only;
- the plain way (benchmarks/_plain_app.py: Feast get_online_features + pyfunc predict
  on a one-row DataFrame), saturated the same way.

Latency is measured in the client, from writing a request to reading its whole response.
Where the server's time goes (features, model, the rest) is read back from the
prediction log. Last line:
`serving p50_ms=X p99_ms=X shadow_p50_overhead_pct=X max_rps=X vs_plain=X`
(p50 and p99 at 200 requests/s with shadow on; vs_plain = saturated rps over plain's).

The servers inherit this process's environment, so e.g. `OMP_NUM_THREADS=1 python
benchmarks/serving.py` shows what LightGBM's OpenMP threads cost on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

RATE = 200  # requests/s of the latency targets
CONCURRENCY = 16  # in-flight requests when saturated: enough to keep one worker busy
CONNECTIONS = 32  # fixed-rate pool: a slow response never holds the next request back
WARMUP = 200  # unmeasured requests before each measurement
OURS, PLAIN = "serving.app:create_app", "benchmarks._plain_app:create_app"
ROOT = Path(__file__).resolve().parents[1]
ROUTINGS = {  # fixed-rate scenario -> POST /admin/routing body
    "a champion only": {"shadow": False, "canary_share": 0.0},
    "b champion + shadow": {"shadow": True, "canary_share": 0.0},
    "c champion + 50% canary": {"shadow": False, "canary_share": 0.5},
}


# ---- the load generator: runs in its own process, stdlib only --------------------------


@dataclass
class LoadResult:
    latencies_ms: list[float]
    seconds: float  # wall time of the whole measurement
    failures: int  # responses other than 200
    canary: int  # responses routed to the challenger
    fallback: int  # responses scored with missing or stale features
    worst_lag_ms: float = 0.0  # fixed rate: latest departure behind schedule


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return int(head[9:12]), await self.reader.readexactly(length)


async def _connect(port: int, count: int) -> list[Connection]:
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    return [Connection(r, w) for r, w in opened]


def _tally(result: LoadResult, status: int, body: bytes) -> None:
    result.failures += status != 200
    result.canary += b'"route":"canary"' in body
    result.fallback += b'"fallback":true' in body


async def _fixed_rate(port: int, requests: list[bytes], rate: float) -> LoadResult:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in await _connect(port, CONNECTIONS):
        idle.put_nowait(conn)
    result = LoadResult([0.0] * len(requests), 0.0, 0, 0, 0)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int, request: bytes) -> None:
        conn = await idle.get()
        result.worst_lag_ms = max(result.worst_lag_ms, (loop.time() - start - i / rate) * 1e3)
        sent = time.perf_counter()
        status, body = await conn.exchange(request)
        result.latencies_ms[i] = (time.perf_counter() - sent) * 1e3
        idle.put_nowait(conn)
        _tally(result, status, body)

    tasks = []
    for i, request in enumerate(requests):
        if (delay := start + i / rate - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, request)))
    await asyncio.gather(*tasks)
    result.seconds = loop.time() - start
    return result


async def _saturated(port: int, requests: list[bytes], concurrency: int) -> LoadResult:
    conns = await _connect(port, concurrency)
    result = LoadResult([0.0] * len(requests), 0.0, 0, 0, 0)
    cursor = iter(range(len(requests)))

    async def worker(conn: Connection) -> None:
        for i in cursor:  # one shared iterator: each request is sent exactly once
            sent = time.perf_counter()
            status, body = await conn.exchange(requests[i])
            result.latencies_ms[i] = (time.perf_counter() - sent) * 1e3
            _tally(result, status, body)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    result.seconds = time.perf_counter() - started
    return result


def drive(
    port: int, warmup: list[bytes], requests: list[bytes], rate: float | None, concurrency: int
) -> LoadResult:
    """Warm up, then measure: at `rate` requests/s, or saturated when rate is None."""
    try:
        import uvloop  # a faster event loop keeps the client's own overhead small

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(_saturated(port, warmup, 4))
    if rate is None:
        return run(_saturated(port, requests, concurrency))
    return run(_fixed_rate(port, requests, rate))


# ---- servers: uvicorn child processes ---------------------------------------------------


@contextmanager
def uvicorn_server(app: str, env: dict[str, str], log_dir: Path) -> Iterator[int]:
    """One uvicorn worker serving `app`; yields its port once /readyz answers 200."""
    from serving.process import running_server  # after _fix_import_path: see main()

    log_file = log_dir / f"{app.split(':')[0]}.log"
    with running_server(env, app=app, log_file=log_file, ready_timeout=180, cwd=ROOT) as url:
        yield int(url.rsplit(":", 1)[1])


def set_routing(port: int, token: str, routing: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/routing",
        data=json.dumps(routing).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response) == routing, "routing was not applied"


# ---- the run ------------------------------------------------------------------------------


def encode(payloads: list[dict[str, object]], tag: str, port: int, count: int) -> list[bytes]:
    """`count` POST /v1/score requests, cycling through the payloads; transaction ids
    carry `tag` so the prediction log tells the scenarios apart."""
    requests = []
    for i in range(count):
        body = json.dumps(payloads[i % len(payloads)] | {"transaction_id": f"{tag}-{i}"}).encode()
        requests.append(
            b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (port, len(body), body)
        )
    return requests


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


def summarize(scenario: str, tag: str, results: list[LoadResult]) -> Row:
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
    import numpy as np

    with sqlite3.connect(log_path) as conn:
        rows = conn.execute(
            "SELECT features_ms, model_ms, total_ms FROM predictions WHERE transaction_id LIKE ?",
            (f"{tag}%",),
        ).fetchall()
    if not rows:
        return "no prediction log rows"
    features, model, total = np.median(np.array(rows), axis=0)
    rest = client_p50_ms - total  # HTTP, uvicorn, FastAPI, pydantic, the client's read
    return (
        f"features {features:.2f}, model {model:.2f}, score() {total:.2f}, the rest {rest:.2f} ms"
    )


def run(args: argparse.Namespace, home: Path, pool: ProcessPoolExecutor) -> None:
    os.environ["FRAUDLAB_HOME"] = str(home)  # before fraudlab imports: definitions read it
    from benchmarks._world import build_world, payloads
    from fraudlab.settings import Settings

    world = build_world(Settings(home=home))
    bodies = payloads(world, 5_000)
    token = secrets.token_hex(16)
    env = {"FRAUDLAB_HOME": str(home), "FRAUDLAB_SERVING__ADMIN_TOKEN": token}
    run_id = secrets.token_hex(3)
    n, rounds = args.requests, args.rounds
    print(
        f"{n} requests per scenario, one uvicorn worker, {os.cpu_count()} cores; "
        f"saturated = {CONCURRENCY} in flight"
    )
    rows: list[Row] = []

    def measure(port: int, tag: str, count: int, rate: float | None) -> LoadResult:
        warmup = encode(bodies, f"{run_id}w", port, WARMUP)
        requests = encode(bodies, f"{run_id}{tag}", port, count)
        return pool.submit(drive, port, warmup, requests, rate, CONCURRENCY).result()

    with uvicorn_server(OURS, env, home) as port:
        results: dict[str, list[LoadResult]] = {name: [] for name in ROUTINGS}
        for r in range(rounds):  # interleaved, so machine drift hits every scenario alike
            for scenario, routing in ROUTINGS.items():
                set_routing(port, token, routing)
                results[scenario].append(measure(port, f"{scenario[0]}{r}", n // rounds, RATE))
        for scenario, got in results.items():
            rows.append(summarize(f"{scenario} @ {RATE} rps", scenario[0], got))
        set_routing(port, token, ROUTINGS["b champion + shadow"])
        rows.append(summarize("saturated, shadow on", "s", [measure(port, "s", n, None)]))
        set_routing(port, token, ROUTINGS["a champion only"])
        rows.append(summarize("saturated, champion only", "o", [measure(port, "o", n, None)]))
    with uvicorn_server(PLAIN, env, home) as port:
        rows.append(summarize("saturated, plain way", "p", [measure(port, "p", n, None)]))
    report(rows, world.settings.prediction_log_path, run_id)


def report(rows: list[Row], log_path: Path, run_id: str) -> None:
    header = f"{'p50 ms':>8}{'p99 ms':>8}{'rps':>8}{'fail':>6}{'canary%':>9}{'fallback%':>10}"
    print(f"\n{'scenario':<36}{header}")
    for r in rows:
        print(
            f"{r.scenario:<36}{r.p50_ms:8.2f}{r.p99_ms:8.2f}{r.rps:8.0f}{r.failures:6d}"
            f"{r.canary_pct:9.1f}{r.fallback_pct:10.1f}"
        )
    print("\nwhere the server's time goes (medians, prediction log):")
    for r in rows[:-1]:
        print(f"  {r.scenario:<34}{stage_breakdown(log_path, run_id + r.tag, r.p50_ms)}")
    champion, shadow, plain, ours = rows[0], rows[1], rows[-1], rows[3]
    overhead = 100 * (shadow.p50_ms - champion.p50_ms) / champion.p50_ms
    vs_plain = ours.rps / plain.rps
    checks = [
        (f"p99 at {RATE} rps with shadow <= 5 ms", f"{shadow.p99_ms:.2f} ms", shadow.p99_ms <= 5),
        ("shadow adds <= 10% to p50", f"{overhead:+.1f}%", overhead <= 10),
        ("saturated >= 1000 rps (shadow on)", f"{ours.rps:.0f} rps", ours.rps >= 1000),
        ("saturated >= 3x the plain way", f"{vs_plain:.2f}x", vs_plain >= 3),
    ]
    failures = sum(r.failures for r in rows)
    print("\ntargets (one worker):" + ("" if not failures else f"  {failures} FAILED REQUESTS"))
    for target, got, met in checks:
        print(f"  {target:<40}{got:>12}  {'met' if met else 'NOT MET'}")
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4_000, help="measured per scenario")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved fixed-rate rounds")
    parser.add_argument("--home", type=Path, help="build or reuse the world here (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary world")
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
