"""The operator's side of the scoring API: reload the models, change the routing, hold
the service clock in a simulated-time run.

What the monitor's actions call after they move an alias. A failure is returned, never
raised, as an answer that is not `ok`: anything but a 2xx (a 403 from a wrong token is
a failure, not a success), no answer, or no admin token to send. The caller decides
what it means: a reload the alias watcher will redo on its next poll is not worth
failing an action over; a routing change nobody else will make is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import httpx

from fraudlab.settings import Settings

ADMIN_TIMEOUT_SECONDS = 30.0  # a reload loads models: seconds on a busy machine


@cache
def _client() -> httpx.Client:
    """One client per process. `httpx.get` builds a client, and with it a TLS context
    that reads the CA bundle (20 ms), on every call: that was half of each minute-jobs
    run, which asks the API for its routing every few minutes. No connection is kept
    between calls, so a restarted API is never met on a connection it closed."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


@dataclass(frozen=True)
class AdminAnswer:
    ok: bool
    text: str

    def __str__(self) -> str:
        return self.text


class ServingAdmin:
    def __init__(self, settings: Settings, url: str | None = None) -> None:
        self.url = (url or settings.api_url).rstrip("/")
        token = settings.admin_token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _call(
        self, path: str, body: dict[str, object] | None = None, method: str = "POST"
    ) -> AdminAnswer:
        if not self.headers:
            return AdminAnswer(False, f"serving {path} not called: no admin token configured")
        try:
            response = _client().request(
                method,
                f"{self.url}{path}",
                json=body,
                headers=self.headers,
                timeout=ADMIN_TIMEOUT_SECONDS,
            )
        except httpx.HTTPError as exc:
            return AdminAnswer(False, f"serving {path} unreachable ({type(exc).__name__})")
        return AdminAnswer(response.is_success, f"serving {path}: HTTP {response.status_code}")

    def set_canary(self, share: float) -> AdminAnswer:
        return self._call("/admin/routing", {"canary_share": share})

    def set_breaker(self, breaker: str) -> AdminAnswer:
        """Trip (`review_instead_of_decline`) or release (`off`) the circuit breaker."""
        return self._call("/admin/routing", {"breaker": breaker})

    def reload(self) -> AdminAnswer:
        return self._call("/admin/reload")

    def clock_state(self) -> dict[str, Any] | None:
        """GET /admin/clock's body, or None when it cannot be read."""
        return self._get("/admin/clock")

    def routing_state(self) -> dict[str, Any] | None:
        """GET /admin/routing's body (canary share, shadow, breaker), or None."""
        return self._get("/admin/routing")

    def _get(self, path: str) -> dict[str, Any] | None:
        if not self.headers:
            return None
        try:
            response = _client().get(
                f"{self.url}{path}", headers=self.headers, timeout=ADMIN_TIMEOUT_SECONDS
            )
        except httpx.HTTPError:
            return None
        return dict(response.json()) if response.is_success else None

    def hold_clock(self, instant: datetime) -> AdminAnswer:
        """Hold the service clock at a simulated instant (serving/clock.py)."""
        return self._call("/admin/clock", {"now": instant.isoformat()}, method="PUT")
