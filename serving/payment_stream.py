"""Scored payments as events on Redis Streams, and the worker that applies them to the
payment-state views (the production profile's path; serving/velocity_updates.py picks).

Layout: per entity kind, `shards` streams `<prefix>:<kind>:<shard>`; a customer (or a
terminal) always hashes to the same shard, and worker i of n owns the shards s with
s % n == i. So every state has exactly one writer however many workers run, and
its read-merge-write cannot race another's. Order within a stream does not matter:
the merge is a set union by transaction id (features/velocity.py), so out-of-order,
replayed or retried events end in the same state.

Delivery is at least once: a consumer group per stream, entries acknowledged after
their batch is written; a worker that dies mid-batch re-reads its pending entries when
it (or its successor with the same name) starts. The lag is the age of the oldest
event not yet applied (delivered and unacknowledged, or not yet delivered), in the
service's clock: "now" minus that event's served time. So a stopped worker shows up in
simulated time as it would live, and a healthy one, whose oldest unapplied event was
published a moment ago, shows none however far the (simulated) clock jumps between
payments.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from fraudlab.redis_client import redis_client
from fraudlab.settings import Settings
from serving.velocity_state import KINDS, PaymentEvent, PaymentStates, micros, text_of

log = logging.getLogger(__name__)
GROUP = "payment-state"
_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: consecutive ids spread over the shards
_MASK64 = (1 << 64) - 1


def shard_of(entity_id: int, shards: int) -> int:
    return (((entity_id * _MIX) & _MASK64) >> 32) % shards


def stream_key(prefix: str, kind: str, shard: int) -> str:
    return f"{prefix}:{kind}:{shard}"


def all_streams(settings: Settings) -> list[str]:
    prefix, shards = settings.stream.prefix, settings.stream.shards
    return [stream_key(prefix, kind, s) for kind in KINDS for s in range(shards)]


class StreamPublisher:
    """Appends scored payments to their customer's and terminal's streams, off the
    request path: `publish` only queues; a thread sends what has queued as one pipeline
    of XADDs. While Redis is away the thread retries with backoff and the queue holds up
    to `backlog` events; past that, new events are dropped and counted (their payments
    are missing from the state, which the freshness metrics show)."""

    def __init__(self, settings: Settings, timeout_seconds: float, backlog: int = 50_000) -> None:
        self.client = redis_client(settings.stream_redis_connection, timeout_seconds)
        self.prefix, self.shards = settings.stream.prefix, settings.stream.shards
        self.max_length = settings.stream.max_length
        self.batch = settings.stream.batch_events
        self.linger = settings.stream.linger_ms / 1e3
        self._queue: queue.Queue[PaymentEvent] = queue.Queue(maxsize=backlog)
        self.dropped = 0
        self.failures = 0
        self._in_hand = 0  # taken from the queue, not yet sent
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._send_forever, name="stream", daemon=True)
        self._thread.start()

    def publish(self, event: PaymentEvent) -> bool:
        """Queue one event; False when the backlog is full and it was dropped."""
        try:
            self._queue.put_nowait(event)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def backlog(self) -> int:
        """Events queued or being sent: not yet in Redis."""
        return self._queue.qsize() + self._in_hand

    def _send(self, events: list[PaymentEvent]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            fields = event.to_fields()
            for kind in KINDS:
                shard = shard_of(event.entity(kind), self.shards)
                stream = stream_key(self.prefix, kind, shard)
                pipe.xadd(stream, fields, maxlen=self.max_length, approximate=True)  # type: ignore[arg-type]
        pipe.execute()

    def _send_forever(self) -> None:
        backoff = 0.0
        while True:
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if self.linger and self._queue.qsize() < self.batch:
                time.sleep(self.linger)  # let a batch gather: one pipeline, not many
            events = [first]
            while len(events) < self.batch:
                try:
                    events.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._in_hand = len(events)
            while True:
                try:
                    self._send(events)
                    self._in_hand = 0
                    backoff = 0.0
                    break
                except redis.RedisError as exc:
                    self.failures += 1
                    backoff = min(2.0, max(0.1, backoff * 2))
                    log.warning("stream publish failed (%r); retrying in %.1f s", exc, backoff)
                    if self._closing.wait(backoff):
                        log.warning("closing with %d events not published", len(events))
                        return

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Send what is queued (for up to the timeout), then stop."""
        self._closing.set()
        self._thread.join(timeout=timeout_seconds)
        self.client.close()


