"""The log's writer: requests append a record to an in-memory buffer (no I/O on the
request path); a background thread commits what has accumulated every
`log_flush_seconds`, in transactions of at most `log_batch_rows` rows, and flushes on
shutdown.

Several workers append to one file: each commit takes the write lock up front (BEGIN
IMMEDIATE, so SQLite's busy timeout applies instead of a lock-upgrade error that
skips it) and waits up to `busy_seconds` for another worker's commit.

When the database will not take a batch (locked by another process, its disk full, an
I/O error), the policy, in order:
1. retry with backoff while requests keep appending to memory;
2. once it has failed for `spill_after_seconds`, spill each batch to a file of this
   writer's own (spill.py; put it on another disk with `serving.log_spill_dir`), and
   drain the spill into the database, oldest first, after its next successful commit;
3. when the spill cannot be written either (the same full disk), keep retrying both
   while the buffer holds at most `max_pending` records; past that, new records are
   shed, counted, and each dropped request id named in the log at warning level.
At shutdown a batch the database refuses is spilled at once, and the spill gets one
last try at the database; what it cannot take, the next writer on the same home drains.

What a hard kill (SIGKILL) can lose: the records still in memory, i.e. at most the
requests answered in the last `log_flush_seconds` (0.2 s by default) plus one batch
being committed; what was spilled stays. tests/reliability/test_kill.py checks the
bound by request id.

Every record is accounted for, and the counts are on /metrics: written (in the
database, spilled ones once drained); retried (an attempt that met a busy, locked or
full database); spilled (batches set aside in the spill); rejected (a row the database
refuses, such as a NaN score against NOT NULL: its batch is written row by row, so one
bad row costs itself, not its batch); dropped (shed past the bound, or lost at
shutdown with neither the database nor the spill writable). At any moment:
appended = written + rejected + dropped + in memory + in the spill, not yet drained.
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
from serving.prediction_log.spill import Rows, Spill

log = logging.getLogger(__name__)
COLUMNS_OF = {table: columns for table, columns in TABLES.values()}
CLOSE_RETRY_SECONDS = 20.0  # shutdown gives up on a database that stays locked this long
MAX_BACKOFF_SECONDS = 1.0
SPILL_AFTER_SECONDS = 5.0


class PredictionLog:
    def __init__(
        self,
        path: Path,
        flush_seconds: float,
        batch_rows: int,
        max_pending: int = 50_000,
        spill_dir: Path | None = None,
        spill_after_seconds: float = SPILL_AFTER_SECONDS,
        busy_seconds: float = BUSY_SECONDS,
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.spill_after_seconds = spill_after_seconds
        self.busy_seconds = busy_seconds
        self._failing_since: float | None = None  # when the database last stopped taking rows
        self._database_rests_until = 0.0  # spilling: the next database try is after this
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
        self.dropped = 0  # records shed past max_pending, or lost at shutdown
        self.spilled = 0  # records set aside in the spill (written once drained)
        create_log(path)
        self.spill = Spill(spill_dir or path.with_name(f"{path.stem}_spill"))
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
            "spilled": self.spilled,
            "in_spill": self.spill.rows,  # spilled (or taken over) and not yet drained
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
        self._thread.join(timeout=self.busy_seconds + CLOSE_RETRY_SECONDS + 5)

    def _take(self) -> list[Record]:
        with self._lock:
            taken, self._pending = self._pending, []
            self._in_flight = len(taken)
        return taken

    def _run(self) -> None:
        # Autocommit mode: the transactions are ours, begun IMMEDIATE (see _insert).
        conn = sqlite3.connect(
            self.path, timeout=self.busy_seconds, isolation_level=None, check_same_thread=False
        )
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.flush_seconds)
            taken = self._take()
            if not taken and self.spill.rows and time.monotonic() >= self._database_rests_until:
                self._drain(conn)  # a spill taken over at start, or left by a quiet spell
            for start in range(0, len(taken), self.batch_rows):
                batch = taken[start : start + self.batch_rows]
                self._write(conn, batch)
                with self._lock:
                    self._in_flight -= len(batch)
        if self.spill.rows:  # shutdown: one last try at the database, rest or not
            self._drain(conn)
        conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[Record]) -> None:
        """Commit one batch, or spill it, by the policy above; requests keep appending to
        the buffer meanwhile, so a slow disk costs memory, not answers or rows."""
        rows = _rows(batch)
        backoff = 0.01
        give_up_at: float | None = None
        while True:
            # Spilling, and the database was tried moments ago: no wait on it per batch.
            if time.monotonic() < self._database_rests_until and self._spill(rows, len(batch)):
                return
            try:
                _insert(conn, rows)
                self.written += len(batch)
                self._failing_since = None
                if self.spill.rows:
                    self._drain(conn)
                return
            except sqlite3.OperationalError as exc:  # busy, locked, I/O: worth another try
                self.retries += 1
                now = time.monotonic()
                self._failing_since = self._failing_since or now
                if now - self._failing_since >= self.spill_after_seconds or self._stop.is_set():
                    self._database_rests_until = now + self.spill_after_seconds
                    if self._spill(rows, len(batch)):
                        return
                if self._stop.is_set():
                    give_up_at = give_up_at or time.monotonic() + CLOSE_RETRY_SECONDS
                    if time.monotonic() > give_up_at:
                        self.dropped += len(batch)
                        log.error("prediction log: %d rows lost at shutdown: %s", len(batch), exc)
                        return
                if self.retries % 50 == 1:
                    log.warning("prediction log busy (%s); retrying %d rows", exc, len(batch))
                time.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)
            except sqlite3.Error:  # a bad row: no retry helps it; the others must not pay
                self._write_one_by_one(conn, batch)
                return

    def _spill(self, rows: Rows, count: int) -> bool:
        if not self.spill.add(rows):
            return False
        self.spilled += count
        if self.spilled == count or self.spilled // 10_000 > (self.spilled - count) // 10_000:
            log.warning("prediction log: database unavailable, %d rows spilled", self.spilled)
        return True

    def _write_one_by_one(self, conn: sqlite3.Connection, batch: list[Record]) -> None:
        for record in batch:
            try:
                _insert(conn, _rows([record]))
                self.written += 1
            except sqlite3.OperationalError:  # the database, not the row: the batch path
                self._write(conn, [record])
            except sqlite3.Error as exc:
                self.rejected += 1
                log.error("prediction log: request %s rejected: %s", record.request_id, exc)

    def _drain(self, conn: sqlite3.Connection) -> None:
        """Move the spill into the database, a file per transaction, oldest first; a
        file the database refuses now stays for the next successful commit."""
        for path in self.spill.waiting():
            rows, torn = self.spill.read(path)
            total = sum(len(batch) for batch in rows.values())
            try:
                _insert(conn, rows)
                refused = 0
            except sqlite3.OperationalError:  # not yet: spill on, try again in a while
                self.retries += 1
                self._database_rests_until = time.monotonic() + self.spill_after_seconds
                return
            except sqlite3.Error:  # a bad row among them: each row on its own
                refused = self._drain_one_by_one(conn, rows)
            self.written += total - refused
            self.rejected += torn
            self.spill.drained(path, total + torn)
            if torn:
                log.error("prediction log: %d torn lines in %s not written", torn, path.name)

    def _drain_one_by_one(self, conn: sqlite3.Connection, rows: Rows) -> int:
        """Insert spilled rows one at a time; returns how many were refused."""
        refused = 0
        for table, batch in rows.items():
            for row in batch:
                try:
                    _insert(conn, {table: [row]})
                except sqlite3.Error as exc:
                    refused += 1
                    self.rejected += 1
                    log.error("prediction log: spilled request %s rejected: %s", row[0], exc)
        return refused


def _rows(batch: Iterable[Record]) -> Rows:
    by_table: Rows = {}
    for record in batch:
        by_table.setdefault(TABLES[type(record)][0], []).append(record.row())
    return by_table


def _insert(conn: sqlite3.Connection, rows: Rows) -> None:
    # IMMEDIATE takes the write lock now, under the busy timeout; a deferred transaction
    # that upgrades from a read can get SQLITE_BUSY at once, without waiting.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, batch in rows.items():
            if batch:
                marks = ", ".join("?" * len(COLUMNS_OF[table]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)
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
        _insert(conn, _rows(batch))
    finally:
        conn.close()
    return len(batch)
