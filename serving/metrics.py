"""Prometheus metrics of the scoring service, in a registry of the app's own.

One worker: every metric lives in this process and the live gauges read their value at
scrape time (`set_function`). Several uvicorn workers: a scrape reaches one worker only,
so prometheus_client's multiprocess mode is on: serving/process.py empties
`<home>/prometheus_multiproc`, writes WORKERS_MARKER there and points
PROMETHEUS_MULTIPROC_DIR at it before the workers start; each worker writes its samples
to memory-mapped files there and /metrics on any worker reads all of them. Counters and
histograms add up across workers; each gauge says how (`multiprocess_mode`).

The marker, not the variable alone, switches the mode on: Feast sets
PROMETHEUS_MULTIPROC_DIR to a temporary folder of its own in any process that imports
it, and a child inherits that.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from serving.process import MULTIPROC_ENV, WORKERS_MARKER

log = logging.getLogger(__name__)
# Sub-millisecond resolution where the request path lives, up to a second for outliers.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
# Feature age: seconds for the payment state, hours to days for the midnight snapshots.
AGE_BUCKETS = (1, 10, 60, 300, 900, 3_600, 6 * 3_600, 86_400, 1.5 * 86_400, 2 * 86_400, 3 * 86_400)
# Multiprocess mode: how often each worker copies its live values into its files. A
# scrape also copies the answering worker's own values first, so only the others lag.
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class _Sampled:
    gauge: Gauge
    read: Callable[[], float]


def _one_count(counts: Callable[[], dict[str, int]], name: str) -> Callable[[], float]:
    return lambda: float(counts()[name])


def shared_metrics_dir() -> str | None:
    """The folder this server's workers share their samples in, or None (one worker)."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder or not (Path(folder) / WORKERS_MARKER).exists():
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client was imported before the variable was set: samples stay in
        # memory, so aggregating would read nothing of ours. Report this worker alone.
        log.warning("%s set after prometheus_client was imported: per-worker metrics", folder)
        return None
    return folder


class _OwnMetrics(Collector):
    """Every worker's samples of fraudlab's metrics only: other libraries in the process
    (Feast) write their own to the same folder, and the one-worker output has none."""

    def __init__(self, folder: str) -> None:
        self._all = MultiProcessCollector(None, path=folder)

    def collect(self) -> Iterator[Metric]:
        return (m for m in self._all.collect() if m.name.startswith("fraudlab_"))


