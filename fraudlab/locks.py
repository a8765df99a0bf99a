"""One process at a time: an exclusive lock on a file that names its holder.

flock, not a pid file: the kernel releases the lock when the holder dies, however it
dies, so a crash never leaves a stale lock to clean up by hand.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fraudlab.errors import FraudlabError


@contextmanager
def exclusive(path: Path, refused: Callable[[str], FraudlabError]) -> Iterator[None]:
    """Hold `path`'s lock for the block; if another process holds it, raise
    `refused(<its pid>)` before doing anything else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise refused(handle.read().strip() or "unknown") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(path: Path) -> int | None:
    """The pid holding `path`'s lock, or None when nobody does (-1: a holder that did
    not name itself)."""
    if not path.exists():
        return None
    with path.open() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
