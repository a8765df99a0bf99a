"""Replay payments against a running scoring API, the way a payment gateway sends them.

Payments of a range of days go out as POST /v1/score at a fixed rate (or as fast as
the API answers) over a pool of keep-alive connections (client/http.py). What comes
back is tallied into a `ReplaySummary`: errors by status, fallbacks, latency as this
client saw it, achieved rate, and who decided what.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd

from client.admin import ServingAdmin
from client.http import Answer, Sender, host_and_port, post
from data.calendar import Calendar
from data.validate import load_transactions
from fraudlab.errors import ConfigError, ServiceUnavailable
from fraudlab.settings import Settings

Progress = Callable[[int], None]  # called with the number of requests just completed
EPOCH = pd.Timestamp(0, tz="UTC")
REQUEST_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "amount", "event_timestamp"]


@dataclass(frozen=True)
class ReplaySummary:
    requests: int
    answered: int  # 200 responses
    errors: dict[str, int]  # HTTP status or transport error name -> count
    fallbacks: int  # answered with missing or stale features
    latency_ms: dict[str, float]  # p50, p95, p99 of every response, client-side
    elapsed_seconds: float
    decisions: dict[str, dict[str, int]]  # route -> decision -> count
    versions: dict[str, int] = field(default_factory=dict)  # "alias vN" -> count
    worst_lag_ms: float = 0.0  # fixed rate: the latest departure behind its schedule

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def achieved_rate(self) -> float:
        return self.requests / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def payments_of_days(
    tx: pd.DataFrame, from_day: int, days: int = 1, limit: int | None = None
) -> list[dict[str, Any]]:
    """Request bodies for the payments of days [from_day, from_day + days) of `tx`, day 0
    being its first day (data/calendar.py), in time order."""
    calendar = Calendar.of(tx["event_timestamp"])
    if not 0 <= from_day <= calendar.last_day:
        raise ConfigError(f"from day {from_day} is outside the data (days 0..{calendar.last_day})")
    chosen = tx[calendar.days_between(from_day, days, tx["event_timestamp"])]
    chosen = chosen.sort_values("event_timestamp", kind="stable")
    if chosen.empty:
        raise ConfigError(f"no payments in days {from_day}..{from_day + days - 1}")
    if limit is not None:
        chosen = chosen.head(limit)
    return [payment_body(row) for row in chosen[REQUEST_COLUMNS].itertuples(index=False)]


def load_payments(
    settings: Settings, from_day: int | None = None, days: int = 1, limit: int | None = None
) -> list[dict[str, Any]]:
    """The home's payments of those days; from_day defaults to the training cutoff."""
    start_day = settings.training.cutoff_day if from_day is None else from_day
    return payments_of_days(load_transactions(settings), start_day, days, limit)


