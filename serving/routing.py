"""Who decides a payment: the champion, or the challenger for a sticky canary share.

A customer's bucket is a hash of their id, so the same customer always gets the same
model (no flip-flopping decisions for one card) and raising the share only adds
customers to the canary, never swaps them.

The circuit breaker lives here too, as part of what every worker applies to a
decision: tripped (`review_instead_of_decline`), a payment the model would decline goes
to an analyst instead. The monitor trips it when a fast guardrail finds the inputs or
the decisions out of their band (monitoring/guardrail.py) and releases it once they are
back, or a person does (`POST /admin/routing {"breaker": "off"}`); the model's own
decision is still logged.

With several uvicorn workers an admin call reaches one of them only, so a routing change
is also written to one SQLite row under the home folder (`SharedRouting`); every worker
reads it at startup and on each poll of its alias watcher. The server's launcher
(serving/process.py) deletes the row's file, so each server run starts from settings.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from serving.exploration import stable_draw

_SALT = b"fraudlab-canary-v1"  # change to reshuffle who is in the canary
ROUTING_FILE = "serving_routing.sqlite"  # under settings.home
_BUSY_SECONDS = 10.0  # an admin write waits this long for another worker's transaction
Breaker = Literal["off", "review_instead_of_decline"]
BREAKERS: tuple[Breaker, ...] = get_args(Breaker)


def customer_bucket(customer_id: int) -> float:
    """A stable number in [0, 1) per customer."""
    return stable_draw(str(customer_id), _SALT)


def shared_routing_path(home: Path) -> Path:
    return home / ROUTING_FILE


@dataclass
class RoutingPolicy:
    canary_share: float = 0.0
    shadow: bool = True
    breaker: Breaker = "off"

    def route(self, customer_id: int, has_challenger: bool) -> str:
        if has_challenger and customer_bucket(customer_id) < self.canary_share:
            return "canary"
        return "champion"

    def served(self, decision: str) -> str:
        """What the caller gets for the model's decision while the breaker is as it is:
        a decline turns a good customer away for good, a review costs an analyst's
        minutes; with the inputs or the decisions in doubt, nobody is declined."""
        if self.breaker == "review_instead_of_decline" and decision == "decline":
            return "review"
        return decision


class SharedRouting:
    """The routing every worker of one server applies: one row, written by whichever
    worker took the admin call, read by all. No row yet: the settings' values apply."""

    def __init__(self, path: Path, policy: RoutingPolicy) -> None:
        self.path = path
        self.policy = policy  # this worker's, read on the request path
        # From settings, the same in every worker; the breaker always starts off.
        self._defaults: tuple[float, bool, Breaker] = (policy.canary_share, policy.shadow, "off")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS routing (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " canary_share REAL NOT NULL, shadow INTEGER NOT NULL, breaker TEXT NOT NULL,"
            " updated_at REAL NOT NULL)"
        )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(routing)")}
        if "breaker" not in columns:  # a row written before the breaker existed
            conn.execute("ALTER TABLE routing ADD COLUMN breaker TEXT NOT NULL DEFAULT 'off'")
        return conn

    def sync(self) -> RoutingPolicy:
        """Apply the shared row to this worker's policy (the watcher calls this each poll)."""
        if not self.path.exists():  # nobody changed the routing in this server run
            return self.policy
        conn = self._connect()
        try:
            row = conn.execute(f"SELECT {_FIELDS} FROM routing WHERE id = 1").fetchone()
        finally:
            conn.close()
        if row is not None:
            self._apply(float(row[0]), bool(row[1]), _breaker(row[2]))
        return self.policy

    def update(
        self, canary_share: float | None, shadow: bool | None, breaker: Breaker | None = None
    ) -> RoutingPolicy:
        """Change the shared row, commit it (durable once this returns), apply it here.

        Read, change and write happen in one IMMEDIATE transaction: two workers changing
        different fields at once both land, neither overwrites the other with stale values.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(f"SELECT {_FIELDS} FROM routing WHERE id = 1").fetchone()
            share, on, tripped = (
                (float(row[0]), bool(row[1]), _breaker(row[2])) if row else self._defaults
            )
            share = share if canary_share is None else canary_share
            on = on if shadow is None else shadow
            tripped = tripped if breaker is None else breaker
            conn.execute(
                "INSERT OR REPLACE INTO routing (id, canary_share, shadow, breaker, updated_at)"
                " VALUES (1, ?, ?, ?, ?)",
                (share, int(on), tripped, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        self._apply(share, on, tripped)
        return self.policy

    def _apply(self, canary_share: float, shadow: bool, breaker: Breaker) -> None:
        # Plain assignments: a request reads each field once, and either value of any
        # field is a valid routing for the moment the change is in flight.
        self.policy.canary_share = canary_share
        self.policy.shadow = shadow
        self.policy.breaker = breaker


_FIELDS = "canary_share, shadow, breaker"


def _breaker(value: object) -> Breaker:
    return value if value in BREAKERS else "off"