@dataclass
class WorkerProgress:
    events: int = 0
    rows_written: int = 0
    batches: int = 0
    # Wall clock at write minus each event's served time, in ms, for the latest events:
    # the event-to-online-store lag when the service runs on the wall clock (live).
    lags_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))


class StreamWorker:
    """Applies its shards' events to the online store until stopped."""

    def __init__(
        self,
        settings: Settings,
        states: PaymentStates,
        index: int = 0,
        count: int = 1,
        block_ms: int = 200,
    ) -> None:
        if not 0 <= index < count:
            raise ValueError(f"worker index {index} is not in 0..{count - 1}")
        self.client = redis_client(settings.stream_redis_connection, timeout_seconds=10)
        self.states = states
        self.name = f"worker-{index}-of-{count}"
        self.batch = settings.stream.batch_events
        self.block_ms = block_ms
        self.linger = settings.stream.linger_ms / 1e3
        shards = [s for s in range(settings.stream.shards) if s % count == index]
        self.streams = {
            stream_key(settings.stream.prefix, kind, s): kind for kind in KINDS for s in shards
        }
        self.progress = WorkerProgress()
        self._stop = threading.Event()
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):  # the group exists: carry on from it
                    raise

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_batch: Callable[[WorkerProgress], None] | None = None) -> WorkerProgress:
        # Own pending entries first (delivered to this name, never acknowledged: a
        # predecessor died mid-batch), then new ones.
        while self._drain(pending=True):
            pass
        while not self._stop.is_set():
            if self._drain(pending=False) and on_batch is not None:
                on_batch(self.progress)
        return self.progress

    def _drain(self, pending: bool) -> bool:
        """One read across the worker's streams; True when it applied anything."""
        start = "0" if pending else ">"
        try:
            replies = self.client.xreadgroup(
                GROUP,
                self.name,
                dict.fromkeys(self.streams, start),
                count=self.batch,
                block=None if pending else self.block_ms,
            )
        except redis.ConnectionError as exc:
            log.warning("stream read failed (%r); retrying in 1 s", exc)
            time.sleep(1.0)
            return False
        read = {text_of(stream): entries for stream, entries in cast(list[Any], replies) or []}
        read = {stream: entries for stream, entries in read.items() if entries}
        if read:
            self._apply(read)
        events = sum(len(entries) for entries in read.values())
        if not pending and 0 < events < self.batch and self.linger:
            self._stop.wait(self.linger)  # a short read: let the next batch gather
        return bool(read)

    def _apply(self, read: dict[str, list[tuple[bytes, dict[bytes, bytes]]]]) -> None:
        """Everything one read brought, one write per kind: the worker owns every shard
        it read, so no other writer holds any of these entities (one merge for all of
        them is as safe as one per stream, at a fraction of the round trips). Then one
        acknowledgement per stream, pipelined, after the write."""
        by_kind: dict[str, list[PaymentEvent]] = {}
        for stream, entries in read.items():
            by_kind.setdefault(self.streams[stream], []).extend(
                PaymentEvent.from_fields(fields) for _, fields in entries
            )
        written = sum(self.states.apply(events, kinds=(kind,)) for kind, events in by_kind.items())
        pipe = self.client.pipeline(transaction=False)
        for stream, entries in read.items():
            pipe.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))
        pipe.execute()
        now_us = micros(datetime.now(UTC))
        for events in by_kind.values():
            self.progress.lags_ms.extend((now_us - e.served_us) / 1e3 for e in events)
            self.progress.events += len(events)
        self.progress.rows_written += written
        self.progress.batches += 1


@dataclass(frozen=True)
class StreamLag:
    """How far the workers are behind, over every stream."""

    seconds: float  # the oldest unapplied event's age in served time (0: caught up)
    pending_events: int  # published, not yet acknowledged by a worker


