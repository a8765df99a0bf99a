"""The production path of the velocity state: payment events on real Redis Streams, two
publishers (two API workers) and two stream workers, the state in Feast's Redis online
store. Whatever the order, the interleaving or the retries, every customer's and
terminal's state ends as if its payments had been merged one by one in time order;
and a worker that died holding unacknowledged events has them applied by its successor.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
import redis

from features.store import apply_definitions, open_store
from features.velocity import PaymentState
from fraudlab.redis_client import redis_client
from fraudlab.settings import Settings
from serving.payment_stream import (
    GROUP,
    StreamLag,
    StreamPublisher,
    StreamWorker,
    all_streams,
    stream_lag,
)
from serving.process import free_port
from serving.velocity_state import (
    KINDS,
    PaymentEvent,
    PaymentStates,
    state_arrays_equal,
    text_of,
)
from tests.conftest import World, make_settings, reachable, services_required

REDIS_DB = 11  # away from a demo (0), the smoke test (7) and the stack test (9)


@pytest.fixture
def production(world: World, tmp_path: Path) -> Iterator[Settings]:
    if not reachable(("127.0.0.1", 6379)):
        if services_required():
            pytest.fail("Redis not reachable on 127.0.0.1:6379, and FRAUDLAB_REQUIRE_SERVICES=1")
        pytest.skip("Redis not reachable on 127.0.0.1:6379")
    settings = make_settings(
        tmp_path, profile="production", redis_connection=f"127.0.0.1:6379,db={REDIS_DB}"
    )
    settings = settings.model_copy(
        update={"stream": settings.stream.model_copy(update={"shards": 4, "batch_events": 200})}
    )
    (tmp_path / "feature_data").symlink_to(world.settings.feature_data_dir)
    client = redis_client(settings.redis_connection, timeout_seconds=5)
    client.flushdb()
    apply_definitions(settings)
    yield settings
    client.flushdb()
    client.close()


def _events(world: World, n: int) -> list[PaymentEvent]:
    tx = world.transactions.sort_values("event_timestamp").iloc[50_000 : 50_000 + n]
    us = tx["event_timestamp"].dt.as_unit("us").astype("int64").to_numpy()
    return [
        PaymentEvent(
            int(r.transaction_id),
            int(r.customer_id),
            int(r.terminal_id),
            float(r.amount),
            int(t),
            int(t),
        )
        for r, t in zip(tx.itertuples(), us, strict=True)
    ]


def _expected(events: list[PaymentEvent], kind: str) -> dict[int, PaymentState]:
    states: dict[int, PaymentState] = {}
    for event in sorted(events, key=lambda e: (e.event_us, e.transaction_id)):
        key = event.entity(kind)
        states[key] = states.get(key, PaymentState.empty()).merged(event.as_state(), kind)
    return states


def _publish(settings: Settings, events: list[PaymentEvent]) -> None:
    """Publish the events as the API does, and wait until they are all in Redis."""
    publisher = StreamPublisher(settings, timeout_seconds=2)
    for event in events:
        publisher.publish(event)
    publisher.close()


def _run_workers(settings: Settings, count: int, until_applied: int) -> list[StreamWorker]:
    workers = [
        StreamWorker(settings, PaymentStates(open_store(settings)), i, count, block_ms=50)
        for i in range(count)
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while sum(w.progress.events for w in workers) < until_applied:
        assert time.monotonic() < deadline, [w.progress for w in workers]
        time.sleep(0.05)
    for worker in workers:
        worker.stop()
    for thread in threads:
        thread.join(timeout=5)
    return workers


def test_two_publishers_two_workers_any_order_and_retries_give_the_ordered_state(
    world: World, production: Settings
) -> None:
    events = _events(world, 3_000)
    rng = np.random.default_rng(7)
    shuffled = [events[i] for i in rng.permutation(len(events))]
    retries = [events[i] for i in rng.integers(0, len(events), 300)]
    publishers = [StreamPublisher(production, timeout_seconds=2) for _ in range(2)]
    for i, event in enumerate(shuffled + retries):
        publishers[i % 2].publish(event)
    for publisher in publishers:
        publisher.close()
    client = redis_client(production.stream_redis_connection, timeout_seconds=2)
    streams = all_streams(production)
    published = sum(client.xlen(s) for s in streams)
    assert published == 2 * (len(events) + len(retries))  # one entry per kind per event
    workers = _run_workers(production, 2, published)
    assert {s for w in workers for s in w.streams} == set(streams)  # each stream: one worker
    assert not set(workers[0].streams) & set(workers[1].streams)
    states = PaymentStates(open_store(production))
    for kind in KINDS:
        want = _expected(events, kind)
        ids = list(want)
        got = states.read(kind, ids)
        wrong = [
            i
            for i, (state, _) in zip(ids, got, strict=True)
            if not state_arrays_equal(state, want[i])
        ]
        assert wrong == [], f"{kind}: {len(wrong)} of {len(ids)} states differ"
    lag = stream_lag(client, streams)
    assert lag.seconds == 0.0 and lag.pending_events == 0


def test_a_worker_restarted_after_dying_mid_batch_applies_what_it_held(
    world: World, production: Settings
) -> None:
    events = _events(world, 400)
    _publish(production, events)
    client = redis_client(production.stream_redis_connection, timeout_seconds=2)
    streams = all_streams(production)
    lone = StreamWorker(production, PaymentStates(open_store(production)), 0, 1)
    # The dead worker's last act: it was handed every entry and acknowledged none.
    held = client.xreadgroup(GROUP, lone.name, dict.fromkeys(streams, ">"), count=10_000)
    assert sum(len(entries) for _, entries in held) == 2 * len(events)
    assert stream_lag(client, streams).pending_events == 2 * len(events)
    _run_workers(production, 1, 2 * len(events))  # same name: its pending entries first
    states = PaymentStates(open_store(production))
    want = _expected(events, "customer")
    got = states.read("customer", list(want))
    assert all(state_arrays_equal(s, want[i]) for i, (s, _) in zip(want, got, strict=True))
    assert stream_lag(client, streams).pending_events == 0


def test_a_stopped_worker_shows_as_lag_in_the_services_clock(
    world: World, production: Settings
) -> None:
    """No worker: the lag is the span of served time published since the last apply,
    however fast the (simulated) clock runs; a worker that starts brings it to 0."""
    events = _events(world, 300)
    first = events[0].served_us
    _publish(production, events)
    client = redis_client(production.stream_redis_connection, timeout_seconds=2)
    streams = all_streams(production)
    behind = stream_lag(client, streams)
    assert behind.seconds == pytest.approx((events[-1].served_us - first) / 1e6, abs=300)
    assert behind.seconds > 600 and behind.pending_events == 2 * len(events)
    _run_workers(production, 1, 2 * len(events))
    assert stream_lag(client, streams) == StreamLag(0.0, 0)


def test_a_late_payment_still_lands_in_the_redis_state(world: World, production: Settings) -> None:
    """Feast's Redis store skips a write not newer than the stored row: the state's
    stamp moves forward even when the merged payment is older than its newest."""
    events = _events(world, 200)
    customer = pd.Series([e.customer_id for e in events]).value_counts().index[0]
    mine = [e for e in events if e.customer_id == customer]
    assert len(mine) >= 2
    states = PaymentStates(open_store(production))
    states.apply(mine[1:])
    states.apply(mine[:1])  # the oldest, arriving last
    ((state, _),) = states.read("customer", [int(customer)])
    assert sorted(state.ids.tolist()) == sorted(e.transaction_id for e in mine)


def test_events_queued_while_redis_is_away_are_published_when_it_is_back(
    production: Settings, tmp_path: Path
) -> None:
    """The API's publisher retries in its own thread: a Redis that is not there yet
    costs the requests nothing and loses no event."""
    port = free_port()
    away = production.model_copy(update={"redis_connection": f"127.0.0.1:{port}"})
    publisher = StreamPublisher(away, timeout_seconds=0.05)
    events = [PaymentEvent(i, i, i, 1.0, i, i) for i in range(50)]
    started = time.perf_counter()
    assert all(publisher.publish(e) for e in events)
    assert time.perf_counter() - started < 0.05  # queued, not sent, on the caller's time
    time.sleep(0.5)
    assert publisher.failures >= 1 and publisher.backlog() == len(events)
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis_client(away.redis_connection, timeout_seconds=1)
        deadline = time.monotonic() + 15
        streams = all_streams(away)
        while publisher.backlog() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert publisher.backlog() == 0
        assert sum(client.xlen(s) for s in streams) == 2 * len(events)
        publisher.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


class _WorkerActsAfter:
    """The lag reader's Redis connection, with the worker's next step landing right
    after the reader's `nth` round trip: the interleaving a busy machine produces now and
    then, made certain. Every command still goes to the real Redis."""

    def __init__(self, client: redis.Redis, nth: int, worker_step: Callable[[], None]) -> None:
        self.client, self.nth, self.worker_step = client, nth, worker_step
        self.trips = 0

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        def execute_then_step(*args: Any, **kwargs: Any) -> Any:
            replies = execute(*args, **kwargs)
            self.trips += 1
            if self.trips == self.nth:
                self.worker_step()
            return replies

        pipe.execute = execute_then_step  # type: ignore[method-assign]
        return pipe


@pytest.mark.parametrize("held", [True, False], ids=["held-by-the-worker", "not-yet-read"])
@pytest.mark.parametrize("nth", [1, 2, 3])
def test_a_payment_applied_while_the_lag_is_read_is_not_reported_behind(
    world: World, production: Settings, held: bool, nth: int
) -> None:
    """The API reads the lag every few milliseconds while the worker applies payments.
    A payment the worker acknowledged between two of the reading's round trips is
    applied: the reading may miss it, never call it behind by its age in the service
    clock (the stopped-worker story's false day-0 alarms were ages of 83 and 134 s,
    each the clock's jump since the payment before)."""
    (payment,) = _events(world, 1)
    _publish(production, [payment])
    client = redis_client(production.stream_redis_connection, timeout_seconds=2)
    streams = all_streams(production)
    worker = StreamWorker(production, PaymentStates(open_store(production)), 0, 1)

    def read() -> dict[str, list[bytes]]:
        replies = client.xreadgroup(GROUP, worker.name, dict.fromkeys(streams, ">"), count=10)
        return {text_of(s): [entry_id for entry_id, _ in entries] for s, entries in replies}

    delivered = read() if held else {}

    def apply_and_acknowledge() -> None:
        for stream, ids in (delivered or read()).items():
            client.xack(stream, GROUP, *ids)

    racing = _WorkerActsAfter(client, nth, apply_and_acknowledge)
    later = payment.served_us + 134_000_000  # the service clock has moved on since
    lag = stream_lag(cast(redis.Redis, racing), streams, now_us=later)
    assert racing.trips >= nth  # the worker's step did land mid-reading
    assert lag.seconds == 0.0
    assert stream_lag(client, streams, now_us=later) == StreamLag(0.0, 0)
