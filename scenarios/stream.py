"""The production update path inside a scenario: each scored payment goes to a Redis
stream, and a real `fraudlab stream worker` child process applies it to the velocity
state (serving/payment_stream.py). A story can kill the worker and start it again.

Replayed faster than live, even a healthy worker would trail by simulated minutes,
though live it trails by milliseconds while a card's payments come minutes apart. So
after each wave of payments (client/replay.py) the replay gives a running worker the
time it would have had live: it waits until every event sent so far is applied. A
killed worker gets no wait, and its lag grows in service time, as it would live.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fraudlab.errors import ServiceUnavailable
from fraudlab.redis_client import redis_client
from fraudlab.settings import Settings
from serving.payment_stream import all_streams, stream_lag
from serving.velocity_state import KINDS

# A running worker applies a wave in milliseconds; past this, the runner sends the next
# wave anyway (counted in `stalls`) and those answers are served stale. CI on 7057ff5
# failed the stream-worker-stopped story on two stale answers before the injection (74 s
# against the 60 s objective, day 0), as a wave sent after a stalled catch-up would be, on
# a machine shared with the drift story: 10 s was too short a wait there.
CATCH_UP_TIMEOUT_SECONDS = 60.0


def stream_settings(run_name: str) -> dict[str, Any]:
    """The run's `stream` settings: its own streams, and the lag read often enough for
    a replay that runs a simulated day in seconds."""
    return {
        "linger_ms": 0,  # the replay waits for the worker after every wave: no batching
        "updates": "stream",
        "prefix": f"fraudlab-scenario:{run_name}",
        "lag_refresh_seconds": 0.02,
    }


class StreamWorkerProcess:
    """One `fraudlab stream worker` for every shard of the run's streams."""

    def __init__(self, settings: Settings, env: dict[str, str], log_file: Path) -> None:
        self.settings = settings
        self.env = env
        self.log_file = log_file
        self.client = redis_client(settings.stream_redis_connection, timeout_seconds=5.0)
        self.streams = all_streams(settings)
        self.process: subprocess.Popen[bytes] | None = None
        self.sent = 0  # payments answered since the run began (each is one event per kind)
        self.stalls = 0  # waves after which a running worker did not catch up in time

    def check_reachable(self) -> None:
        try:
            self.client.ping()
        except Exception as exc:
            raise ServiceUnavailable(
                f"this story runs the payment stream on Redis at "
                f"{self.settings.stream_redis_connection} ({type(exc).__name__}: {exc}); "
                "start Redis there (redis-server --port 6379) or set stream.redis_connection"
            ) from exc

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        out = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fraudlab", "stream", "worker"],
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()  # the child holds its own handle

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush; what it held stays pending in the stream."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def catch_up(self, next_wave: list[dict[str, Any]]) -> None:
        """Before a wave goes out, a running worker applies every event sent so far."""
        if self.alive:
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_SECONDS
            while not self.applied_all():
                if time.monotonic() > deadline:
                    self.stalls += 1
                    break
                time.sleep(0.002)
        self.sent += len(next_wave)

    def applied_all(self) -> bool:
        """Every answered payment's events are on the streams and acknowledged."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xlen(stream)
        on_streams = sum(int(n) for n in pipe.execute())
        if on_streams < self.sent * len(KINDS):
            return False  # the API's publisher has not sent them all yet
        return stream_lag(self.client, self.streams).pending_events == 0

    def lag_seconds(self) -> float:
        return stream_lag(self.client, self.streams).seconds

    def close(self) -> None:
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(Exception):  # the run's streams go with the run
            self.client.delete(*self.streams)