def payment_body(row: Any) -> dict[str, Any]:
    """One transactions row as the API's request body."""
    return {
        "transaction_id": str(row.transaction_id),
        "customer_id": int(row.customer_id),
        "terminal_id": int(row.terminal_id),
        "amount": float(row.amount),
        "timestamp": row.event_timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def replay_payments(
    url: str,
    payments: list[dict[str, Any]],
    rate: float = 100.0,
    concurrency: int = 8,
    progress: Progress | None = None,
    clock: ServingAdmin | None = None,
    *,
    in_order_per: str | None = None,
    waves_within: pd.Timedelta | None = None,
    before_wave: Callable[[list[dict[str, Any]]], None] | None = None,
    clock_step: pd.Timedelta | None = None,
) -> ReplaySummary:
    """Send every payment (rate in requests/s, 0 = as fast as possible, on at most
    `concurrency` connections) and tally.

    With `clock` (the admin client of the same API), simulated time: the payments go out
    in spans the service's accepted lateness covers, and before each span the service's
    clock is held at its last payment's time (serving/clock.py); `clock_step` shortens
    the spans, so the clock follows the payments that closely (anything timed by the
    service clock, a stream's lag, then moves as it would live). Without `clock`, the
    payments must be stamped near the service's own clock.

    `in_order_per` (a body field, e.g. "customer_id"): a payment goes out only once the
    previous payment of its customer is answered (see `ordered_waves`; `waves_within`
    also cuts them at every multiple of that period of event time); `before_wave` runs
    before each wave goes out (a scenario lets a stream worker catch up there, and runs
    the checks due by the wave's first payment)."""
    if rate < 0 or concurrency < 1:
        raise ConfigError("rate must be >= 0 and concurrency >= 1")
    host, port = host_and_port(url)
    check_ready(url)
    if clock is None:
        spans = [payments]
    else:
        lateness = _lateness(clock)
        spans = clock_spans(payments, min(lateness, clock_step) if clock_step else lateness)
    tally = _Tally(progress or (lambda _: None))
    started = pd.Timestamp.now()
    lag = 0.0
    with Sender(host, port, concurrency) as sender:  # one pool for every wave
        for span in spans:
            waves = ordered_waves(span, in_order_per, waves_within) if in_order_per else [span]
            for i, wave in enumerate(waves):
                if before_wave is not None:  # before the clock moves: on the last span's time
                    before_wave(wave)
                if clock is not None and i == 0:
                    _hold(clock, pd.Timestamp(span[-1]["timestamp"]))
                requests = [post(host, port, "/v1/score", body) for body in wave]
                lag = max(lag, sender.send(requests, rate=rate, on_answer=tally.add))
    elapsed = (pd.Timestamp.now() - started).total_seconds()
    return tally.summary(elapsed, lag)


def ordered_waves(
    payments: list[dict[str, Any]], key: str, within: pd.Timedelta | None = None
) -> list[list[dict[str, Any]]]:
    """Consecutive runs of payments (in time order) in which no `key` repeats (and, with
    `within`, that lie in one period of that length, counted from the epoch).

    A wave goes out at once and the next waits for its answers, so each customer's
    payments are scored one after the other, as a card's payments reach a gateway
    minutes apart, while different customers still go out together. Replayed faster
    than live, that is what keeps a customer's velocity state (updated by every
    answered payment) as complete as it would be live."""
    waves: list[list[dict[str, Any]]] = []
    seen: set[Any] = set()
    period, last_period = None, None
    for body in payments:
        if within is not None:
            period = (pd.Timestamp(body["timestamp"]) - EPOCH) // within
        if not waves or body[key] in seen or period != last_period:
            waves.append([])
            seen = set()
        waves[-1].append(body)
        seen.add(body[key])
        last_period = period
    return waves


def clock_spans(payments: list[dict[str, Any]], lateness: pd.Timedelta) -> list[list[dict]]:
    """Consecutive runs of payments (in time order) whose times lie within `lateness`
    of the run's last one: held at that last time, the service accepts each of them."""
    spans: list[list[dict[str, Any]]] = []
    opened: pd.Timestamp | None = None
    for body in payments:
        at = pd.Timestamp(body["timestamp"])
        if opened is None or at - opened > lateness:
            spans.append([])
            opened = at
        spans[-1].append(body)
    return spans


def _lateness(clock: ServingAdmin) -> pd.Timedelta:
    state = clock.clock_state()
    if state is None:
        raise ServiceUnavailable(
            f"could not read the service clock at {clock.url}/admin/clock: a simulated-time "
            "replay holds it there, which needs the API's admin token"
        )
    return pd.Timedelta(seconds=float(state["max_lateness_seconds"]))


def _hold(clock: ServingAdmin, instant: pd.Timestamp) -> None:
    answer = clock.hold_clock(instant.to_pydatetime())
    if not answer.ok:
        raise ServiceUnavailable(f"could not hold the service clock at {instant}: {answer}")


def check_ready(url: str) -> None:
    """Fail with one clear line, before sending anything, if the API cannot answer."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5.0)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ConfigError(f"{url!r} is not an http(s) URL of the scoring API: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"scoring API at {url} is unreachable ({type(exc).__name__}): is `fraudlab serve` up?"
        ) from exc
    if response.status_code != 200:
        raise ServiceUnavailable(
            f"scoring API at {url} is not ready (HTTP {response.status_code}): "
            f"{response.text[:200]}"
        )


class _Tally:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.versions: Counter[str] = Counter()
        self.fallbacks = 0
        self.requests = 0

    def add(self, answer: Answer) -> None:
        self.requests += 1
        self.progress(1)
        if answer.status is None:
            self.errors[answer.error] += 1
            return
        self.latencies.append(answer.latency_ms)
        if answer.status != 200:
            self.errors[str(answer.status)] += 1
            return
        body = json.loads(answer.body)
        self.fallbacks += bool(body["fallback"])
        self.decisions[(body["route"], body["decision"])] += 1
        self.versions[f"{body['model']['alias']} v{body['model']['version']}"] += 1

    def summary(self, elapsed: float, worst_lag_ms: float) -> ReplaySummary:
        marks = np.percentile(self.latencies, [50, 95, 99]) if self.latencies else [np.nan] * 3
        decisions: dict[str, dict[str, int]] = {}
        for (route, decision), count in sorted(self.decisions.items()):
            decisions.setdefault(route, {})[decision] = count
        return ReplaySummary(
            requests=self.requests,
            answered=self.requests - sum(self.errors.values()),
            errors=dict(self.errors),
            fallbacks=self.fallbacks,
            latency_ms=dict(zip(("p50", "p95", "p99"), map(float, marks), strict=True)),
            elapsed_seconds=elapsed,
            decisions=decisions,
            versions=dict(self.versions),
            worst_lag_ms=worst_lag_ms,
        )
