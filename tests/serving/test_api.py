"""POST /v1/score and friends on a real server: answers, validation, fallback, canary
routing, shadow scoring, health and metrics, admin auth."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraudlab.commands.monitor import logged_now
from fraudlab.settings import ServingSettings
from serving.exploration import Exploration
from tests.serving.conftest import (
    ADMIN_TOKEN,
    EXPLORATION_SHARE,
    LATENESS,
    Fleet,
    ServingWorld,
    logged_rows,
)

MAX_LEAD_SECONDS = ServingSettings().max_payment_lead_seconds

ENTITY_FEATURES = {
    "customer": [f"customer_{k}_{w}d" for k in ("tx_count", "mean_amount") for w in (1, 7, 30)],
    "terminal": [f"terminal_{k}_{w}d" for k in ("tx_count", "fraud_rate") for w in (1, 7, 30)],
}
UNKNOWN_ID = 10**12


@pytest.fixture
def payment(live_world: ServingWorld) -> dict:
    return live_world.payments(1)[0]


@pytest.fixture
def routing(fleet: Fleet):
    """Change the api server's routing for one test; restored afterwards."""

    def change(**update: object) -> dict:
        response = fleet.api.admin("/admin/routing", ADMIN_TOKEN, update)
        assert response.status_code == 200, response.text
        return response.json()

    yield change
    change(canary_share=0.0, shadow=True, breaker="off")


def _decided(body: dict) -> tuple:
    return body["transaction_id"], body["score"], body["decision"], body["model"], body["route"]


def test_known_payment_is_scored_by_the_champion(
    fleet: Fleet, live_world: ServingWorld, payment: dict
) -> None:
    response = fleet.api.score(payment)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["score"] <= 1.0
    assert body["decision"] in ("approve", "review", "decline")
    assert body["model"] == {
        "name": "fraud-detector",
        "version": live_world.champion,
        "alias": "champion",
    }
    assert body["route"] == "champion"
    assert len(body["request_id"]) == 32 and body["transaction_id"] == payment["transaction_id"]
    assert body["fallback"] is False and body["fallback_features"] == []


def test_scoring_is_deterministic_and_ignores_the_transaction_id(
    fleet: Fleet, payment: dict
) -> None:
    first = fleet.api.score(payment).json()
    renamed = fleet.api.score(payment | {"transaction_id": "another-id.1"}).json()
    assert renamed["score"] == first["score"] and renamed["decision"] == first["decision"]
    assert renamed["request_id"] != first["request_id"]


