"""What one row of the log holds: a typed record per table, its columns and types, and
the SQLite schema (WAL mode, so API workers append while monitoring jobs read)."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from fraudlab.errors import ConfigError

BUSY_SECONDS = 30.0  # SQLite's own wait for another writer's lock, per attempt
PREDICTIONS, SHADOW_SCORES = "predictions", "shadow_scores"

# Column -> SQLite type, in table order.
COLUMNS: dict[str, str] = {
    "request_id": "TEXT PRIMARY KEY",
    "transaction_id": "TEXT NOT NULL",
    "event_timestamp": "TEXT NOT NULL",  # ISO 8601, UTC: sorts as text
    # The service's clock when it answered (serving/clock.py), ISO 8601 UTC: the wall
    # clock live, the simulated instant a simulated-time run set. The monitor's "now".
    "served_at": "TEXT NOT NULL",
    "logged_at": "REAL NOT NULL",  # the service's wall clock, seconds since the epoch
    "customer_id": "INTEGER NOT NULL",
    "terminal_id": "INTEGER NOT NULL",
    "amount": "REAL NOT NULL",  # the request's amount, as the caller sent it
    "route": "TEXT NOT NULL",
    "model_alias": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "score": "REAL NOT NULL",
    "decision": "TEXT NOT NULL",  # what the caller got
    # The model's own: it differs while the circuit breaker is tripped (a decline
    # served as a review, serving/routing.py); the guardrails judge the model by it.
    "model_decision": "TEXT NOT NULL",
    "champion_version": "TEXT",
    "challenger_version": "TEXT",
    "fallback": "INTEGER NOT NULL",
    "fallback_features": "TEXT NOT NULL",  # comma-separated names
    "features": "TEXT NOT NULL",  # JSON object: name -> value (null = missing)
    # JSON object: view -> age in seconds of the value served (null: none was read):
    # a snapshot's since its midnight, a velocity view's the stream's lag (0 inline).
    "feature_age": "TEXT NOT NULL",
    "features_ms": "REAL NOT NULL",
    "model_ms": "REAL NOT NULL",
    "total_ms": "REAL NOT NULL",
    # The probability the service had of giving this decision (serving/exploration.py):
    # 1 for an approval the model made, the exploration share for one it did not.
    "propensity": "REAL NOT NULL DEFAULT 1.0",
}
# Columns a newer fraudlab appended, with their value for every row an older one wrote:
# such a log is brought up to date at startup instead of being refused.
APPENDED = {"propensity": "REAL NOT NULL DEFAULT 1.0"}
SHADOW_COLUMNS: dict[str, str] = {
    "request_id": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "score": "REAL",
    "decision": "TEXT",
    "error": "TEXT",
    "model_ms": "REAL",
}


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered request: what was asked, who decided what, with which features."""

    request_id: str
    transaction_id: str
    event_timestamp: datetime
    served_at: datetime
    customer_id: int
    terminal_id: int
    amount: float
    route: str
    model_alias: str
    model_version: str
    score: float
    decision: str
    model_decision: str
    champion_version: str | None
    challenger_version: str | None
    fallback_features: list[str]
    features: dict[str, float]  # NaN = missing
    features_ms: float
    model_ms: float
    total_ms: float
    feature_age: dict[str, float | None] = field(default_factory=dict)
    propensity: float = 1.0
    logged_at: float = field(default_factory=time.time)

    def row(self) -> tuple[Any, ...]:
        """The values in COLUMNS order (serialised by the writer thread, off the request
        path)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["event_timestamp"] = self.event_timestamp.isoformat()
        values["served_at"] = self.served_at.isoformat()
        values["fallback"] = int(bool(self.fallback_features))
        values["fallback_features"] = ",".join(self.fallback_features)
        values["features"] = json.dumps(
            {k: (None if math.isnan(v) else v) for k, v in self.features.items()}
        )
        values["feature_age"] = json.dumps(
            {k: (None if v is None or math.isnan(v) else v) for k, v in self.feature_age.items()}
        )
        return tuple(values[c] for c in COLUMNS)


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """The challenger's shadow score for one champion-routed request (or its error)."""

    request_id: str
    model_version: str
    score: float | None
    decision: str | None
    error: str | None
    model_ms: float

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in SHADOW_COLUMNS)


Record = PredictionRecord | ShadowRecord
TABLES: dict[type, tuple[str, dict[str, str]]] = {
    PredictionRecord: (PREDICTIONS, COLUMNS),
    ShadowRecord: (SHADOW_SCORES, SHADOW_COLUMNS),
}
# What the readers look rows up by: every monitor job reads a window of event time (the
# minute jobs every few minutes, over a log of months), the canary a set of request ids.
INDEXES = {PREDICTIONS: "event_timestamp", SHADOW_SCORES: "request_id"}
assert set(COLUMNS) == {f.name for f in fields(PredictionRecord)} | {"fallback"}
assert list(SHADOW_COLUMNS) == [f.name for f in fields(ShadowRecord)]


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=BUSY_SECONDS)


def create_log(path: Path) -> None:
    """WAL mode and the tables; several workers may run this at the same moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(10):
        conn = connect(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for table, columns in TABLES.values():
                spec = ", ".join(f"{name} {kind}" for name, kind in columns.items())
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec})")
                _same_columns(conn, path, table, columns)
                column = INDEXES[table]
                conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_{column} ON {table} ({column})")
            conn.commit()
            return
        except sqlite3.OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))  # another worker is switching the journal mode
        finally:
            conn.close()


def _same_columns(
    conn: sqlite3.Connection, path: Path, table: str, columns: dict[str, str]
) -> None:
    """A log written by an older fraudlab lacks the columns appended since: add them.
    One with other columns still: say so once, at startup, instead of failing every
    insert later."""
    found = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    expected = list(columns)
    if found == expected[: len(found)] and set(expected[len(found) :]) <= set(APPENDED):
        for name in expected[len(found) :]:  # positional inserts: appended in table order
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {APPENDED[name]}")
        found = expected
    if found != expected:
        missing = sorted(set(columns) - set(found)) or "-"
        raise ConfigError(
            f"the prediction log {path} was written by another fraudlab version (table "
            f"{table}, columns missing: {missing}): move it away and the service starts a "
            "new one"
        )
