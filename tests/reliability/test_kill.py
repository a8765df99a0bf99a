"""SIGKILL under load: the prediction log loses at most the answers of the last flush
interval (serving/prediction_log/writer.py documents the bound), and a server restarted on the
same home becomes ready, serves again and logs its new answers after the old ones.

Accounting by request id: every answer logged is one the client got, and every answer
lost is named and was given in the last flush interval (plus scheduling slack) before
the kill; nothing older is missing."""

from __future__ import annotations

import signal
import time

from serving.prediction_log import count_rows, rows_for_requests
from serving.prediction_log.record import PREDICTIONS
from tests.reliability._fixtures import (  # noqa: F401  (reliability_world is a fixture)
    FixedRateLoad,
    ReliabilityWorld,
    reliability_world,
    start_server,
)

KILL_RATE = 200.0  # requests/s while the server is killed
KILL_AFTER_SECONDS = 5.0
KILL_MARGIN_SECONDS = 0.5  # scheduling slack on a busy test machine, on top of the flush
AFTER_RESTART = 200  # requests sent to the restarted server
CLEAN_EXIT = (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its graceful shutdown


def _named(ids: list[str], shown: int = 12) -> str:
    return ", ".join(i[:8] for i in ids[:shown]) + (" ..." if len(ids) > shown else "")


def test_sigkill_under_load_then_restart_serves_again_and_loses_at_most_the_bound(
    reliability_world: ReliabilityWorld,  # noqa: F811
) -> None:
    world = reliability_world
    settings = world.server_settings("kill")
    server, _ = start_server(settings)
    try:
        # Runs past the kill, so the kill lands mid-stream; stopped right after it.
        with FixedRateLoad(server.url, world.payments, KILL_RATE, 2 * KILL_AFTER_SECONDS) as load:
            time.sleep(KILL_AFTER_SECONDS)
            killed_at = time.monotonic()
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            time.sleep(0.5)  # requests in flight fail now, not after the count
    finally:
        if server.running:
            server.stop(signal.SIGKILL)
    answered = load.answered
    logged = count_rows(server.log_path)
    flush = settings.serving.log_flush_seconds
    bound = KILL_RATE * (flush + KILL_MARGIN_SECONDS)
    answers = {o.request_id: o.sent_at + o.seconds for o in load.outcomes if o.request_id}
    rows = rows_for_requests(server.log_path, PREDICTIONS, list(answers))
    logged_ids = {row["request_id"] for row in rows}
    lost = sorted(set(answers) - logged_ids, key=answers.__getitem__)
    oldest_lost = max((killed_at - answers[i] for i in lost), default=0.0)

    restarted, restart_seconds = start_server(settings)
    try:
        payments = world.payments[-AFTER_RESTART:]
        statuses = [restarted.score(payment).status_code for payment in payments]
    finally:
        exit_code = restarted.stop()
    logged_after = count_rows(restarted.log_path)

    print(
        f"\nkill: {answered} answered in {KILL_AFTER_SECONDS:.0f} s at {KILL_RATE:.0f}/s, "
        f"{logged} logged, lost {answered - logged} (bound {bound:.0f}: "
        f"{KILL_RATE:.0f}/s x ({flush} s flush + {KILL_MARGIN_SECONDS} s)), "
        f"{len(load.failures)} requests unanswered around the kill; restart ready in "
        f"{restart_seconds:.1f} s, {statuses.count(200)}/{len(statuses)} answered after it, "
        f"{logged_after - logged} of them logged; the oldest lost answer was given "
        f"{oldest_lost:.2f} s before the kill; lost ids: {_named(lost)}"
    )
    # A row without a client answer is a request the kill cut off after it was logged.
    assert len(answers) == answered and logged - len(logged_ids) <= len(load.failures)
    assert oldest_lost <= flush + KILL_MARGIN_SECONDS  # only the last flush's answers
    assert answered > 0.8 * KILL_RATE * KILL_AFTER_SECONDS  # the load held its rate
    assert logged <= answered
    assert answered - logged <= bound
    assert statuses == [200] * AFTER_RESTART
    assert exit_code in CLEAN_EXIT, restarted.tail()
    assert logged_after == logged + AFTER_RESTART  # new answers logged after the old ones
