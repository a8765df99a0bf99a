"""How each scored payment reaches its customer's and terminal's payment state: written
by a process the API starts (`inline`, the embedded default), or appended to a Redis
stream that `fraudlab stream worker` applies (`stream`, the production default).

Either way the update can never fail or change an answer: a failure is counted
(`fraudlab_payment_updates{outcome="failed"}`) and logged, and the payment is scored
as it would have been. What it costs is the state's freshness, which /metrics shows.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol

from features.store import open_store
from features.velocity import PaymentState
from fraudlab.settings import Settings
from serving.payment_stream import StreamLag, StreamPublisher, all_streams, stream_lag
from serving.velocity_state import KINDS, PaymentEvent, PaymentStates, state_of_events

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
    """Merged into the online store by a writer process this API process starts, one
    transaction per batch (every `FLUSH_SECONDS`, or sooner when `BATCH_EVENTS` wait),
    so a request pays for none of the writes. Until its batch is written, a payment sits
    in this process's overlay, which every lookup merges into the state it reads: the
    next request already sees it. The merge is idempotent, so a state read just after a
    batch landed, with the overlay not yet cleared, counts nothing twice.

    Why a process and not a thread: a writer thread shared the interpreter lock with the
    request path, and the two slowed each other: saturated throughput fell to x0.70 to
    x0.79 of the update path off, against x0.85 to x1.03 with this process
    (benchmarks/serving.py --update-path-only; docs/serving-plane.md). A writer that
    dies is started again and its batch sent again: the merge makes that safe.

    With several API workers each overlay holds its own worker's payments; another
    worker's show once its batch is written (within `FLUSH_SECONDS`)."""

    mode = "inline"

    def __init__(self, settings: Settings, backlog: int = 50_000) -> None:
        self.backlog = backlog
        self._lock = threading.Lock()
        self._queued: list[PaymentEvent] = []
        self._overlay: dict[tuple[str, int], list[PaymentEvent]] = {}
        self._wake = threading.Event()
        self._closing = threading.Event()
        self.written = 0
        self.failures = 0
        self.dropped = 0
        self.writer = StateWriter(settings)
        self.writer.start()  # now, so its imports overlap the API's own start-up
        self._thread = threading.Thread(target=self._hand_over_forever, name="state", daemon=True)
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

    def _hand_over_forever(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            closing = self._closing.is_set()
            with self._lock:
                batch, self._queued = self._queued, []
            if batch:
                self._write(batch)
            if closing:
                self.writer.close()
                return

    def _write(self, batch: list[PaymentEvent]) -> None:
        try:
            self.written += self.writer.apply(batch)
        except Exception as exc:  # the store refused, or the writer died: keep them queued
            self.failures += 1
            log.warning("payment state write failed (%s); %d events kept", exc, len(batch))
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
        """Write what is queued, then stop the writer."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=10)


class StateWriter:
    """The writer process of `InlineUpdates`: it applies each batch sent over a pipe to
    the payment-state views (PaymentStates.apply) and answers with the rows written,
    or with the error. Started with the API, and again after it died."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: BaseProcess | None = None
        self._pipe: Connection | None = None

    def apply(self, batch: list[PaymentEvent]) -> int:
        if self.process is None or not self.process.is_alive():
            self.start()
        assert self._pipe is not None
        try:
            self._pipe.send(batch)
            ok, answer = self._pipe.recv()
        except (EOFError, OSError) as exc:  # it died mid-batch: the batch is sent again
            self._stop()
            raise RuntimeError(f"the payment state writer exited ({exc!r})") from exc
        if not ok:
            raise RuntimeError(answer)
        return int(answer)

    def start(self) -> None:
        self._stop()
        context = multiprocessing.get_context("spawn")  # no copy of the server's threads
        self._pipe, theirs = context.Pipe()
        # A daemon, so an exit that skipped close() ends it instead of waiting on it;
        # unless this process is one itself (it may not start another). Either way it
        # ends on the sentinel, or when the pipe closes because this process is gone.
        self.process = context.Process(
            target=_apply_forever,
            args=(self.settings, theirs),
            name="payment-state-writer",
            daemon=not multiprocessing.current_process().daemon,
        )
        self.process.start()
        theirs.close()

    def _stop(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self.process is not None:
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
            self.process = None

    def close(self) -> None:
        if self._pipe is not None and self.process is not None and self.process.is_alive():
            with contextlib.suppress(OSError):  # it is exiting already
                self._pipe.send(None)
        self._stop()


def _apply_forever(settings: Settings, pipe: Connection) -> None:
    """The writer process: one batch in, (ok, rows written or the error) out."""
    states = PaymentStates(open_store(settings))  # a store of its own: its own connection
    while True:
        try:
            batch = pipe.recv()
        except (EOFError, OSError):  # the API process is gone
            return
        if batch is None:
            return
        try:
            pipe.send((True, states.apply(batch)))
        except Exception as exc:  # reported to the API process, which keeps the batch
            pipe.send((False, repr(exc)))


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
    return InlineUpdates(settings)
