"""Replay the simulator's "future" payments against a running scoring API.

Payments of a range of days go out as POST /v1/score at a fixed rate (or as fast as
the API answers) with a bounded number in flight, the way a payment gateway would
send them. What comes back is tallied into a `ReplaySummary`: errors by status,
fallbacks, client-side latency, achieved rate, and who decided what.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from data.calendar import Calendar
from fraudlab.errors import ConfigError, ServiceUnavailable
from fraudlab.settings import Settings

REQUEST_TIMEOUT_SECONDS = 10.0  # far above any healthy answer; a stuck API shows as errors
Progress = Callable[[int], None]  # called with the number of requests just completed


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

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def achieved_rate(self) -> float:
        return self.requests / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def load_payments(
    settings: Settings, from_day: int | None = None, days: int = 1, limit: int | None = None
) -> list[dict[str, Any]]:
    """Request bodies for the payments of days [from_day, from_day + days), day 0 being
    the first day of the data; from_day defaults to the training cutoff (the "future")."""
    from data.validate import read_transactions

    tx = read_transactions(settings.transactions_path)
    calendar = Calendar.of(tx["event_timestamp"])
    start_day = settings.training.cutoff_day if from_day is None else from_day
    if not 0 <= start_day <= calendar.last_day:
        raise ConfigError(f"from day {start_day} is outside the data (days 0..{calendar.last_day})")
    chosen = tx[calendar.days_between(start_day, days, tx["event_timestamp"])]
    chosen = chosen.sort_values("event_timestamp", kind="stable")
    if chosen.empty:
        raise ConfigError(f"no payments in days {start_day}..{start_day + days - 1}")
    if limit is not None:
        chosen = chosen.head(limit)
    return [
        payment_body(row)
        for row in chosen[
            ["transaction_id", "customer_id", "terminal_id", "amount", "event_timestamp"]
        ].itertuples(index=False)
    ]


def payment_body(row: Any) -> dict[str, Any]:
    """One transactions row as the API's request body."""
    return {
        "transaction_id": str(row.transaction_id),
        "customer_id": int(row.customer_id),
        "terminal_id": int(row.terminal_id),
        "amount": float(row.amount),
        "timestamp": row.event_timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def replay(
    settings: Settings,
    url: str,
    from_day: int | None = None,
    days: int = 1,
    rate: float = 100.0,
    concurrency: int = 8,
    limit: int | None = None,
    progress: Progress | None = None,
) -> ReplaySummary:
    payments = load_payments(settings, from_day, days, limit)
    return replay_payments(url, payments, rate, concurrency, progress)


def replay_payments(
    url: str,
    payments: list[dict[str, Any]],
    rate: float = 100.0,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Send every payment (rate in requests/s, 0 = as fast as possible) and tally."""
    if rate < 0 or concurrency < 1:
        raise ConfigError("rate must be >= 0 and concurrency >= 1")
    check_ready(url)
    tally = _Tally()
    started = time.perf_counter()
    asyncio.run(_send(url, payments, rate, concurrency, tally, progress or (lambda _: None)))
    return tally.summary(time.perf_counter() - started)


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
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.versions: Counter[str] = Counter()
        self.fallbacks = 0
        self.requests = 0

    def add(self, latency_ms: float | None, status: str, body: dict[str, Any] | None) -> None:
        self.requests += 1
        if latency_ms is not None:
            self.latencies.append(latency_ms)
        if body is None:
            self.errors[status] += 1
            return
        self.fallbacks += bool(body["fallback"])
        self.decisions[(body["route"], body["decision"])] += 1
        self.versions[f"{body['model']['alias']} v{body['model']['version']}"] += 1

    def summary(self, elapsed: float) -> ReplaySummary:
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
        )


async def _send(
    url: str,
    payments: list[dict[str, Any]],
    rate: float,
    concurrency: int,
    tally: _Tally,
    progress: Progress,
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    loop = asyncio.get_running_loop()
    start = loop.time()
    next_index = 0  # shared by the workers; the event loop runs one at a time

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < len(payments):
            index, next_index = next_index, next_index + 1
            if rate > 0 and (wait := start + index / rate - loop.time()) > 0:
                await asyncio.sleep(wait)  # a fixed schedule: payment i leaves at i / rate
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/score", json=payments[index])
            except httpx.HTTPError as exc:
                tally.add(None, type(exc).__name__, None)
            else:
                ok = response.status_code == 200
                latency = (time.perf_counter() - sent) * 1e3
                tally.add(latency, str(response.status_code), response.json() if ok else None)
            progress(1)

    async with httpx.AsyncClient(
        base_url=url, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(min(concurrency, len(payments)))))
