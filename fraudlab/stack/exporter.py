"""The monitor's latest findings as Prometheus metrics.

The monitor records every run in the decision log (a JSON-lines file); Prometheus
scrapes HTTP. This server reads the log at each scrape, so the dashboard can show drift
and skew status next to the API's metrics without the monitor running a server itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fraudlab.settings import Settings
from monitoring.decisions import DecisionLog

# Ordered by severity, so a dashboard's thresholds colour 0 green, 1 amber, 2 red.
STATUS_VALUE = {"ok": 0, "insufficient_data": 1, "alert": 2}


class MonitorFindings:
    """A Prometheus collector over the decision log: the latest run's status and
    numbers per job, how many runs there were, and which actions the policy took."""

    def __init__(self, decision_log: Path) -> None:
        self.path = decision_log

    def collect(self) -> Iterator[Metric]:
        runs = DecisionLog(self.path).runs()
        status = GaugeMetricFamily(
            "fraudlab_monitor_status",
            "Latest finding per monitoring job: 0 ok, 1 insufficient data, 2 alert",
            labels=["job"],
        )
        values = GaugeMetricFamily(
            "fraudlab_monitor_value",
            "Latest numbers per monitoring job, the ones the policy's thresholds read",
            labels=["job", "metric"],
        )
        for finding in runs[-1]["findings"] if runs else []:
            status.add_metric([finding["job"]], STATUS_VALUE.get(finding["status"], 1))
            for name, value in finding.get("metrics", {}).items():
                if isinstance(value, int | float):
                    values.add_metric([finding["job"], name], float(value))
        actions = CounterMetricFamily(
            "fraudlab_monitor_actions", "Actions the policy took", labels=["action"]
        )
        taken = Counter(d["action"] for run in runs for d in run["decisions"] if d["taken"])
        for action, count in sorted(taken.items()):
            actions.add_metric([action], count)
        yield status
        yield values
        yield actions
        yield CounterMetricFamily("fraudlab_monitor_runs", "Monitor runs recorded", len(runs))
        # Wall-clock time of the last write: a stalled monitor shows as a growing age.
        changed = self.path.stat().st_mtime if self.path.exists() else 0.0
        yield GaugeMetricFamily(
            "fraudlab_monitor_last_run_timestamp_seconds",
            "When the decision log last changed (0: no run yet)",
            changed,
        )


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve /metrics until the process is signalled."""
    registry = CollectorRegistry()
    registry.register(MonitorFindings(settings.decision_log_path))
    start_http_server(port, addr=host, registry=registry)
    threading.Event().wait()  # the server thread serves; SIGTERM ends the process
