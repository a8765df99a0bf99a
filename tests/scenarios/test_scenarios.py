"""Every failure story at small scale, end to end: a real world, the real API as a child
process, the real monitor and policy. Each test asserts the story itself: the fault is
caught by the job that should catch it, within its bound of simulated time, the policy
takes the expected action, and the system recovers. A story that stops holding fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitoring.policy import DEFAULT_POLICY, load_policy
from scenarios.engine import RunResult
from tests.scenarios.stories import assert_story_held, run, runs_root, skew_on_detection_day

__all__ = ["runs_root"]  # the session's runs folder: a fixture, imported to be found


@pytest.fixture(scope="session")
def baseline(runs_root: Path) -> tuple[RunResult, dict[str, Any]]:
    """The healthy run; incident runs after it compare their losses with it day by day."""
    return run("baseline", runs_root)


def test_baseline_raises_no_alarm_and_records_normal_ranges(
    baseline: tuple[RunResult, dict[str, Any]],
) -> None:
    result, summary = baseline
    assert_story_held(summary)
    assert summary["false_alarms"]["count"] == 0
    assert summary["actions"] == []
    # The fast guardrails judged every 15-minute window of the fourteen days, and never
    # fired: 96 runs a day (Scenario.minute_jobs_every).
    assert summary["minute_job_runs"] == 14 * 96
    assert summary["requests"] == sum(r.requests for r in result.records) > 5_000
    ranges = summary["normal_ranges"]
    assert ranges["skew_max_mismatch"][1] <= 0.05  # served features equal their offline values
    (input_drift,) = [r for r in load_policy(DEFAULT_POLICY).rules if r.name == "input-drift"]
    assert input_drift.above is not None
    assert ranges["drift_share"][1] <= input_drift.above  # healthy days stay below the alarm
    # The label-free recall has a figure every midnight; the known labels, only once a
    # fraud's chargeback has come in. Both are scored against the simulator's truth.
    label_free = summary["label_free"]
    assert label_free["days_expected"] == len(result.records)
    assert label_free["days_known"] < label_free["days_expected"]
    assert 0 <= label_free["expected_recall_error"] < 1


# Good customers the cents story turned away before the fast guardrails (the committed
# page of the daily-monitor design: detected at the next midnight, 24 h later).
DECLINED_BEFORE_GUARDRAILS = 199


@pytest.mark.parametrize(
    ("name", "expected_skewed", "rule"),
    [
        (
            "skew-amount-units",
            {"amount", "log_amount", "amount_to_customer_mean_30d"},
            "guardrail-inputs",
        ),
        ("skew-missing-default", {"customer_mean_amount_1d"}, "guardrail-inputs"),
        ("skew-window-mismatch", {"customer_mean_amount_7d"}, "store-parity"),
        ("skew-stale-features", {"customer_tx_count_1d", "terminal_tx_count_1d"}, "stale-features"),
    ],
)
def test_skew_is_caught_within_the_hour_and_the_daily_skew_job_names_it(
    name: str,
    expected_skewed: set[str],
    rule: str,
    runs_root: Path,
    baseline: tuple[RunResult, dict],
) -> None:
    result, summary = run(name, runs_root)
    assert_story_held(summary)
    assert summary["time_to_detect_hours"] <= 1
    assert rule in summary["detected_by"]
    named = set(skew_on_detection_day(result))  # the midnight skew job still says which
    assert expected_skewed <= named, f"skew job named {sorted(named)}"
    if name == "skew-window-mismatch":  # the one feature computed differently, nothing else
        assert named == expected_skewed
    # Same seed and scale as the baseline: the same payments, so losses compare day by day.
    first, last = summary["losses"]["incident_days"]
    cost, base_cost = summary["losses"]["cost"], baseline[1]["losses"]["cost"]
    assert cost["baseline_same_days"] == pytest.approx(sum(base_cost["per_day"][first : last + 1]))
    if name == "skew-amount-units":
        assert summary["time_to_detect_hours"] <= 0.25  # within 15 simulated minutes
        assert summary["time_to_mitigate_hours"] <= 0.5  # the breaker in force within 30
        declined = summary["losses"]["legit_declined"]["during_incident"]
        assert declined <= DECLINED_BEFORE_GUARDRAILS / 10
        assert cost["excess_over_baseline"] > 0  # every payment looks 100x larger: reviews
        assert "release" in [a["action"] for a in summary["actions"]]  # and it is released


# The leaky canary's cost over the baseline before the guardrails (the committed page of
# the label-based design: rolled back after 11 days).
LEAKY_EXCESS_BEFORE_GUARDRAILS = 1_367


def test_leaky_challenger_is_refused_by_the_gate_and_when_forced_out_rolled_back_in_a_day(
    runs_root: Path, baseline: tuple[RunResult, dict]
) -> None:
    result, summary = run("bad-challenger-leaky", runs_root)
    assert_story_held(summary)
    notes = " ".join(e.text for e in result.events if e.kind == "note")
    assert "leak signature" in notes and "Overridden by hand" in notes
    rollback = next(a for a in summary["actions"] if a["action"] == "rollback")
    assert rollback["rule"] == "guardrail-canary"
    assert summary["time_to_detect_hours"] <= 24
    excess = summary["losses"]["cost"]["excess_over_baseline"]
    assert excess <= LEAKY_EXCESS_BEFORE_GUARDRAILS / 10
    assert any(r.canary_requests > 0 for r in result.records)  # it did decide for some
    assert result.records[-1].canary_requests == 0  # and no longer does
    assert result.records[-1].champion_version == result.records[0].champion_version


@pytest.fixture(scope="session")
def card_testing(runs_root: Path) -> tuple[RunResult, dict[str, Any]]:
    """The healthy run of the card-testing world: the stopped-stream story's baseline."""
    return run("card-testing-velocity", runs_root)


