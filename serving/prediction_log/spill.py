"""The prediction log's spill: rows the database would not take (locked by another
process, or its disk full), kept as JSON lines in files of this writer's own until it
takes them again.

A spill file holds table rows exactly as they would be inserted, one `[table, row]`
per line, appended one batch per write. A write that fails part-way (the spill's disk
is full too) is cut back to where it began, so a file never holds half a batch: every
row is either in the spill or still in the writer's memory, never both.

Files are named `spill-<pid>-<token>.jsonl` under one folder. A writer that starts
claims, by an atomic rename, the files of writers no longer running (a killed server's,
or a worker of the same server before a restart) and drains them with its own: what a
server had spilled when it stopped is not lost, it is written by its successor.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
Rows = dict[str, list[tuple[Any, ...]]]  # table -> rows in column order


class Spill:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = self._new_name()
        self.rows = 0  # rows spilled and not yet drained, over this writer's files
        self._files: list[Path] = []
        for orphan in sorted(folder.glob("spill-*.jsonl")):
            self._claim(orphan)

    def add(self, rows: Rows) -> bool:
        """Append one batch; False (nothing kept) when the spill cannot be written."""
        lines = "".join(
            json.dumps([table, list(row)]) + "\n" for table, batch in rows.items() for row in batch
        )
        count = sum(len(batch) for batch in rows.values())
        try:
            # Unbuffered: a buffered file writes what it still holds when it is closed,
            # after the truncate below, and a full disk then left a part of the batch
            # behind, counted nowhere and drained a second time (found when the log's
            # index moved where the disk filled up: tests/serving/test_prediction_log_faults).
            with self.path.open("ab", buffering=0) as out:
                start = out.seek(0, os.SEEK_END)
                try:
                    left = memoryview(lines.encode())
                    while left:
                        left = left[out.write(left) :]
                except OSError:
                    out.truncate(start)  # frees what was written: no half batch stays
                    raise
        except OSError as exc:
            log.error("prediction log: could not spill %d rows to %s: %s", count, self.path, exc)
            return False
        if self.path not in self._files:
            self._files.append(self.path)
        self.rows += count
        return True

    def waiting(self) -> list[Path]:
        return list(self._files)

    def read(self, path: Path) -> tuple[Rows, int]:
        """A file's rows by table, and how many lines could not be read (a torn line
        from a crash mid-write: counted by the caller as rejected, never silent)."""
        rows: Rows = {}
        torn = 0
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    table, row = json.loads(line)
                except ValueError:
                    torn += 1
                    continue
                rows.setdefault(table, []).append(tuple(row))
        return rows, torn

    def drained(self, path: Path, count: int) -> None:
        """`path`'s rows are in the database now: forget it."""
        path.unlink(missing_ok=True)
        self._files.remove(path)
        self.rows -= count
        if path == self.path:  # a fresh file next time, never one a reader may hold
            self.path = self._new_name()

    def _new_name(self) -> Path:
        return self.folder / f"spill-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"

    def _claim(self, orphan: Path) -> None:
        try:
            owner = int(orphan.name.split("-")[1])
        except (IndexError, ValueError):
            return
        if owner != os.getpid() and _running(owner):
            return  # a live writer's: it drains it itself
        claimed = self._new_name()
        try:
            os.rename(orphan, claimed)  # atomic: of two claimants, one gets it
        except FileNotFoundError:
            return
        rows, torn = self.read(claimed)
        self._files.append(claimed)
        self.rows += sum(len(batch) for batch in rows.values()) + torn
        log.warning("prediction log: took over %s from stopped writer %d", orphan.name, owner)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True
