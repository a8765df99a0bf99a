"""The velocity state's update path against today's path (no update), for
benchmarks/serving.py `--update-path`: what keeping the state costs the request path.

Per profile, `rounds` interleaved pairs of server runs, update path off then on (inline
writes in the embedded profile; the stream publisher plus a running `fraudlab stream
worker` in production), shadow on. Before every run the online store's payment state
is reseeded as materialized and the streams are emptied: the load cycles through one
day's payments, and a state left over from an earlier run would hold every payment once
more per run (the first version of this benchmark measured that growth, not the update
path). Each run measures:
- p99 at 200 requests/s, and saturated requests/s, in the client;
- the CPU time per request of the API's processes, the embedded profile's state writer
  process, the stream worker and Redis over
  the fixed-rate phase (psutil): the cost in the machine's own terms, which a shared,
  noisy machine moves far less than a wall-clock throughput.
Ratios are of the medians over the rounds, each side measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from benchmarks._world import World
    from fraudlab.settings import Settings

MODES = {"embedded": "inline", "production": "stream"}
TARGET_P99_RATIO, TARGET_RPS_RATIO = 1.2, 0.8


@dataclass
class UpdateRun:
    p99_ms: float
    rps: float
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per request, by process


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:  # exited: its time is gone with it
            pass
    return total


def _server_processes(inline: bool) -> dict[str, list[psutil.Process]]:
    """This process's uvicorn server and its workers ("api"), and the payment-state
    writers they started ("writer", the embedded profile's inline updates). Both a
    writer and a uvicorn worker of a multi-worker server are `spawn_main` children, so
    cmdlines cannot tell them apart (this once counted the production profile's workers
    as writers): a writer exists only with inline updates, and has no child of its own."""
    found: dict[str, list[psutil.Process]] = {"api": [], "writer": []}
    for child in psutil.Process().children(recursive=True):
        try:
            if "serving.process" in " ".join(child.cmdline()):
                for process in [child, *child.children(recursive=True)]:
                    spawned = "spawn_main" in " ".join(process.cmdline())
                    writer = inline and spawned and not process.children()
                    found["writer" if writer else "api"].append(process)
        except psutil.Error:
            pass
    return found


def _redis_process(settings: Settings) -> list[psutil.Process]:
    """The Redis server on loopback, when this user may read its CPU time."""
    from fraudlab.redis_client import redis_client

    try:
        pid = int(redis_client(settings.redis_connection, 2).info("server")["process_id"])
        return [psutil.Process(pid)]
    except Exception:  # another host, or no permission: its CPU is not counted
        return []


@contextmanager
def _stream_worker(env: dict[str, str], root: Path, on: bool) -> Iterator[list[psutil.Process]]:
    if not on:
        yield []
        return
    worker = subprocess.Popen(
        [sys.executable, "-m", "fraudlab", "stream", "worker"],
        env=os.environ | env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield [psutil.Process(worker.pid)]
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def reseed(world: World, settings: Settings) -> None:
    """The profile's online store as materialized at the cutoff, streams emptied."""
    from benchmarks._world import load_redis
    from features.store import materialize

    with open(os.devnull, "w") as quiet, redirect_stdout(quiet):  # Feast prints each view
        if settings.profile == "production":
            load_redis(world, settings, say=lambda _: None)  # one database: state, streams
        else:
            materialize(settings, end=world.online_until.to_pydatetime(), payment_state=True)


def run_once(
    server: Callable[[dict[str, str]], Any],
    env: dict[str, str],
    settings: Settings,
    updates: str,
    measure: Callable[[int, str, float | None], Any],
    requests: int,
    root: Path,
) -> UpdateRun:
    """One server (and worker) run: fixed rate with CPU accounting, then saturated."""
    env = env | {"FRAUDLAB_STREAM__UPDATES": updates}
    with _stream_worker(env, root, updates == "stream") as worker, server(env) as port:
        groups = _server_processes(updates == "inline") | {
            "worker": worker,
            "redis": _redis_process(settings),
        }
        before = {name: _cpu_seconds(group) for name, group in groups.items()}
        fixed = measure(port, "f", 200.0)
        cpu_ms = {
            name: 1e3 * (_cpu_seconds(group) - before[name]) / requests
            for name, group in groups.items()
            if group
        }
        saturated = measure(port, "s", None)
    return UpdateRun(fixed.p99_ms, saturated.rps, cpu_ms)


def summarize(profile: str, runs: dict[str, list[UpdateRun]]) -> str:
    """Print the medians and ratios of one profile; return its `serving_updates` part."""
    mode = MODES[profile]
    off, on = runs["off"], runs[mode]

    def median(values: list[float]) -> float:
        return statistics.median(values)

    p99 = {k: median([r.p99_ms for r in v]) for k, v in runs.items()}
    rps = {k: median([r.rps for r in v]) for k, v in runs.items()}
    cpu = {
        k: {name: median([r.cpu_ms.get(name, 0.0) for r in v]) for name in v[0].cpu_ms}
        for k, v in runs.items()
    }
    p99_ratio, rps_ratio = p99[mode] / p99["off"], rps[mode] / rps["off"]
    cpu_off, cpu_on = sum(cpu["off"].values()), sum(cpu[mode].values())
    print(f"  {profile}, {len(off)} rounds (each: off, then {mode}):")
    for name, got in (("off", off), (mode, on)):
        rounds = ", ".join(f"{r.p99_ms:.2f} ms / {r.rps:.0f} rps" for r in got)
        parts = ", ".join(f"{n} {ms:.2f}" for n, ms in cpu[name].items() if ms)
        print(f"    {name:<7} p99 at 200 rps / saturated, per round: {rounds}")
        print(f"    {'':<7} CPU ms per request at 200 rps (medians): {parts}")
    print(
        f"    medians: p99 {p99['off']:.2f} -> {p99[mode]:.2f} ms (x{p99_ratio:.2f}, target <= "
        f"{TARGET_P99_RATIO}), saturated {rps['off']:.0f} -> {rps[mode]:.0f} rps "
        f"(x{rps_ratio:.2f}, target >= {TARGET_RPS_RATIO}); CPU per request "
        f"{cpu_off:.2f} -> {cpu_on:.2f} ms (x{cpu_on / cpu_off:.2f})"
    )
    return (
        f"{profile}_p99_ratio={p99_ratio:.2f} {profile}_rps_ratio={rps_ratio:.2f} "
        f"{profile}_cpu_ratio={cpu_on / cpu_off:.2f}"
    )
