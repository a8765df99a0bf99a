"""A slow, crashing or NaN-returning shadow model costs shadow coverage, never a caller's
answer or latency; one that holds the GIL changes no answer, and what it costs in
latency is measured. The faulty server (tests/serving/faulty_app.py) is the real app
whose challenger scorer can be made slow (50 ms a score), raise, return NaN or burn the
GIL; shadow queue of 20."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from serving.features import FeatureVector
from serving.prediction_log import ShadowRecord
from serving.scoring import ServingModel
from serving.shadow import ShadowJob, ShadowScorer
from tests.serving.conftest import Fleet, ServingWorld, logged_rows
from tests.serving.live_server import LiveServer

PAYMENTS = 120
LATENCY_SLACK_MS = 25.0  # half the injected 50 ms: a shadow on the request path would show
GIL_HOLD_MS_BOUND = 40.0  # a generous ceiling on one ~10 ms GIL hold on a busy machine


def _set_fault(server: LiveServer, mode: str) -> None:
    assert server.client.post("/_test/fault", json={"mode": mode}).json() == {"mode": mode}


Answers = tuple[list[tuple], list[float], list[str]]


def _timed_answers(server: LiveServer, payments: list[dict]) -> Answers:
    """Each payment's answer, its round trip in ms and its request id, one at a time."""
    answers, latencies, request_ids = [], [], []
    for payment in payments:
        started = time.perf_counter()
        response = server.score(payment)
        latencies.append((time.perf_counter() - started) * 1e3)
        assert response.status_code == 200, response.text
        body = response.json()
        answers.append((body["score"], body["decision"], body["model"], body["route"]))
        request_ids.append(body["request_id"])
    return answers, latencies, request_ids


def _p99(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 99))


def _gauge(server: LiveServer, name: str) -> float:
    for line in server.metrics().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _settled(server: LiveServer, name: str, at_least: float, timeout: float = 5.0) -> float:
    """A gauge once it reached `at_least` (the shadow thread may still be catching up)."""
    deadline = time.monotonic() + timeout
    while (value := _gauge(server, name)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.fixture
def faulty(fleet: Fleet):
    yield fleet.faulty
    deadline = time.monotonic() + 5  # let queued faulty jobs finish before the next test
    while _gauge(fleet.faulty, "fraudlab_shadow_queue_depth") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    _set_fault(fleet.faulty, "none")


@pytest.mark.parametrize("mode", ["slow", "crash", "nan"])
def test_a_broken_shadow_model_changes_no_answer_and_no_latency(
    fleet: Fleet, live_world: ServingWorld, faulty: LiveServer, mode: str
) -> None:
    payments = live_world.payments(PAYMENTS, skip=1_000)
    _timed_answers(faulty, payments[:10])  # warm both paths
    normal, normal_ms, _ = _timed_answers(fleet.api, payments)
    _set_fault(faulty, mode)
    errors_before = _gauge(faulty, "fraudlab_shadow_errors")
    dropped_before = _gauge(faulty, "fraudlab_shadow_dropped")
    broken, broken_ms, _ = _timed_answers(faulty, payments)
    assert broken == normal  # every request answered, each exactly as a healthy server does
    broken_p50, normal_p50 = statistics.median(broken_ms), statistics.median(normal_ms)
    print(f"{mode} shadow: p50 {broken_p50:.2f} ms vs healthy {normal_p50:.2f} ms")
    assert broken_p50 < normal_p50 + LATENCY_SLACK_MS
    if mode in ("crash", "nan"):  # a NaN is an error too, not a logged missing score
        errors = _settled(faulty, "fraudlab_shadow_errors", errors_before + PAYMENTS)
        assert errors - errors_before == PAYMENTS
    else:  # the queue of 20 fills faster than a 50 ms model drains it
        assert _gauge(faulty, "fraudlab_shadow_dropped") - dropped_before > 0


def test_a_shadow_model_holding_the_gil_changes_no_answer_and_its_cost_is_measured(
    live_world: ServingWorld, faulty: LiveServer
) -> None:
    """The shadow thread shares the interpreter: native code that never releases the
    GIL stalls the request thread for as long as one call holds it (a model that can do
    that belongs in a process of its own). It must still change no answer: before the
    shadow held off while a request was scored, back-to-back calls pushed a request's
    feature lookup past the online budget now and then (1 run in 6 here), and its
    answer became a fallback with another score."""
    payments = live_world.payments(PAYMENTS, skip=2_000)
    _timed_answers(faulty, payments[:10])  # warm
    healthy, healthy_ms, _ = _timed_answers(faulty, payments)
    _set_fault(faulty, "gil")
    held, held_ms, request_ids = _timed_answers(faulty, payments)
    assert held == healthy  # the same server, the same payments: the same answers
    shadowed = logged_rows(faulty.log_path, "shadow_scores", request_ids, timeout=1.0)
    assert shadowed and all(row["error"] is None for row in shadowed)  # it did run, slowly
    cost = _p99(held_ms) - _p99(healthy_ms)
    print(
        f"GIL-holding shadow (~10 ms a call): p50 {statistics.median(held_ms):.2f} ms, "
        f"p99 {_p99(held_ms):.2f} ms vs {statistics.median(healthy_ms):.2f} / "
        f"{_p99(healthy_ms):.2f} ms with a healthy shadow: p99 cost {cost:.1f} ms"
    )
    # One call's hold per request at most (one job runs while a request waits), not
    # the queue's twenty: the bound a request-path shadow would not meet under load.
    assert _p99(held_ms) < _p99(healthy_ms) + 2 * GIL_HOLD_MS_BOUND


def test_a_challenger_row_that_cannot_be_built_is_a_counted_shadow_error() -> None:
    """The challenger's row is assembled in the shadow worker, not on the request path:
    a feature missing from the champion's lookup is recorded there, never raised."""
    records: list[ShadowRecord] = []
    shadow = ShadowScorer(capacity=4, on_result=records.append)
    model = ServingModel(
        name="fraud-detector",
        version="7",
        features=["amount", "amount_eur"],  # the second is not in the lookup below
        feature_service="fraud_v2",
        review_threshold=0.5,
        decline_threshold=0.9,
        score=lambda row: float(np.clip(row.sum(), 0, 1)),
    )
    vector = FeatureVector(values={"amount": 0.3}, fallback=[])
    assert shadow.submit(ShadowJob("r1", model, vector))  # the request path: never raises
    shadow.close()
    assert (shadow.errors, shadow.scored, len(records)) == (1, 0, 1)
    assert records[0].request_id == "r1" and records[0].score is None
    assert records[0].error is not None and "amount_eur" in records[0].error
