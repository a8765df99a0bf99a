"""How each scored payment reaches its customer's and terminal's payment state: written
by a thread of the API itself (`inline`, the embedded default), or appended to a Redis
stream that `fraudlab stream worker` applies (`stream`, the production default).

Either way the update can never fail or change an answer: a failure is counted
(`fraudlab_payment_updates{outcome="failed"}`) and logged, and the payment is scored
as it would have been. What it costs is the state's freshness, which /metrics shows.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from features.store import open_store
from features.velocity import PaymentState
from fraudlab.settings import Settings
from serving.payment_stream import StreamLag, StreamPublisher, all_streams, stream_lag
from serving.velocity_state import KINDS, PaymentEvent, PaymentStates, state_of_events

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.02  # inline: how long a payment may wait in the overlay before its write
BATCH_EVENTS = 200  # ... or fewer, when this many are waiting


class PaymentUpdates(Protocol):
    mode: str

    def publish(self, event: PaymentEvent) -> str:
        """Deliver one event; returns the outcome to count."""
        ...

    def pending(self, kind: str, entity_id: int) -> PaymentState | None:
        """Payments this process sent that a read of the store may not show yet."""
        ...

    def lag(self, now_us: int | None = None) -> StreamLag: ...

    def close(self) -> None: ...


class InlineUpdates:
    """Merged into the online store by a writer thread of this process, one transaction
    per batch (every `FLUSH_SECONDS`, or sooner when `BATCH_EVENTS` wait), so a request
    pays for none of the writes. Until its batch is written, a payment sits in this
    process's overlay, which every lookup merges into the state it reads: the next
    request already sees it. The merge is idempotent, so a state read just after a batch
    landed, with the overlay not yet cleared, counts nothing twice.

    With several API workers each overlay holds its own worker's payments; another
    worker's show once its batch is written (within `FLUSH_SECONDS`)."""

    mode = "inline"

    def __init__(self, store: FeatureStore, backlog: int = 50_000) -> None:
        self.states = PaymentStates(store)  # a store of its own: its own SQLite connection
        self.backlog = backlog
        self._lock = threading.Lock()
        self._queued: list[PaymentEvent] = []
        self._overlay: dict[tuple[str, int], list[PaymentEvent]] = {}
        self._wake = threading.Event()
        self._closing = threading.Event()
        self.written = 0
        self.failures = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._write_forever, name="state", daemon=True)
        self._thread.start()

    def publish(self, event: PaymentEvent) -> str:
        with self._lock:
            if len(self._queued) >= self.backlog:
                self.dropped += 1
                return "dropped"
            self._queued.append(event)
            for kind in KINDS:
                self._overlay.setdefault((kind, event.entity(kind)), []).append(event)
            if len(self._queued) >= BATCH_EVENTS:
                self._wake.set()
        return "queued"

    def pending(self, kind: str, entity_id: int) -> PaymentState | None:
        """This process's payments of the entity not yet written, as a state to merge."""
        with self._lock:
            events = list(self._overlay.get((kind, entity_id), ()))
        return state_of_events(events) if events else None

    def _write_forever(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            closing = self._closing.is_set()
            with self._lock:
                batch, self._queued = self._queued, []
            if batch:
                self._write(batch)
            if closing:
                return

    def _write(self, batch: list[PaymentEvent]) -> None:
        try:
            self.written += self.states.apply(batch)
        except Exception as exc:  # the store refused: keep them queued, try again
            self.failures += 1
            log.warning("payment state write failed (%r); %d events kept", exc, len(batch))
            with self._lock:
                self._queued = batch + self._queued
            time.sleep(FLUSH_SECONDS)
            return
        written = {id(e) for e in batch}
        touched = {(kind, e.entity(kind)) for kind in KINDS for e in batch}
        with self._lock:
            for key in touched:
                left = [e for e in self._overlay.get(key, ()) if id(e) not in written]
                if left:
                    self._overlay[key] = left
                else:
                    self._overlay.pop(key, None)

    def lag(self, now_us: int | None = None) -> StreamLag:
        with self._lock:
            waiting = len(self._queued)
        return StreamLag(0.0, waiting)  # read through the overlay: never behind

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=10)


class NoUpdates:
    """The state is left as materialized (benchmarks measure the update path against it)."""

    mode = "off"

    def publish(self, event: PaymentEvent) -> str:
        return "off"

    def pending(self, kind: str, entity_id: int) -> PaymentState | None:
        return None

    def lag(self, now_us: int | None = None) -> StreamLag:
        return StreamLag(0.0, 0)

    def close(self) -> None:
        pass


class StreamUpdates:
    """Queue for the payment stream; the worker applies it a moment later."""

    mode = "stream"

    def __init__(self, settings: Settings, timeout_seconds: float) -> None:
        self.publisher = StreamPublisher(settings, timeout_seconds)
        self.streams = all_streams(settings)

    def publish(self, event: PaymentEvent) -> str:
        return "queued" if self.publisher.publish(event) else "dropped"

    def pending(self, kind: str, entity_id: int) -> PaymentState | None:
        return None  # the worker applies them: the lag says how far behind it is

    def lag(self, now_us: int | None = None) -> StreamLag:
        """Redis's view, plus what this process has not sent yet."""
        behind = stream_lag(self.publisher.client, self.streams, now_us)
        return StreamLag(behind.seconds, behind.pending_events + self.publisher.backlog())

    def close(self) -> None:
        self.publisher.close()


def payment_updates(settings: Settings) -> PaymentUpdates:
    if settings.payment_updates == "stream":
        return StreamUpdates(settings, settings.serving.online_budget_ms / 1e3)
    if settings.payment_updates == "off":
        return NoUpdates()
    return InlineUpdates(open_store(settings))
