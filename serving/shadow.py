"""Shadow scoring: the challenger scores every payment, off the request path.

The request path only does `put_nowait` on a bounded queue; a worker thread scores
and logs. When the queue is full the job is dropped and counted, so a slow shadow
model costs shadow coverage, never caller latency. The challenger's row is assembled
here too, from the champion's lookup: exceptions from building it or from the shadow
model (a raise, or a score that is not a probability, such as NaN) are caught and
counted; they never reach a response.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from serving.features import FeatureVector
from serving.prediction_log import ShadowRecord
from serving.scoring import ServingModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    model: ServingModel
    vector: FeatureVector  # the champion's lookup; the row is built off the request path


class ShadowScorer:
    def __init__(self, capacity: int, on_result: Callable[[ShadowRecord], None]) -> None:
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=capacity)
        self.on_result = on_result
        self.dropped = 0
        self.errors = 0
        self.scored = 0
        # Set while no request is being scored. A shadow model can hold the GIL in
        # native code that the switch interval cannot interrupt; started back to back,
        # such calls gave a request 1 ms slices between them, pushed its feature lookup
        # past the online budget and so changed its answer (a fallback). Now no job
        # starts while a request is scored: a request waits for at most the one call
        # already running.
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(self, job: ShadowJob) -> bool:
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    @contextlib.contextmanager
    def held_off(self) -> Iterator[None]:
        """Around the scoring of one request (on the event loop's one thread): no
        shadow job starts until it is done."""
        self._idle.clear()
        try:
            yield
        finally:
            self._idle.set()

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        # A stuck shadow model must not hold up shutdown; the thread is a daemon.
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1)
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            self._idle.wait()
            started = time.perf_counter()
            score: float | None = None
            decision = error = None
            try:
                score = job.model.probability(job.vector.row(job.model.features))
                decision = job.model.decide(score)
                self.scored += 1
            except Exception as exc:  # a failing shadow model is recorded, never raised
                self.errors += 1
                error = f"{type(exc).__name__}: {exc}"[:500]
            record = ShadowRecord(
                job.request_id,
                job.model.version,
                score,
                decision,
                error,
                (time.perf_counter() - started) * 1e3,
            )
            try:
                self.on_result(record)
            except Exception:
                log.exception("shadow result could not be logged")
