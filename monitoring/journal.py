"""The action journal and the monitor lock: what makes a policy action safe to crash.

Before an action touches the registry or the API, its intent is appended here (which
action, on which judged version); after, whether it finished or failed. A run that
finds an intent with neither (the monitor died mid-action) finishes that action first:
every action is written to be resumed (monitoring/actions.py compares the registry
with the version it judged before each step, so a step already done is not repeated).

One monitor at a time: `monitor_lock` holds an exclusive lock on a file beside the
journal for the whole run; a second monitor on the same home refuses to start.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from fraudlab import locks
from fraudlab.errors import FraudlabError

log = logging.getLogger(__name__)
State = Literal["intent", "done", "failed"]


class MonitorBusy(FraudlabError):
    """Another monitor run holds this home's lock."""


@dataclass(frozen=True)
class Entry:
    id: str
    action: str
    judged: str | None  # the model version the finding judged (compare-and-set)
    job: str
    at: str  # monitor time (ISO 8601)
    state: State
    detail: str = ""


class ActionJournal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[Entry]:
        return [Entry(**raw) for raw in read_json_lines(self.path)]

    def begin(self, action: str, judged: str | None, job: str, now: pd.Timestamp) -> Entry:
        entry = Entry(uuid.uuid4().hex, action, judged, job, now.isoformat(), "intent")
        self._write(entry)
        return entry

    def finish(self, entry: Entry, ok: bool, detail: str) -> None:
        state: State = "done" if ok else "failed"
        self._write(Entry(**{**asdict(entry), "state": state, "detail": detail}))

    def interrupted(self) -> list[Entry]:
        """Intents that never finished: the monitor stopped between their steps."""
        latest: dict[str, Entry] = {}
        for entry in self.entries():
            latest[entry.id] = entry
        return [e for e in latest.values() if e.state == "intent"]

    def last_done(self, action: str) -> pd.Timestamp | None:
        """Monitor time of the latest action of this kind that finished (a failed one
        starts no cool-down: it is tried again)."""
        done = [e.at for e in self.entries() if e.action == action and e.state == "done"]
        return pd.Timestamp(max(done)) if done else None

    def _write(self, entry: Entry) -> None:
        append_json_line(self.path, asdict(entry))


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every whole JSON line; a torn one (a write cut short by a crash or a full disk)
    is skipped with a warning instead of breaking every later run."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d is not whole JSON (a torn write?); skipped", path, number)
    return rows


def append_json_line(path: Path, row: dict[str, Any], durable: bool = True) -> None:
    """Append one line and fsync it (unless not `durable`: a line whose loss in a
    crash costs nothing); a torn last line left by a crash is ended first, so it stays
    one bad line instead of corrupting this one too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write((json.dumps(row, default=str) + "\n").encode())
        handle.flush()
        if durable:
            os.fsync(handle.fileno())


def monitor_lock(folder: Path) -> AbstractContextManager[None]:
    """Exclusive for the run; released by the kernel if the process dies."""
    path = folder / "monitor.lock"
    return locks.exclusive(
        path,
        lambda pid: MonitorBusy(
            f"another monitor run holds {path} (pid {pid}); one monitor at a time"
        ),
    )