def test_velocity_champion_catches_card_testing_in_minutes_and_ahead_of_fraud_v2(
    card_testing: tuple[RunResult, dict[str, Any]],
) -> None:
    result, summary = card_testing
    assert_story_held(summary)
    champion, shadow = summary["catches"]["champion"], summary["catches"]["shadow"]
    assert champion["bursts"] == shadow["bursts"] >= 10  # the same bursts, both models
    assert champion["caught_share"] > 0.5
    assert champion["declined_share"] > shadow["declined_share"]  # it sees the burst
    assert champion["median_minutes_to_first_flag"] <= 60
    assert summary["time_to_detect_hours"] == champion["median_minutes_to_first_flag"] / 60
    # The comparison is v3 against v2: the shadow model is the fraud_v2 one.
    assert result.settings.training.feature_service == "fraud_v3"


def test_stopped_stream_worker_pages_within_minutes_and_the_restart_recovers(
    runs_root: Path, card_testing: tuple[RunResult, dict[str, Any]]
) -> None:
    result, summary = run("stream-worker-stopped", runs_root)
    assert_story_held(summary)
    assert summary["time_to_detect_hours"] <= 0.5
    assert "stale-features" in summary["detected_by"]
    kinds = [e.kind for e in result.events]
    assert kinds.index("injection") < kinds.index("detection") < kinds.index("fix")
    assert kinds.index("fix") < kinds.index("recovery")
    # Paged within minutes; the views that went stale are the velocity one(s) only.
    detection = next(e for e in result.events if e.kind == "detection")
    (record,) = [r for r in result.records if r.day == detection.day]
    paged = [d for d in record.decisions if d["rule"] == "stale-features" and d.get("at")]
    assert paged and paged[0]["at"] == detection.at
    cost = summary["losses"]["cost"]
    assert "baseline_same_days" in cost  # against the healthy run on the same payments


def test_feedback_loop_labels_understate_the_model_until_exploration_weights_them(
    runs_root: Path,
) -> None:
    """Every payment settled by the decision made: the model's declined frauds are never
    labelled, so the labels alone misread its recall. From day 3 exploration approves a
    fifth of its reviews and declines; once their chargebacks are in, the propensity-
    weighted recall reads the truth closer than the labels alone, at a price in fraud."""
    result, summary = run("feedback-loop", runs_root)
    assert_story_held(summary)  # includes: no alarm on any day
    # The naive recall sinks (declined frauds are never charged back), and no retrain
    # follows: the rule reads the frauds among the approved payments, which no decline
    # censors (the page of the recall rule retrained on day 13).
    assert summary["false_alarms"]["count"] == 0 and summary["actions"] == []
    explored = summary["exploration"]
    assert explored["frauds_explored"] > 0 and explored["explored_losses_per_day"] > 0
    assert explored["naive_error_before"] > 0.05
    assert explored["ipw_error_settled"] < explored["naive_error_settled"]
    assert max(k or 0 for k in explored["explored_frauds_known"]) > 0
    # Nothing but the exploration share changed: the API was redeployed once, on day 3.
    deploys = [e for e in result.events if e.kind == "deploy"]
    assert [e.day for e in deploys] == [3]
