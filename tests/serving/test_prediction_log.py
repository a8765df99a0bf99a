"""The prediction log holds every answered request, with what monitoring needs: after
a clean shutdown exactly as many rows as answers; after a hard kill, at most the last
`log_flush_seconds` of answers lost. Runs after test_api and test_model_swap: it stops
the plain server (SIGTERM) and kills the swap server (SIGKILL)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from serving.prediction_log import count_rows
from serving.prediction_log.record import SHADOW_SCORES
from tests.serving.conftest import CLEAN_EXIT, Fleet, ServingWorld, logged_rows

KILL_RATE = 200.0  # requests/s sent while the server is killed
KILL_MARGIN_SECONDS = 0.5  # scheduling slack on a busy test machine, on top of the flush


def test_each_answer_is_logged_with_its_features_versions_and_route(
    fleet: Fleet, live_world: ServingWorld
) -> None:
    answers = [fleet.plain.score(p).json() for p in live_world.payments(20, skip=2_000)]
    rows = logged_rows(fleet.plain.log_path, "predictions", [a["request_id"] for a in answers])
    by_id = {row["request_id"]: row for row in rows}
    assert len(by_id) == len(answers)
    for answer in answers:
        row = by_id[answer["request_id"]]
        assert row["transaction_id"] == answer["transaction_id"]
        assert (row["score"], row["decision"]) == (answer["score"], answer["decision"])
        assert (row["route"], row["model_alias"]) == ("champion", "champion")
        assert row["model_version"] == row["champion_version"] == live_world.champion
        assert row["challenger_version"] == live_world.challenger
        features = json.loads(row["features"])
        assert len(features) == 18 and features["amount"] == row["amount"]
        assert row["total_ms"] >= row["features_ms"] + row["model_ms"] > 0


def test_a_clean_shutdown_flushes_every_answered_request(
    fleet: Fleet, live_world: ServingWorld
) -> None:
    server = fleet.plain
    for payment in live_world.payments(150, skip=2_100):
        assert server.score(payment).status_code == 200
    # The writer's own account, on /metrics (finding 5): every row in the file, answers
    # and shadow scores, and nothing dropped or rejected.
    time.sleep(4 * live_world.settings.serving.log_flush_seconds)
    metrics = server.metrics()
    in_file = count_rows(server.log_path) + count_rows(server.log_path, SHADOW_SCORES)
    assert _sample(metrics, 'fraudlab_prediction_log_rows{outcome="written"}') == in_file
    for shed in ("dropped", "rejected"):
        assert _sample(metrics, f'fraudlab_prediction_log_rows{{outcome="{shed}"}}') == 0
    assert server.stop(signal.SIGTERM) in CLEAN_EXIT
    assert count_rows(server.log_path) == server.answered  # every one, not one more


def test_a_hard_kill_loses_at_most_the_last_flush_interval(
    fleet: Fleet, live_world: ServingWorld
) -> None:
    server = fleet.swap
    payments = live_world.payments(800, skip=3_000)  # 4 s of traffic; killed after 1.5 s
    before = count_rows(server.log_path)
    assert before == server.answered  # the writer has caught up before we start
    answered = 0

    def send() -> None:
        nonlocal answered
        with httpx.Client(base_url=server.url, timeout=2.0) as client:
            start = time.monotonic()
            for i, payment in enumerate(payments):
                time.sleep(max(0.0, start + i / KILL_RATE - time.monotonic()))
                try:
                    answered += client.post("/v1/score", json=payment).status_code == 200
                except httpx.HTTPError:
                    return

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.5)
    server.stop(signal.SIGKILL)
    sender.join(timeout=10)
    logged = count_rows(server.log_path) - before
    flush = server.settings.serving.log_flush_seconds
    bound = KILL_RATE * (flush + KILL_MARGIN_SECONDS)
    print(f"hard kill: {answered} answered, {logged} logged, lost {answered - logged} <= {bound}")
    assert answered > 50  # the kill landed mid-stream
    assert logged <= answered
    assert answered - logged <= bound


def _sample(metrics: str, series: str) -> float:
    (value,) = [line.split()[-1] for line in metrics.splitlines() if line.startswith(series + " ")]
    return float(value)
