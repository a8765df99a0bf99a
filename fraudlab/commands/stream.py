"""`fraudlab stream worker|lag`: the payment stream that keeps the velocity state."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np
import typer

from fraudlab.console import console, user_errors
from fraudlab.errors import ConfigError
from fraudlab.settings import Settings, get_settings

if TYPE_CHECKING:
    from serving.velocity_state import PaymentStates

app = typer.Typer(
    help="Apply scored payments to the velocity state (the production profile's stream).",
    no_args_is_help=True,
)
REGISTRY_WAIT_SECONDS = 2.0


@app.command("worker")
@user_errors
def worker(
    index: int = typer.Option(0, min=0, help="This worker's number, 0..count-1."),
    count: int = typer.Option(None, min=1, help="Workers in all [settings: stream.workers]."),
) -> None:
    """Apply payment events from Redis Streams to the online store's payment state.

    Runs until SIGTERM or Ctrl-C. Worker i of n owns the streams whose
    shard % n == i, so each customer's and terminal's state has one writer; events are
    acknowledged once written, and a restarted worker first re-applies what it had been
    given but not acknowledged (the merge is idempotent, so that is safe)."""
    from serving.payment_stream import StreamWorker, WorkerProgress

    settings = get_settings()
    count = count or settings.stream.workers
    if index >= count:
        raise ConfigError(f"--index {index} must be below --count {count}")
    states = _wait_for_state_views(settings)
    stream_worker = StreamWorker(settings, states, index, count)

    def stop(signum: int, frame: FrameType | None) -> None:
        stream_worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    console.print(
        f"stream worker {index + 1} of {count}: {len(stream_worker.streams)} streams "
        f"under {settings.stream.prefix}:*"
    )
    last = [time.monotonic()]

    def report(progress: WorkerProgress) -> None:
        if time.monotonic() - last[0] >= 10:
            console.print(f"applied {progress.events:,} events")
            last[0] = time.monotonic()

    done = stream_worker.run(report)
    lag = ""
    if done.lags_ms:
        p50, p99 = np.percentile(np.fromiter(done.lags_ms, dtype=np.float64), [50, 99])
        lag = f"; event to online store, wall clock: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    console.print(f"stopped after {done.events:,} events ({done.rows_written:,} state rows){lag}")


def _wait_for_state_views(settings: Settings) -> PaymentStates:
    """The stack starts before `features apply` has run: wait for the registry."""
    from features.store import open_store
    from serving.velocity_state import PaymentStates

    said = False
    while True:
        try:
            return PaymentStates(open_store(settings, single_writer=True))
        except Exception as exc:  # Feast raises its own not-found types per registry
            if not said:
                console.print(
                    f"waiting for the payment-state views ({exc}); run `fraudlab features apply`"
                )
                said = True
            time.sleep(REGISTRY_WAIT_SECONDS)


@app.command("lag")
@user_errors
def lag() -> None:
    """How far the stream workers are behind.

    The age of the oldest event not yet applied (against the newest published one's
    served time), and the events not yet applied."""
    from fraudlab.redis_client import redis_client
    from serving.payment_stream import all_streams, stream_lag

    settings = get_settings()
    client = redis_client(settings.stream_redis_connection, timeout_seconds=2)
    behind = stream_lag(client, all_streams(settings))
    console.print(f"lag {behind.seconds:.3f} s, {behind.pending_events:,} events pending")
