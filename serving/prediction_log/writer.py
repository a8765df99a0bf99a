"""The log's writer: requests append a record to an in-memory buffer (no I/O on the
request path); a background thread commits what has accumulated every
`log_flush_seconds`, in transactions of at most `log_batch_rows` rows, and flushes on
shutdown.

Several workers append to one file: each commit takes the write lock up front (BEGIN
IMMEDIATE, so SQLite's busy timeout applies instead of a lock-upgrade error that
skips it), waits up to `BUSY_SECONDS` for another worker's commit, and a batch that
still meets a busy or locked database is retried with backoff, never dropped; only
at shutdown does the retrying stop, after `CLOSE_RETRY_SECONDS`.

What a hard kill (SIGKILL) can lose: the records still queued, i.e. at most the
requests answered in the last `log_flush_seconds` (0.2 s by default) plus one batch
being committed. tests/serving checks that bound.

Every record is accounted for, and the counts are on /metrics: written; retried (an
attempt that met a busy, locked or full database); rejected (a row the database
refuses, such as a NaN score against NOT NULL: its batch is written row by row, so one
bad row costs itself, not its batch); dropped (appended while `max_pending` records
were already waiting: the buffer is bounded, and its overflow is shed and counted,
each dropped request id named in the log at warning level).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from serving.prediction_log.record import (
    BUSY_SECONDS,
    TABLES,
    PredictionRecord,
    Record,
    ShadowRecord,
    create_log,
)

log = logging.getLogger(__name__)
CLOSE_RETRY_SECONDS = 20.0  # shutdown gives up on a database that stays locked this long
MAX_BACKOFF_SECONDS = 1.0


class PredictionLog:
    def __init__(
        self, path: Path, flush_seconds: float, batch_rows: int, max_pending: int = 50_000
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        # A plain list behind a lock: appending wakes no thread, so the request path
        # pays for a lock and an append, not a context switch to the writer.
        self._pending: list[Record] = []
        self._in_flight = 0  # taken by the writer, not yet written: counts toward the bound
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.written = 0
        self.retries = 0  # attempts that met a busy or locked database (then retried)
        self.rejected = 0  # rows the database refused (a NaN score, ...)
        self.dropped = 0  # records shed because max_pending were waiting
        self.failed_batches = 0
        create_log(path)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, record: PredictionRecord | ShadowRecord) -> None:
        with self._lock:
            if len(self._pending) + self._in_flight < self.max_pending:
                self._pending.append(record)
                return
            self.dropped += 1
        log.warning(
            "prediction log: %d records waiting, dropped request %s (%d dropped so far)",
            self.max_pending,
            record.request_id,
            self.dropped,
        )

    def counts(self) -> dict[str, int]:
        """Every record's fate so far, for /metrics."""
        return {
            "written": self.written,
            "retried": self.retries,
            "rejected": self.rejected,
            "dropped": self.dropped,
        }

    def alive(self) -> bool:
        return self._thread.is_alive()

    def pending(self) -> int:
        """Records held in memory: waiting, or taken by a write not yet done."""
        return len(self._pending) + self._in_flight

    def close(self) -> None:
        """Flush everything queued, then stop the writer."""
        self._stop.set()
        # One busy wait, then the shutdown retries: a locked database gets its chance.
        self._thread.join(timeout=BUSY_SECONDS + CLOSE_RETRY_SECONDS + 5)

    def _take(self) -> list[Record]:
        with self._lock:
            taken, self._pending = self._pending, []
            self._in_flight = len(taken)
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
                batch = taken[start : start + self.batch_rows]
                self._write(conn, batch)
                with self._lock:
                    self._in_flight -= len(batch)
        conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[Record]) -> None:
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
            except sqlite3.Error:  # a bad row: no retry helps it; the others must not pay
                self._write_one_by_one(conn, batch)
                return

    def _write_one_by_one(self, conn: sqlite3.Connection, batch: list[Record]) -> None:
        for record in batch:
            try:
                _insert(conn, [record])
                self.written += 1
            except sqlite3.OperationalError:  # the database, not the row: the batch path
                self._write(conn, [record])
            except sqlite3.Error as exc:
                self.rejected += 1
                log.error("prediction log: request %s rejected: %s", record.request_id, exc)


def _insert(conn: sqlite3.Connection, batch: Iterable[Record]) -> None:
    # IMMEDIATE takes the write lock now, under the busy timeout; a deferred transaction
    # that upgrades from a read can get SQLITE_BUSY at once, without waiting.
    by_table: dict[type, list[tuple[object, ...]]] = {kind: [] for kind in TABLES}
    for record in batch:
        by_table[type(record)].append(record.row())
    conn.execute("BEGIN IMMEDIATE")
    try:
        for kind, rows in by_table.items():
            if rows:
                table, columns = TABLES[kind]
                marks = ", ".join("?" * len(columns))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write records now, in one transaction, creating the log if needed (the tests' and
    the monitor benchmark's logs, written exactly as serving writes them)."""
    create_log(path)
    batch = list(records)
    conn = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)
    try:
        _insert(conn, batch)
    finally:
        conn.close()
    return len(batch)