class ServingMetrics:
    def __init__(self) -> None:
        self.multiprocess_dir = shared_metrics_dir()
        self.registry = CollectorRegistry()
        if self.multiprocess_dir:
            # The metrics below register in a registry of their own, never rendered: this
            # one renders every worker's files, this worker's samples included.
            self.registry.register(_OwnMetrics(self.multiprocess_dir))
            r: CollectorRegistry | None = CollectorRegistry()
        else:
            r = self.registry
        self.stage_seconds = Histogram(
            "fraudlab_stage_seconds",
            "Latency per request stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "fraudlab_requests",
            "Scored requests, by route and the model's own decision (what the caller got "
            "differs while the circuit breaker is tripped: fraudlab_breaker_overrides)",
            ["route", "decision"],
            registry=r,
        )
        self.breaker_overrides = Counter(
            "fraudlab_breaker_overrides",
            "Declines served as reviews because the circuit breaker was tripped",
            ["route"],
            registry=r,
        )
        self.explored = Counter(
            "fraudlab_explored",
            "Payments the model would have stopped, approved at random to learn their "
            "outcome (serving.exploration_share), by route and the model's decision",
            ["route", "decision"],
            registry=r,
        )
        self.breaker_tripped = Gauge(
            "fraudlab_breaker_tripped",
            "1 while the circuit breaker is tripped (review instead of decline), else 0",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.refused_payments = Counter(
            "fraudlab_refused_payments",
            "Payments refused after validation (a timestamp outside the service clock's skew)",
            ["field"],
            registry=r,
        )
        self.fallbacks = Counter(
            "fraudlab_feature_fallbacks",
            "Requests scored with missing or stale features",
            ["reason"],
            registry=r,
        )
        # Queue depths: what the live workers hold now ('livesum'). Drops and errors are
        # running counts per worker: 'sum' keeps a stopped worker's share in the total.
        self.shadow_depth = Gauge(
            "fraudlab_shadow_queue_depth",
            "Shadow jobs waiting",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shadow_dropped = Gauge(
            "fraudlab_shadow_dropped",
            "Shadow jobs dropped because the queue was full",
            registry=r,
            multiprocess_mode="sum",
        )
        self.shadow_errors = Gauge(
            "fraudlab_shadow_errors", "Shadow scoring failures", registry=r, multiprocess_mode="sum"
        )
        # Workers move to a new version one poll apart: the highest version a live worker
        # holds is the one the fleet is moving to (the line per worker is in the log).
        self.model_version = Gauge(
            "fraudlab_model_version",
            "Registry version loaded per alias (0 = none)",
            ["alias"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reload_failures = Counter(
            "fraudlab_model_reload_failures",
            "Alias versions refused or registry errors",
            ["alias"],
            registry=r,
        )
        self.log_pending = Gauge(
            "fraudlab_prediction_log_pending",
            "Log records not yet written",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_rows = Gauge(
            "fraudlab_prediction_log_rows",
            "Log records by fate: written, retried (attempts), spilled, in_spill (not yet "
            "drained), rejected, dropped",
            ["outcome"],
            registry=r,
            multiprocess_mode="sum",
        )
        self.feature_age = Histogram(
            "fraudlab_feature_age_seconds",
            "Age at the payment of each view's value served: a snapshot's since its "
            "midnight, a payment state's since its newest payment",
            ["view"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.payment_updates = Counter(
            "fraudlab_payment_updates",
            "Scored payments sent to the payment-state views, by outcome: applied or "
            "unchanged (a retry) inline; queued for the stream, or dropped (its backlog "
            "full); failed",
            ["outcome"],
            registry=r,
        )
        self.stream_lag = Gauge(
            "fraudlab_stream_lag_seconds",
            "Age of the oldest payment event not yet applied, in the service clock "
            "(0 inline; NaN: the stream is unreachable)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stream_pending = Gauge(
            "fraudlab_stream_pending_events",
            "Payment events published and not yet applied",
            registry=r,
            multiprocess_mode="livemax",
        )
        self._sampled: list[_Sampled] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def bind_gauges(
        self,
        shadow_depth: Callable[[], float],
        shadow_dropped: Callable[[], float],
        shadow_errors: Callable[[], float],
        log_pending: Callable[[], float],
        log_counts: Callable[[], dict[str, int]],
        stream_lag: Callable[[], tuple[float, float]] = lambda: (0.0, 0.0),
        breaker_tripped: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """Gauges read live values at scrape time instead of being pushed on every request.

        Multiprocess mode has no `set_function` (a scrape cannot call into another
        worker): a sampler thread copies the values into this worker's files instead.
        """
        bound = [
            (self.shadow_depth, shadow_depth),
            (self.shadow_dropped, shadow_dropped),
            (self.shadow_errors, shadow_errors),
            (self.log_pending, log_pending),
        ]
        for outcome in ("written", "retried", "spilled", "in_spill", "rejected", "dropped"):
            bound.append((self.log_rows.labels(outcome), _one_count(log_counts, outcome)))
        bound.append((self.stream_lag, lambda: stream_lag()[0]))
        bound.append((self.stream_pending, lambda: stream_lag()[1]))
        bound.append((self.breaker_tripped, breaker_tripped))
        if not self.multiprocess_dir:
            for gauge, read in bound:
                gauge.set_function(read)
            return
        self._sampled = [_Sampled(gauge, read) for gauge, read in bound]
        self._sample()
        self._sampler = threading.Thread(target=self._sample_forever, name="metrics", daemon=True)
        self._sampler.start()

    def render(self) -> bytes:
        """The text exposition: this worker's metrics, or every worker's in multiprocess mode."""
        self._sample()
        return generate_latest(self.registry)

    def close(self) -> None:
        """Last sample, then retire this worker's live gauges (its 'sum' shares stay)."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        if self.multiprocess_dir:
            self._sample()
            mark_process_dead(os.getpid(), self.multiprocess_dir)

    def _sample(self) -> None:
        for sampled in self._sampled:
            sampled.gauge.set(sampled.read())

    def _sample_forever(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()
