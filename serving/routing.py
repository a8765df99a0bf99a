"""Who decides a payment: the champion, or the challenger for a sticky canary share.

A customer's bucket is a hash of their id, so the same customer always gets the same
model (no flip-flopping decisions for one card) and raising the share only adds
customers to the canary, never swaps them.

With several uvicorn workers an admin call reaches one of them only, so a routing change
is also written to one SQLite row under the home folder (`SharedRouting`); every worker
reads it at startup and on each poll of its alias watcher. The server's launcher
(serving/process.py) deletes the row's file, so each server run starts from settings.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_SALT = b"fraudlab-canary-v1"  # change to reshuffle who is in the canary
ROUTING_FILE = "serving_routing.sqlite"  # under settings.home
_BUSY_SECONDS = 10.0  # an admin write waits this long for another worker's transaction


def customer_bucket(customer_id: int) -> float:
    """A stable number in [0, 1) per customer."""
    digest = hashlib.blake2b(str(customer_id).encode(), digest_size=8, key=_SALT).digest()
    return int.from_bytes(digest, "big") / 2**64


def shared_routing_path(home: Path) -> Path:
    return home / ROUTING_FILE


@dataclass
class RoutingPolicy:
    canary_share: float = 0.0
    shadow: bool = True

    def route(self, customer_id: int, has_challenger: bool) -> str:
        if has_challenger and customer_bucket(customer_id) < self.canary_share:
            return "canary"
        return "champion"


class SharedRouting:
    """The routing every worker of one server applies: one row, written by whichever
    worker took the admin call, read by all. No row yet: the settings' values apply."""

    def __init__(self, path: Path, policy: RoutingPolicy) -> None:
        self.path = path
        self.policy = policy  # this worker's, read on the request path
        self._defaults = (policy.canary_share, policy.shadow)  # from settings, same everywhere

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS routing (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " canary_share REAL NOT NULL, shadow INTEGER NOT NULL, updated_at REAL NOT NULL)"
        )
        return conn

    def sync(self) -> RoutingPolicy:
        """Apply the shared row to this worker's policy (the watcher calls this each poll)."""
        if not self.path.exists():  # nobody changed the routing in this server run
            return self.policy
        conn = self._connect()
        try:
            row = conn.execute("SELECT canary_share, shadow FROM routing WHERE id = 1").fetchone()
        finally:
            conn.close()
        if row is not None:
            self._apply(float(row[0]), bool(row[1]))
        return self.policy

    def update(self, canary_share: float | None, shadow: bool | None) -> RoutingPolicy:
        """Change the shared row, commit it (durable once this returns), apply it here.

        Read, change and write happen in one IMMEDIATE transaction: two workers changing
        different fields at once both land, neither overwrites the other with stale values.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT canary_share, shadow FROM routing WHERE id = 1").fetchone()
            share, on = (float(row[0]), bool(row[1])) if row else self._defaults
            share = share if canary_share is None else canary_share
            on = on if shadow is None else shadow
            conn.execute(
                "INSERT OR REPLACE INTO routing VALUES (1, ?, ?, ?)", (share, int(on), time.time())
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        self._apply(share, on)
        return self.policy

    def _apply(self, canary_share: float, shadow: bool) -> None:
        # Two plain assignments: a request reads each field once, and either value of
        # either field is a valid routing for the moment the change is in flight.
        self.policy.canary_share = canary_share
        self.policy.shadow = shadow