def stream_lag(client: redis.Redis, streams: list[str], now_us: int | None = None) -> StreamLag:
    """The oldest unapplied event's age over the streams (`now_us`: the service clock;
    default the newest published event's served time), and the events not yet
    acknowledged. Five pipelined round trips, whatever the number of streams: the
    reading is not atomic, so its last one checks that each oldest entry found is still
    unapplied (`_not_applied_since`)."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xrevrange(stream, count=1)
    newest = dict(zip(streams, pipe.execute(), strict=True))
    live = [stream for stream in streams if newest[stream]]
    if not live:
        return StreamLag(0.0, 0)
    pipe = client.pipeline(transaction=False)
    for stream in live:
        pipe.xinfo_groups(stream)
        pipe.xlen(stream)
    replies = pipe.execute()
    pending = 0
    oldest_id: dict[str, None] = {}  # streams whose oldest unapplied entry is unacked
    oldest_after: dict[str, str] = {}  # streams -> XRANGE start of their first undelivered
    for stream, groups, length in zip(live, replies[::2], replies[1::2], strict=True):
        ours = next((g for g in groups if text_of(g.get("name")) == GROUP), None)
        if ours is None:  # no worker has ever read this stream: all of it waits
            pending += int(length)
            oldest_after[stream] = "-"
            continue
        unacked, undelivered = int(ours.get("pending") or 0), int(ours.get("lag") or 0)
        pending += unacked + undelivered
        if unacked:
            oldest_id[stream] = None  # the oldest pending entry, from XPENDING
        elif undelivered:
            oldest_after[stream] = "(" + text_of(ours["last-delivered-id"])
    pipe = client.pipeline(transaction=False)
    for stream in oldest_id:
        pipe.xpending(stream, GROUP)
    for stream, after in oldest_after.items():
        pipe.xrange(stream, min=after, count=1)
    replies = pipe.execute()
    first_entries = {
        s: r for s, r in zip(oldest_after, replies[len(oldest_id) :], strict=True) if r
    }
    pipe = client.pipeline(transaction=False)
    acked_since = []  # pending a moment ago, acknowledged by now: caught up
    for stream, summary in zip(oldest_id, replies[: len(oldest_id)], strict=True):
        if summary.get("min") is None:
            acked_since.append(stream)
            continue
        entry = text_of(summary["min"])
        pipe.xrange(stream, min=entry, max=entry, count=1)
    still = [s for s in oldest_id if s not in acked_since]
    first_entries |= {s: r for s, r in zip(still, pipe.execute(), strict=True) if r}
    first_entries = _not_applied_since(client, first_entries)
    if now_us is None:
        now_us = max(PaymentEvent.from_fields(newest[s][0][1]).served_us for s in live)
    ages = [now_us - PaymentEvent.from_fields(e[0][1]).served_us for e in first_entries.values()]
    return StreamLag(max(0.0, max(ages, default=0) / 1e6), pending)


def _not_applied_since(
    client: redis.Redis, first_entries: dict[str, list[Any]]
) -> dict[str, list[Any]]:
    """The entries that are still unapplied, by one atomic look at their groups.

    The worker goes on between the reading's round trips: an entry seen pending, or
    seen after the group's last delivery, may be acknowledged before its time is read.
    Counted as behind, it would age with the service clock, which a simulated day moves
    by minutes between two payments (a false freshness alarm). An entry still counts if
    it is not yet delivered, or if an entry at or before it is still pending; otherwise
    it was applied meanwhile, and whatever is left is younger: the next reading sees it."""
    if not first_entries:
        return first_entries
    pipe = client.pipeline(transaction=True)  # MULTI: one state of every group
    for stream in first_entries:
        pipe.xinfo_groups(stream)
        pipe.xpending(stream, GROUP)
    replies = pipe.execute(raise_on_error=False)  # NOGROUP: no worker has read it yet
    kept = {}
    for (stream, entry), groups, summary in zip(
        first_entries.items(), replies[::2], replies[1::2], strict=True
    ):
        listed = [] if isinstance(groups, Exception) else groups
        ours = next((g for g in listed if text_of(g.get("name")) == GROUP), None)
        entry_id = _id_key(entry[0][0])
        undelivered = ours is None or entry_id > _id_key(ours["last-delivered-id"])
        oldest_pending = None if isinstance(summary, Exception) else summary.get("min")
        held = oldest_pending is not None and _id_key(oldest_pending) <= entry_id
        if undelivered or held:
            kept[stream] = entry
    return kept


def _id_key(entry_id: Any) -> tuple[int, int]:
    """A stream entry id ("<ms>-<seq>") as a key that sorts as Redis orders them."""
    ms, seq = text_of(entry_id).split("-")
    return int(ms), int(seq)
