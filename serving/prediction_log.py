"""The append-only prediction log: every answered request, with its feature vector.

Requests append a record to an in-memory buffer (no I/O on the request path); a
background writer commits what has accumulated every `log_flush_seconds`, in
transactions of at most `log_batch_rows` rows, and flushes on shutdown. SQLite in WAL
mode lets several API workers append and the monitoring jobs read at the same time.

Several workers append to one file: each commit takes the write lock up front (BEGIN
IMMEDIATE, so SQLite's busy timeout applies instead of a lock-upgrade error that
skips it), waits up to `BUSY_SECONDS` for another worker's commit, and a batch that
still meets a busy or locked database is retried with backoff, never dropped; only
at shutdown does the retrying stop, after `CLOSE_RETRY_SECONDS`.

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
BUSY_SECONDS = 30.0  # SQLite's own wait for another writer's lock, per attempt
CLOSE_RETRY_SECONDS = 20.0  # shutdown gives up on a database that stays locked this long
MAX_BACKOFF_SECONDS = 1.0

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


def _create(path: Path) -> None:
    """WAL mode and the tables; several workers may run this at the same moment."""
    for attempt in range(10):
        conn = sqlite3.connect(path, timeout=BUSY_SECONDS)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for table, columns in (("predictions", COLUMNS), ("shadow_scores", SHADOW_COLUMNS)):
                spec = ", ".join(f"{name} {kind}" for name, kind in columns.items())
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec})")
            conn.commit()
            return
        except sqlite3.OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))  # another worker is switching the journal mode
        finally:
            conn.close()


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
        self.retries = 0  # attempts that met a busy or locked database (then retried)
        self.failed_batches = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(path)
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
        # One busy wait, then the shutdown retries: a locked database gets its chance.
        self._thread.join(timeout=BUSY_SECONDS + CLOSE_RETRY_SECONDS + 5)

    def _take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            taken, self._pending = self._pending, []
        return taken

    def _run(self) -> None:
        # Autocommit mode: the transactions are ours, begun IMMEDIATE (see _insert).
        conn = sqlite3.connect(
            self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
        )
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.flush_seconds)
            taken = self._take()
            for start in range(0, len(taken), self.batch_rows):
                self._write(conn, taken[start : start + self.batch_rows])
        conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Commit one batch, retrying while the database is busy; requests keep appending
        to the buffer meanwhile, so a slow disk costs memory, not answers or rows."""
        backoff = 0.01
        give_up_at: float | None = None
        while True:
            try:
                _insert(conn, batch)
                self.written += len(batch)
                return
            except sqlite3.OperationalError as exc:  # busy, locked, I/O: worth another try
                self.retries += 1
                if self._stop.is_set():
                    give_up_at = give_up_at or time.monotonic() + CLOSE_RETRY_SECONDS
                    if time.monotonic() > give_up_at:
                        self.failed_batches += 1
                        log.error("prediction log: %d rows lost at shutdown: %s", len(batch), exc)
                        return
                if self.retries % 50 == 1:
                    log.warning("prediction log busy (%s); retrying %d rows", exc, len(batch))
                time.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)
            except sqlite3.Error:  # a bad row: no retry can help, keep the writer going
                self.failed_batches += 1
                log.exception("prediction log batch of %d rows failed", len(batch))
                return


def _insert(conn: sqlite3.Connection, batch: list[tuple[str, dict[str, Any]]]) -> None:
    # IMMEDIATE takes the write lock now, under the busy timeout; a deferred transaction
    # that upgrades from a read can get SQLITE_BUSY at once, without waiting.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, columns in (("predictions", COLUMNS), ("shadow_scores", SHADOW_COLUMNS)):
            rows = [tuple(rec.get(c) for c in columns) for t, rec in batch if t == table]
            if rows:
                marks = ", ".join("?" * len(columns))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def count_rows(path: Path, table: str = "predictions") -> int:
    conn = sqlite3.connect(path, timeout=BUSY_SECONDS)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()