BAD_FIELDS = [
    ("amount", -5.0),
    ("amount", 0),
    ("amount", 1e6),
    ("amount", 1e300),
    ("amount", "NaN"),
    ("amount", "lots"),
    ("timestamp", "2026-03-07T10:00:00"),  # naive: no timezone
    ("timestamp", "1990-03-07T10:00:00Z"),
    ("timestamp", "yesterday"),
    ("timestamp", 1772877600),  # a bare number: seconds or milliseconds? Refused, not guessed
    ("transaction_id", "x" * 65),
    ("transaction_id", "drop table;"),
    ("transaction_id", ""),
    ("customer_id", -1),
    ("customer_id", 2**63),
    ("terminal_id", 1.5),
    ("customer_id", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_each_invalid_field_is_refused_with_422_naming_it(
    fleet: Fleet, payment: dict, field: str, value: object
) -> None:
    response = fleet.api.score(payment | {field: value})
    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["detail"]] == [field]


def _stamped(payment: dict, at: pd.Timestamp) -> dict:
    return payment | {"timestamp": at.isoformat()}


def test_a_payment_from_the_future_is_refused_and_moves_no_monitor_clock(
    fleet: Fleet, live_world: ServingWorld, payment: dict
) -> None:
    """Issue 11, finding 4: the API took any instant up to 2100, and the monitor's "now"
    was the largest payment timestamp logged, so one payment dated 2099 moved every
    later run's window (and its actions' cool-downs) to 2099."""
    clock, lead = live_world.clock, pd.Timedelta(seconds=MAX_LEAD_SECONDS)
    refused_before = _refused_payments(fleet.api.metrics())
    for at in (pd.Timestamp("2099-06-01", tz="UTC"), clock + lead + pd.Timedelta(seconds=1)):
        response = fleet.api.score(_stamped(payment, at))
        assert response.status_code == 422, response.text
        (problem,) = response.json()["detail"]
        assert problem["field"] == "timestamp" and "after the service clock" in problem["message"]
    too_late = clock - LATENESS - pd.Timedelta(seconds=1)
    response = fleet.api.score(_stamped(payment, too_late))
    assert response.status_code == 422 and "before the service clock" in response.text
    assert _refused_payments(fleet.api.metrics()) == refused_before + 3
    # A gateway's clock a little ahead of ours is accepted, and logged at ours.
    ahead = fleet.api.score(_stamped(payment, clock + lead - pd.Timedelta(seconds=1)))
    assert ahead.status_code == 200, ahead.text
    (row,) = logged_rows(fleet.api.log_path, "predictions", [ahead.json()["request_id"]])
    assert pd.Timestamp(row["served_at"]) == clock
    assert logged_now(fleet.api.settings) == clock + pd.Timedelta(microseconds=1)


def _refused_payments(metrics: str) -> float:
    (family,) = [
        f for f in text_string_to_metric_families(metrics) if f.name.endswith("refused_payments")
    ]
    return sum(s.value for s in family.samples if s.name.endswith("_total"))


def test_the_held_clock_is_visible_and_guarded(fleet: Fleet, live_world: ServingWorld) -> None:
    state = fleet.api.client.get("/admin/clock", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert state.status_code == 200
    assert state.json() == {
        "now": live_world.clock.isoformat().replace("+00:00", "Z"),
        "held": True,
        "max_lead_seconds": MAX_LEAD_SECONDS,
        "max_lateness_seconds": LATENESS.total_seconds(),
    }
    wrong = fleet.api.client.put("/admin/clock", json={"now": "2099-01-01T00:00:00Z"})
    assert wrong.status_code == 401
    for bad in ({"now": 1772877600}, {"now": "2026-03-07T10:00:00"}, {"when": "x"}):
        response = fleet.api.client.put(
            "/admin/clock", json=bad, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 422, (bad, response.text)


def test_nan_written_as_a_bare_json_token_is_refused(fleet: Fleet, payment: dict) -> None:
    raw = '{"transaction_id": "t1", "customer_id": 1, "terminal_id": 2, "amount": NaN, '
    raw += f'"timestamp": "{payment["timestamp"]}"}}'
    response = fleet.api.score(content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert [p["field"] for p in response.json()["detail"]] == ["amount"]


def test_missing_and_unknown_fields_are_named(fleet: Fleet, payment: dict) -> None:
    missing = {k: v for k, v in payment.items() if k != "terminal_id"}
    response = fleet.api.score(missing)
    assert response.status_code == 422
    assert [p["field"] for p in response.json()["detail"]] == ["terminal_id"]
    response = fleet.api.score(payment | {"merchant": "acme"})
    assert response.status_code == 422
    assert [p["field"] for p in response.json()["detail"]] == ["merchant"]


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"amount": 3', ""])
def test_a_body_that_is_not_a_json_payment_is_refused_with_422(fleet: Fleet, raw: str) -> None:
    response = fleet.api.score(content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["detail"]] == ["body"]


def test_a_body_over_the_limit_is_refused_with_413(fleet: Fleet, payment: dict) -> None:
    padded = payment | {"transaction_id": "x" * fleet.api.settings.serving.max_body_bytes}
    response = fleet.api.score(padded)
    assert response.status_code == 413


def test_a_streamed_body_over_the_limit_is_refused_with_413(fleet: Fleet) -> None:
    """No Content-Length to refuse up front: the limit is counted as the body arrives."""
    chunks = (b"x" * 1_024 for _ in range(8))
    response = fleet.api.score(content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_customer_and_terminal_fall_back_explicitly(fleet: Fleet, payment: dict) -> None:
    response = fleet.api.score(payment | {"customer_id": UNKNOWN_ID, "terminal_id": UNKNOWN_ID})
    assert response.status_code == 200
    body = response.json()
    assert body["fallback"] is True
    assert sorted(body["fallback_features"]) == sorted(
        f for names in ENTITY_FEATURES.values() for f in names
    )
    assert 0.0 <= body["score"] <= 1.0
    only_terminal = fleet.api.score(payment | {"terminal_id": UNKNOWN_ID}).json()
    assert sorted(only_terminal["fallback_features"]) == sorted(ENTITY_FEATURES["terminal"])


def test_canary_share_routes_that_share_of_customers_stickily(
    fleet: Fleet, live_world: ServingWorld, routing
) -> None:
    firsts = live_world.future.drop_duplicates("customer_id").head(300).index
    payments = [live_world.payments(1, skip=int(i))[0] for i in firsts]
    assert routing(canary_share=0.3) == {"canary_share": 0.3, "shadow": True, "breaker": "off"}
    routes = {p["customer_id"]: fleet.api.score(p).json() for p in payments}
    canary = [c for c, body in routes.items() if body["route"] == "canary"]
    assert abs(len(canary) / len(routes) - 0.3) < 0.08
    for body in routes.values():
        expected = ("challenger", live_world.challenger) if body["route"] == "canary" else None
        if expected:
            assert (body["model"]["alias"], body["model"]["version"]) == expected
    for payment in payments[:100]:  # the same customer gets the same model every time
        again = fleet.api.score(payment | {"transaction_id": "again"}).json()
        assert again["route"] == routes[payment["customer_id"]]["route"]


def test_shadow_never_changes_the_answer_and_logs_challenger_scores(
    fleet: Fleet, live_world: ServingWorld, routing
) -> None:
    payments = live_world.payments(40, skip=400)
    with_shadow = [fleet.api.score(p).json() for p in payments]
    assert routing(shadow=False)["shadow"] is False
    without = [fleet.api.score(p).json() for p in payments]
    assert [_decided(b) for b in with_shadow] == [_decided(b) for b in without]
    shadowed = logged_rows(
        fleet.api.log_path, "shadow_scores", [b["request_id"] for b in with_shadow]
    )
    assert len(shadowed) == len(payments)
    for row in shadowed:
        assert row["model_version"] == live_world.challenger and row["error"] is None
        assert 0 <= row["score"] <= 1
    off = [b["request_id"] for b in without]
    assert logged_rows(fleet.api.log_path, "shadow_scores", off, timeout=0.5) == []


def test_a_tripped_breaker_serves_declines_as_reviews_and_logs_the_models_own(
    fleet: Fleet, live_world: ServingWorld, routing
) -> None:
    payments = [  # large amounts: the model declines these outright
        p | {"amount": 9_000.0, "transaction_id": f"large-{i}"}
        for i, p in enumerate(live_world.payments(20, skip=700))
    ]
    before = [fleet.api.score(p).json() for p in payments]
    assert sum(b["decision"] == "decline" for b in before) >= 10
    assert routing(breaker="review_instead_of_decline")["breaker"] == "review_instead_of_decline"
    during = [fleet.api.score(p).json() for p in payments]
    assert [b["score"] for b in during] == [b["score"] for b in before]  # the model is the same
    assert [b["decision"] for b in during] == [
        "review" if b["decision"] == "decline" else b["decision"] for b in before
    ]
    rows = logged_rows(fleet.api.log_path, "predictions", [b["request_id"] for b in during])
    served_as_review = [r for r in rows if r["model_decision"] == "decline"]
    assert len(served_as_review) >= 10 and all(r["decision"] == "review" for r in served_as_review)
    assert {r["propensity"] for r in rows} == {1.0}  # no exploration on this server
    metrics = fleet.api.client.get("/metrics").text
    assert "fraudlab_breaker_tripped 1.0" in metrics
    assert 'fraudlab_breaker_overrides_total{route="champion"}' in metrics
    assert routing(breaker="off")["breaker"] == "off"
    after = [fleet.api.score(p).json()["decision"] for p in payments]
    assert after == [b["decision"] for b in before]


def test_exploration_approves_a_share_of_what_the_model_stops_and_logs_its_propensity(
    fleet: Fleet, live_world: ServingWorld
) -> None:
    server = fleet.plain  # exploration_share = EXPLORATION_SHARE
    payments = [  # large amounts, so that the model stops most of them
        p | {"amount": 9_000.0, "transaction_id": f"explore-{i}"}
        for i, p in enumerate(live_world.payments(60, skip=800))
    ]
    answers = [server.score(p).json() for p in payments]
    rows = {
        r["transaction_id"]: r
        for r in logged_rows(server.log_path, "predictions", [a["request_id"] for a in answers])
    }
    assert len(rows) == len(payments)
    stopped = [r for r in rows.values() if r["model_decision"] != "approve"]
    explored = {r["transaction_id"] for r in stopped if r["decision"] == "approve"}
    assert len(stopped) >= 40
    # Exactly the payments whose draw falls under the share: random, yet reproducible.
    share = EXPLORATION_SHARE
    policy = Exploration(share)
    assert 0 < len(explored) < len(stopped)
    for tx, row in rows.items():
        assert (row["decision"], row["propensity"]) == policy.apply(tx, row["model_decision"])
        expected = 1.0 if row["model_decision"] == "approve" else share if tx in explored else 0.7
        assert row["propensity"] == pytest.approx(expected), row
    for answer in answers:  # the caller got what the log says
        assert answer["decision"] == rows[answer["transaction_id"]]["decision"]
    # A retried payment is decided as the first time; the model's score is unchanged.
    retried = [server.score(p).json() for p in payments[:20]]
    assert [_decided(b) for b in retried] == [_decided(b) for b in answers[:20]]
    counted = sum(
        sample.value
        for family in text_string_to_metric_families(server.metrics())
        if family.name == "fraudlab_explored"
        for sample in family.samples
        if sample.name == "fraudlab_explored_total"
    )
    retried_explored = sum(t in explored for t in (p["transaction_id"] for p in payments[:20]))
    assert counted == len(explored) + retried_explored


def test_health_and_readiness(fleet: Fleet) -> None:
    assert fleet.api.client.get("/healthz").json() == {"status": "ok"}
    ready = fleet.api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "reason": "ready", "refused": {}}


def test_metrics_expose_latency_histogram_and_counters(
    fleet: Fleet, payment: dict, live_world: ServingWorld
) -> None:
    fleet.api.score(payment)
    text = fleet.api.metrics()
    for stage in ("features", "model", "total"):
        assert f'fraudlab_stage_seconds_bucket{{le="0.001",stage="{stage}"}}' in text
    assert 'fraudlab_requests_total{decision="approve",route="champion"}' in text
    assert "fraudlab_feature_fallbacks_total" in text
    assert f'fraudlab_model_version{{alias="champion"}} {float(live_world.champion)}' in text
    assert f'fraudlab_model_version{{alias="challenger"}} {float(live_world.challenger)}' in text
    for gauge in ("shadow_queue_depth", "shadow_dropped", "shadow_errors"):
        assert f"fraudlab_{gauge} " in text
    assert "fraudlab_prediction_log_pending " in text
    total = _sample(text, 'fraudlab_stage_seconds_count{stage="total"}')
    assert total >= 1 and not math.isnan(total)


def test_admin_needs_the_right_token(fleet: Fleet) -> None:
    assert fleet.api.client.post("/admin/reload").status_code == 401
    assert fleet.api.admin("/admin/reload", "wrong-token").status_code == 403
    assert fleet.api.admin("/admin/reload", ADMIN_TOKEN).status_code == 200
    assert fleet.api.client.get("/admin/routing").status_code == 401


def test_admin_is_off_without_a_configured_token(fleet: Fleet) -> None:
    assert fleet.plain.client.post("/admin/reload").status_code == 404
    assert fleet.plain.admin("/admin/routing", "anything", {"shadow": False}).status_code == 404


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return math.nan
