"""35 seconds of fixed-rate traffic (6,000 requests) while the champion alias flips
between the two registered versions ten times: no request fails, every flip reaches the
answers, and a clean stop leaves exactly one prediction-log row per answer."""

from __future__ import annotations

import signal
import threading
import time

from pipelines.registry import CHAMPION, connect, set_alias
from serving.prediction_log import count_rows
from tests.reliability._fixtures import (  # noqa: F401  (reliability_world is a fixture)
    FixedRateLoad,
    Outcome,
    ReliabilityWorld,
    reliability_world,
    start_server,
)

LOAD_SECONDS = 35.0
RATE = 6_000 / LOAD_SECONDS  # requests/s, open loop: 6,000 requests in all
FLIPS = 10
FLIP_EVERY_SECONDS = 3.0  # the last flip lands 5 s before the load ends; polls are 0.5 s
CLEAN_EXIT = (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its graceful shutdown


def test_fixed_rate_load_while_the_champion_flips_ten_times(
    reliability_world: ReliabilityWorld,  # noqa: F811
) -> None:
    world = reliability_world
    settings = world.server_settings("load")
    registry = connect(settings)
    model = settings.training.model_name
    server, startup = start_server(settings)
    flips: list[tuple[float, str]] = []  # (monotonic time the alias moved, new version)
    try:
        load = FixedRateLoad(server.url, world.payments, RATE, LOAD_SECONDS)

        def flip() -> None:
            start = time.monotonic()
            for k in range(1, FLIPS + 1):
                if load.halt.wait(max(0.0, start + k * FLIP_EVERY_SECONDS - time.monotonic())):
                    return
                version = world.challenger if k % 2 else world.champion
                set_alias(registry, model, CHAMPION, version)
                flips.append((time.monotonic(), version))

        flipper = threading.Thread(target=flip, name="flipper", daemon=True)
        load.start()
        flipper.start()
        load.join()
        load.halt.set()
        flipper.join(timeout=30)
    finally:
        exit_code = server.stop()
    logged = count_rows(server.log_path)

    versions = sorted({o.version for o in load.outcomes if o.version})
    swap_seconds = _swap_delays(load, flips)
    stale = _stale_answers(load, flips)
    print(
        f"\nload: {len(load.outcomes)} sent at {RATE:.0f}/s over {LOAD_SECONDS:.0f} s, "
        f"{load.answered} answered, {len(load.failures)} failed, versions seen {versions}, "
        f"p50 {load.latency_ms(0.50):.1f} ms, p99 {load.latency_ms(0.99):.1f} ms, "
        f"{len(flips)} flips, swap seen after {min(swap_seconds):.2f}-{max(swap_seconds):.2f} s, "
        f"{stale} stale answers after a swap, "
        f"{logged} logged, startup {startup:.1f} s"
    )
    assert exit_code in CLEAN_EXIT, server.tail()
    assert len(load.outcomes) == int(RATE * LOAD_SECONDS)
    assert load.failures == [], load.failures[:5]
    assert versions == sorted([world.champion, world.challenger])
    assert len(flips) == FLIPS
    assert max(swap_seconds) < FLIP_EVERY_SECONDS  # every flip reached the answers in time
    assert stale == 0  # once the new version answers, the old one never does again
    assert logged == load.answered  # a clean stop flushes every answer, not one more


def _segments(
    load: FixedRateLoad, flips: list[tuple[float, str]]
) -> list[tuple[float, str, list[Outcome]]]:
    """Per flip: when the alias moved, to which version, and the outcomes of the
    requests sent from then until the next flip."""
    bounds = [moved_at for moved_at, _ in flips[1:]] + [float("inf")]
    return [
        (moved_at, version, [o for o in load.outcomes if moved_at <= o.sent_at < until])
        for (moved_at, version), until in zip(flips, bounds, strict=True)
    ]


def _stale_answers(load: FixedRateLoad, flips: list[tuple[float, str]]) -> int:
    """Requests sent after the new version first answered, yet answered by another."""
    stale = 0
    for _, version, outcomes in _segments(load, flips):
        new = [o.sent_at + o.seconds for o in outcomes if o.version == version]
        if new:
            stale += sum(o.sent_at > min(new) and o.version != version for o in outcomes)
    return stale


def _swap_delays(load: FixedRateLoad, flips: list[tuple[float, str]]) -> list[float]:
    """For each flip, how long until a request sent after it was answered by the new
    version (infinity if none was before the next flip)."""
    delays = []
    for moved_at, version, outcomes in _segments(load, flips):
        seen = [o.sent_at + o.seconds for o in outcomes if o.version == version]
        delays.append(min(seen) - moved_at if seen else float("inf"))
    return delays
