"""Issue 11, finding 5: the prediction log's writer under faults, against a real SQLite
file. One row the database refuses costs that row, not its batch; a database locked by
another process spills to a file and is drained when the lock goes, every row written
once; a spill left by a killed writer is drained by the next one; a full disk (a
file-size limit, in a child process) fills the spill and a bounded buffer and then
sheds what does not fit, counted, and every record ends written or counted as dropped."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from serving.prediction_log import PredictionLog, PredictionRecord, count_rows
from serving.prediction_log.reader import rows_for_requests
from serving.prediction_log.record import PREDICTIONS


def record(i: int, score: float = 0.1) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r{i:05d}",
        transaction_id=f"t{i}",
        event_timestamp=datetime(2026, 3, 1, tzinfo=UTC),
        served_at=datetime(2026, 3, 1, tzinfo=UTC),
        customer_id=i,
        terminal_id=1,
        amount=10.0,
        route="champion",
        model_alias="champion",
        model_version="1",
        score=score,
        decision="approve",
        model_decision="approve",
        champion_version="1",
        challenger_version=None,
        fallback_features=[],
        features={f"f{k}": float(k) for k in range(18)},
        features_ms=0.3,
        model_ms=0.05,
        total_ms=1.0,
    )


def test_a_row_the_database_refuses_costs_that_row_not_its_batch(tmp_path: Path) -> None:
    """A NaN score meets NOT NULL: before, the whole batch of 500 was dropped."""
    path = tmp_path / "log.sqlite"
    log = PredictionLog(path, flush_seconds=0.05, batch_rows=500)
    records = [record(i, score=float("nan") if i == 7 else 0.1) for i in range(40)]
    for r in records:
        log.append(r)
    log.close()
    ids = {r.request_id for r in records}
    logged = {row["request_id"] for row in rows_for_requests(path, PREDICTIONS, sorted(ids))}
    assert logged == ids - {"r00007"}
    assert log.counts() == {
        "written": 39,
        "retried": 0,
        "spilled": 0,
        "in_spill": 0,
        "rejected": 1,
        "dropped": 0,
    }


FULL_DISK = """
import json, resource, signal, sys, time
from pathlib import Path
from tests.serving.test_prediction_log_faults import record
from serving.prediction_log import PredictionLog, create_log

path, appended, bound = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
create_log(path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not kills
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))  # every file: 256 KB
log = PredictionLog(
    path, flush_seconds=0.02, batch_rows=50, max_pending=bound, spill_after_seconds=0.1
)
highest = 0
for i in range(appended):
    log.append(record(i))
    highest = max(highest, log.pending())
    if i % 50 == 0:
        time.sleep(0.01)
time.sleep(1.0)  # the writer retries against the full disk
during = dict(log.counts(), pending=log.pending(), highest=highest)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
log.close()
print(json.dumps({"during": during, "after": log.counts()}))
"""


def test_a_full_disk_fills_a_bounded_buffer_then_sheds_and_counts(tmp_path: Path) -> None:
    """Before: a full disk was retried as "busy" forever while the buffer grew without
    bound (every record of the run held in memory), with nothing counted."""
    path, appended, bound = tmp_path / "log.sqlite", 3_000, 400
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path), str(appended), str(bound)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seconds = time.monotonic() - started
    result = json.loads(done.stdout.splitlines()[-1])
    during, after = result["during"], result["after"]
    written = count_rows(path)
    print(f"full disk: {during}; after space returned: {after}; {seconds:.1f} s")
    assert during["retried"] > 0  # the disk was full, and the writer kept trying
    assert during["spilled"] > 0  # until the spill (on the same full disk) was full too
    assert during["highest"] <= bound  # memory stayed bounded
    assert during["dropped"] > 0
    assert after["in_spill"] == 0  # space again: the spill was drained at close
    assert after["written"] == written  # every written record is in the file
    assert after["written"] + after["dropped"] + after["rejected"] == appended
    ids = [f"r{i:05d}" for i in range(appended)]
    assert len({row["request_id"] for row in rows_for_requests(path, PREDICTIONS, ids)}) == written


def _ids(path: Path, n: int) -> list[str]:
    ids = [f"r{i:05d}" for i in range(n)]
    return [row["request_id"] for row in rows_for_requests(path, PREDICTIONS, ids)]


def test_a_locked_database_spills_then_drains_every_row_once(tmp_path: Path) -> None:
    """Another process holds the write lock (a backup, a sqlite3 shell in a
    transaction): before, the buffer filled to its bound and the rest was shed."""
    path, appended, bound = tmp_path / "log.sqlite", 3_000, 2_000
    log = PredictionLog(
        path,
        flush_seconds=0.02,
        batch_rows=50,
        max_pending=bound,
        spill_after_seconds=0.5,  # the database rests this long after each failed try
        busy_seconds=0.05,
    )
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the lock, for the whole of the traffic below
    try:
        for i in range(appended):
            log.append(record(i))
            if i % 40 == 0:
                time.sleep(0.02)  # ~2,000 a second, over about 1.5 s
        time.sleep(0.3)
        during = log.counts()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # One more, then shutdown at once: while the writer still rests the database it
    # spills this one too, and shutdown must still drain the spill into the free log.
    log.append(record(appended))
    log.close()
    after = log.counts()
    print(f"locked database: {during}; after the lock went: {after}")
    assert during["written"] == 0 and during["spilled"] > bound  # more than memory held
    assert during["dropped"] == 0
    logged = _ids(path, appended + 1)
    assert sorted(logged) == [f"r{i:05d}" for i in range(appended + 1)]  # each exactly once
    assert after["written"] == appended + 1 and after["in_spill"] == 0
    assert list(log.spill.folder.iterdir()) == []  # drained, nothing left behind


KILLED_WHILE_SPILLING = """
import os, signal, sqlite3, sys, time
from pathlib import Path
from tests.serving.test_prediction_log_faults import record
from serving.prediction_log import PredictionLog, create_log

path, appended = Path(sys.argv[1]), int(sys.argv[2])
create_log(path)
log = PredictionLog(path, 0.02, 50, spill_after_seconds=0.05, busy_seconds=0.05)
holder = sqlite3.connect(path, isolation_level=None)
holder.execute("BEGIN EXCLUSIVE")
for i in range(appended):
    log.append(record(i))
deadline = time.monotonic() + 30
while log.counts()["spilled"] < appended and time.monotonic() < deadline:
    time.sleep(0.01)
print(log.counts(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush: the spill is all there is
"""


def test_a_spill_left_by_a_killed_writer_is_drained_by_the_next_one(tmp_path: Path) -> None:
    path, appended = tmp_path / "log.sqlite", 500
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_SPILLING, str(path), str(appended)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert f"'spilled': {appended}" in killed.stdout, killed.stdout
    assert count_rows(path) == 0  # nothing reached the database before the kill
    successor = PredictionLog(path, flush_seconds=0.02, batch_rows=50)
    assert successor.counts()["in_spill"] == appended  # taken over at start
    deadline = time.monotonic() + 10
    while successor.counts()["in_spill"] and time.monotonic() < deadline:
        time.sleep(0.02)
    successor.close()
    assert sorted(_ids(path, appended)) == [f"r{i:05d}" for i in range(appended)]
    assert successor.counts()["written"] == appended
