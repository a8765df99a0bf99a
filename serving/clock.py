"""The service's clock: what "now" is for the scoring API, and which payment times it
accepts.

A payment's own timestamp is the caller's word. It decides the payment's request-time
features and its place in the monitor's windows, so an implausible one is refused: a
payment stamped more than `max_payment_lead_seconds` after the service's clock (a
gateway's clock may run a little ahead, not a day) or more than
`max_payment_lateness_seconds` before it (a queued retry, not last year) gets a 422.

Live, "now" is the wall clock. A simulated-time run (demo, replay, scenarios) replays
a month in minutes, so it holds the clock at a simulated instant through
`PUT /admin/clock` and moves it as its payments advance; held, the clock stands still
until the driver moves it. The held instant is one small file under the home, written
atomically, so every worker of a server sees a change before the admin call answers:
each `now()` compares the file's identity (inode, mtime, size) with the last one read,
one `stat` per request, and rereads it only when it changed. It survives an API restart
(a redeploy in the middle of a story keeps its simulated day); a demo or scenario
server run, which starts from its settings, removes it with the routing row.

Every logged request carries the clock's "now" as `served_at`; the monitor's "now" is
the largest of those, never the largest payment timestamp (monitoring/window.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)
CLOCK_FILE = "serving_clock.json"  # under settings.home


def held_clock_path(home: Path) -> Path:
    return home / CLOCK_FILE


@dataclass(frozen=True)
class ClockReading:
    now: datetime
    held: bool  # a simulated instant set through the admin API, not the wall clock


class ServiceClock:
    def __init__(self, path: Path, max_lateness_seconds: float, max_lead_seconds: float) -> None:
        self.path = path
        self.max_lateness = timedelta(seconds=max_lateness_seconds)
        self.max_lead = timedelta(seconds=max_lead_seconds)
        self._seen: tuple[int, int, int] | None = None  # the held file's identity last read
        self._held: datetime | None = None
        self._lock = threading.Lock()  # the shadow thread never reads it; admin threads do

    def read(self) -> ClockReading:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return ClockReading(datetime.now(UTC), held=False)
        identity = (info.st_ino, info.st_mtime_ns, info.st_size)
        with self._lock:
            if identity != self._seen:
                self._held, self._seen = _read_held(self.path), identity
            held = self._held
        if held is None:  # removed between the stat and the read
            return ClockReading(datetime.now(UTC), held=False)
        return ClockReading(held, held=True)

    def now(self) -> datetime:
        return self.read().now

    def refusal(self, payment_time: datetime, now: datetime) -> str | None:
        """Why a payment stamped `payment_time` is refused at `now`, or None."""
        if payment_time > now + self.max_lead:
            return (
                f"timestamp {payment_time.isoformat()} is {_span(payment_time - now)} after the "
                f"service clock ({now.isoformat()}); at most {_span(self.max_lead)} ahead is "
                "accepted (a simulated-time run must set the clock: PUT /admin/clock)"
            )
        if payment_time < now - self.max_lateness:
            return (
                f"timestamp {payment_time.isoformat()} is {_span(now - payment_time)} before the "
                f"service clock ({now.isoformat()}); at most {_span(self.max_lateness)} late is "
                "accepted (a simulated-time run must set the clock: PUT /admin/clock)"
            )
        return None

    def hold(self, instant: datetime) -> None:
        """Hold every worker's clock at `instant` (in effect once this returns)."""
        hold_clock(self.path, instant)

    def release(self) -> None:
        """Back to the wall clock."""
        self.path.unlink(missing_ok=True)


def hold_clock(path: Path, instant: datetime) -> None:
    """Write the held instant: what `PUT /admin/clock` does, and what a test world does
    for a server without admin endpoints before its first payment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    staged.write_text(json.dumps({"now": instant.astimezone(UTC).isoformat()}))
    # Readers tell files apart by (inode, mtime, size): a freed inode is soon reused and
    # the kernel stamps mtimes from a coarse clock, so two holds a millisecond apart
    # could look alike. An mtime past the current file's makes every hold a new one.
    try:
        previous = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        previous = 0
    stamp = max(time.time_ns(), previous + 1)
    os.utime(staged, ns=(stamp, stamp))
    os.replace(staged, path)  # atomic: a reader sees the old instant or the new one


def _read_held(path: Path) -> datetime | None:
    try:
        return datetime.fromisoformat(json.loads(path.read_text())["now"]).astimezone(UTC)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:  # edited by hand: say so, use the wall
        log.error("held clock file %s is unreadable (%r): using the wall clock", path, exc)
        return None


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3_600:.1f} h"
    return f"{seconds / 86_400:,.0f} days"
