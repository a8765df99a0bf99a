"""The append-only prediction log: every answered request, with its feature vector.

Requests append a record to an in-memory buffer (no I/O on the request path); a
background writer commits what has accumulated every `log_flush_seconds`, in
transactions of at most `log_batch_rows` rows, and flushes on shutdown. SQLite in WAL
mode lets several API workers append and the monitoring jobs read at the same time.

What a hard kill (SIGKILL) can lose: the records still queued, i.e. at most the
requests answered in the last `log_flush_seconds` (0.2 s by default) plus one batch
being committed. tests/serving checks that bound.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COLUMNS = {
    "request_id": "TEXT PRIMARY KEY",
    "transaction_id": "TEXT NOT NULL",
    "event_timestamp": "TEXT NOT NULL",
    "logged_at": "REAL NOT NULL",
    "customer_id": "INTEGER NOT NULL",
    "terminal_id": "INTEGER NOT NULL",
    "amount": "REAL NOT NULL",
    "route": "TEXT NOT NULL",
    "model_alias": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "score": "REAL NOT NULL",
    "decision": "TEXT NOT NULL",
    "champion_version": "TEXT",
    "challenger_version": "TEXT",
    "fallback": "INTEGER NOT NULL",
    "fallback_features": "TEXT NOT NULL",
    "features": "TEXT NOT NULL",  # JSON object: name -> value (null = missing)
    "features_ms": "REAL NOT NULL",
    "model_ms": "REAL NOT NULL",
    "total_ms": "REAL NOT NULL",
}
SHADOW_COLUMNS = {
    "request_id": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "score": "REAL",
    "decision": "TEXT",
    "error": "TEXT",
    "model_ms": "REAL",
}


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    for table, columns in (("predictions", COLUMNS), ("shadow_scores", SHADOW_COLUMNS)):
        spec = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec})")
    conn.commit()


def features_json(values: dict[str, float]) -> str:
    return json.dumps({k: (None if math.isnan(v) else v) for k, v in values.items()})


def prediction_record(
    *,
    request_id: str,
    transaction_id: str,
    event_timestamp: datetime,
    customer_id: int,
    terminal_id: int,
    amount: float,
    route: str,
    model_alias: str,
    model_version: str,
    score: float,
    decision: str,
    champion_version: str | None,
    challenger_version: str | None,
    fallback_features: list[str],
    features: dict[str, float],
    stage_ms: tuple[float, float, float],  # features, model, total
    logged_at: float | None = None,
) -> dict[str, Any]:
    """One `predictions` row: the one definition the server, the tests' log builders
    and the monitor benchmark all write."""
    return {
        "request_id": request_id,
        "transaction_id": transaction_id,
        "event_timestamp": event_timestamp.isoformat(),
        "logged_at": time.time() if logged_at is None else logged_at,
        "customer_id": customer_id,
        "terminal_id": terminal_id,
        "amount": amount,
        "route": route,
        "model_alias": model_alias,
        "model_version": model_version,
        "score": score,
        "decision": decision,
        "champion_version": champion_version,
        "challenger_version": challenger_version,
        "fallback": int(bool(fallback_features)),
        "fallback_features": ",".join(fallback_features),
        "features": features_json(features),
        "features_ms": stage_ms[0],
        "model_ms": stage_ms[1],
        "total_ms": stage_ms[2],
    }


class PredictionLog:
    def __init__(self, path: Path, flush_seconds: float, batch_rows: int) -> None:
        self.path = path
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        # A plain list behind a lock: appending wakes no thread, so the request path
        # pays for a lock and an append, not a context switch to the writer.
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.written = 0
        self.failed_batches = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=30) as conn:
            _create(conn)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append(("predictions", record))

    def append_shadow(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append(("shadow_scores", record))

    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Flush everything queued, then stop the writer."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            taken, self._pending = self._pending, []
        return taken

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.flush_seconds)
            taken = self._take()
            for start in range(0, len(taken), self.batch_rows):
                self._write(conn, taken[start : start + self.batch_rows])
        conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            with conn:
                for table, columns in (("predictions", COLUMNS), ("shadow_scores", SHADOW_COLUMNS)):
                    rows = [tuple(rec.get(c) for c in columns) for t, rec in batch if t == table]
                    if rows:
                        marks = ", ".join("?" * len(columns))
                        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            self.written += len(batch)
        except sqlite3.Error:
            self.failed_batches += 1
            log.exception("prediction log batch of %d rows failed", len(batch))


def count_rows(path: Path, table: str = "predictions") -> int:
    with sqlite3.connect(path, timeout=30) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
