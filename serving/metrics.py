"""Prometheus metrics of the scoring service, in a registry of the app's own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond resolution where the request path lives, up to a second for outliers.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "fraudlab_stage_seconds",
            "Latency per request stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "fraudlab_requests", "Scored requests", ["route", "decision"], registry=r
        )
        self.fallbacks = Counter(
            "fraudlab_feature_fallbacks",
            "Requests scored with missing or stale features",
            ["reason"],
            registry=r,
        )
        self.shadow_depth = Gauge("fraudlab_shadow_queue_depth", "Shadow jobs waiting", registry=r)
        self.shadow_dropped = Gauge(
            "fraudlab_shadow_dropped", "Shadow jobs dropped because the queue was full", registry=r
        )
        self.shadow_errors = Gauge("fraudlab_shadow_errors", "Shadow scoring failures", registry=r)
        self.model_version = Gauge(
            "fraudlab_model_version",
            "Registry version loaded per alias (0 = none)",
            ["alias"],
            registry=r,
        )
        self.reload_failures = Counter(
            "fraudlab_model_reload_failures",
            "Alias versions refused or registry errors",
            ["alias"],
            registry=r,
        )
        self.log_pending = Gauge(
            "fraudlab_prediction_log_pending", "Log records not yet written", registry=r
        )

    def bind_gauges(
        self,
        shadow_depth: Callable[[], float],
        shadow_dropped: Callable[[], float],
        shadow_errors: Callable[[], float],
        log_pending: Callable[[], float],
    ) -> None:
        """Gauges read live values at scrape time instead of being pushed on every request."""
        self.shadow_depth.set_function(shadow_depth)
        self.shadow_dropped.set_function(shadow_dropped)
        self.shadow_errors.set_function(shadow_errors)
        self.log_pending.set_function(log_pending)
