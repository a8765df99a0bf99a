"""The monitor's latest findings as Prometheus metrics.

The monitor records every run in the decision log (a JSON-lines file); Prometheus
scrapes HTTP. This server reads the log at each scrape, so the dashboard and the alert
rules (deploy/prometheus/alerts.yml) see each job's status next to the API's metrics
without the monitor running a server itself.

A run holds only the jobs it ran: the minute jobs' runs every few minutes, the daily
run the others too. Each job's numbers are therefore its latest finding in any run.
A scrape reads only the lines appended since the one before (the log grows by hundreds
of runs a day), and remembers what it needs: each job's latest finding and the counts.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fraudlab.settings import Settings

# Ordered by severity, so a dashboard's thresholds colour 0 green, 1 amber, 2 red.
STATUS_VALUE = {"ok": 0, "insufficient_data": 1, "alert": 2}
log = logging.getLogger(__name__)


@dataclass
class _Read:
    """What the lines read so far add up to, and where the next scrape starts."""

    device_inode: tuple[int, int] = (0, 0)  # another file in the same place: start over
    offset: int = 0
    runs: int = 0
    taken: Counter[str] = field(default_factory=Counter)  # action -> times taken
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # job -> its finding

    def add(self, run: dict[str, Any]) -> None:
        self.runs += 1
        self.taken.update(d["action"] for d in run.get("decisions", ()) if d.get("taken"))
        for finding in run.get("findings", ()):
            self.latest[finding["job"]] = finding


class MonitorFindings:
    """A Prometheus collector over the decision log: each job's latest status and
    numbers, how many runs there were, and which actions the policy took."""

    def __init__(self, decision_log: Path) -> None:
        self.path = decision_log
        self._read = _Read()
        self._lock = threading.Lock()  # the HTTP server answers scrapes on threads

    def _catch_up(self) -> _Read:
        """Read the lines appended since the last scrape; a line still being written
        waits for the next one, a torn line (a crash mid-write) is skipped."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._read = _Read()
            return self._read
        same_file = self._read.device_inode == (stat.st_dev, stat.st_ino)
        if not same_file or stat.st_size < self._read.offset:
            self._read = _Read(device_inode=(stat.st_dev, stat.st_ino))
        read = self._read
        if stat.st_size == read.offset:
            return read
        with self.path.open("rb") as handle:
            handle.seek(read.offset)
            appended = handle.read(stat.st_size - read.offset)
        whole = appended[: appended.rfind(b"\n") + 1]
        read.offset += len(whole)
        for line in whole.decode(errors="replace").splitlines():
            try:
                run = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                log.warning("%s: a line that is not whole JSON (a torn write?); skipped", self.path)
                continue
            if isinstance(run, dict):
                read.add(run)
        return read

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            read = self._catch_up()
            latest = list(read.latest.values())
            taken, runs = dict(read.taken), read.runs
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
        for finding in latest:
            status.add_metric([finding["job"]], STATUS_VALUE.get(finding["status"], 1))
            for name, value in finding.get("metrics", {}).items():
                if isinstance(value, int | float):
                    values.add_metric([finding["job"], name], float(value))
        actions = CounterMetricFamily(
            "fraudlab_monitor_actions", "Actions the policy took", labels=["action"]
        )
        for action, count in sorted(taken.items()):
            actions.add_metric([action], count)
        yield status
        yield values
        yield actions
        yield CounterMetricFamily("fraudlab_monitor_runs", "Monitor runs recorded", runs)
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
