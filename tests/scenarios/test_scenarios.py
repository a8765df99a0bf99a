"""Every failure story at small scale, end to end: a real world, the real API as a child
process, the real monitor and policy. Each test asserts the story itself: the fault is
caught by the job that should catch it, within its bound of simulated time, the policy
takes the expected action, and the system recovers. A story that stops holding fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitoring.policy import DEFAULT_POLICY, load_policy
from scenarios.catalog import get_scenario
from scenarios.engine import RunResult, run_scenario
from scenarios.report import write_run

SEED = 11


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runs folder for the session: its world cache builds each world once."""
    return tmp_path_factory.mktemp("runs")


def run(name: str, runs_root: Path) -> tuple[RunResult, dict[str, Any]]:
    result = run_scenario(get_scenario(name), "small", SEED, runs_root, say=print)
    docs = runs_root / "docs"  # what --publish writes into docs/scenarios
    summary = write_run(result, runs_root, publish_to=docs)
    assert "![timeline](img/" in (docs / f"{name}.md").read_text()
    assert f"[{name}]({name}.md)" in (docs / "README.md").read_text()
    for artefact in ("report.md", "summary.json", "timeline.png", "timeline.json"):
        assert (result.run_dir / artefact).stat().st_size > 0, artefact
    assert json.loads((result.run_dir / "summary.json").read_text()) == json.loads(
        json.dumps(summary, default=str)
    )
    return result, summary


def skew_on_detection_day(result: RunResult) -> list[str]:
    """The features the skew job named on the day the fault was caught."""
    day = next(r for r in result.records if any(d["job"] == "skew" for d in r.decisions))
    stamp = (result.records[day.day].date[:10]).replace("-", "")
    runs = sorted((result.settings.monitoring_dir / "runs").glob("*/skew.json"))
    (skew,) = [p for p in runs if p.parent.name.startswith(_next_day(stamp))]
    return json.loads(skew.read_text())["details"]["skewed_features"]


def _next_day(yyyymmdd: str) -> str:
    import pandas as pd

    return (pd.Timestamp(yyyymmdd) + pd.Timedelta(days=1)).strftime("%Y%m%d")


def assert_story_held(summary: dict[str, Any]) -> None:
    failed = [name for name, ok in summary["checks"].items() if not ok]
    assert not failed, f"story did not hold: {failed}; see the report"


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
    assert summary["requests"] == sum(r.requests for r in result.records) > 5_000
    ranges = summary["normal_ranges"]
    assert ranges["skew_max_mismatch"][1] <= 0.05  # served features equal their offline values
    (input_drift,) = [r for r in load_policy(DEFAULT_POLICY).rules if r.name == "input-drift"]
    assert input_drift.above is not None
    assert ranges["drift_share"][1] <= input_drift.above  # healthy days stay below the alarm


@pytest.mark.parametrize(
    ("name", "expected_skewed"),
    [
        ("skew-amount-units", {"amount", "log_amount", "amount_to_customer_mean_30d"}),
        ("skew-missing-default", {"customer_mean_amount_1d"}),
        ("skew-window-mismatch", {"customer_mean_amount_7d"}),
        ("skew-stale-features", {"customer_tx_count_1d", "terminal_tx_count_1d"}),
    ],
)
def test_skew_is_caught_by_the_skew_job_within_a_day_and_reverted(
    name: str, expected_skewed: set[str], runs_root: Path, baseline: tuple[RunResult, dict]
) -> None:
    result, summary = run(name, runs_root)
    assert_story_held(summary)
    assert summary["time_to_detect_hours"] <= 24
    assert "feature-skew" in summary["detected_by"]
    assert any(a["rule"] == "feature-skew" for a in summary["actions"])
    named = set(skew_on_detection_day(result))
    assert expected_skewed <= named, f"skew job named {sorted(named)}"
    if name == "skew-window-mismatch":  # the one feature computed differently, nothing else
        assert named == expected_skewed
    # Same seed and scale as the baseline: the same payments, so losses compare day by day.
    first, last = summary["losses"]["incident_days"]
    cost, base_cost = summary["losses"]["cost"], baseline[1]["losses"]["cost"]
    assert cost["baseline_same_days"] == pytest.approx(sum(base_cost["per_day"][first : last + 1]))
    if name == "skew-amount-units":  # every payment looks 100x larger: a flood of reviews
        assert cost["excess_over_baseline"] > 0


def test_new_fraud_pattern_leads_to_retrain_canary_and_promotion(runs_root: Path) -> None:
    result, summary = run("drift-new-fraud-pattern", runs_root)
    assert_story_held(summary)
    taken = [a["action"] for a in summary["actions"]]
    assert taken.index("retrain") < taken.index("promote")
    promote = next(a for a in summary["actions"] if a["action"] == "promote")
    assert promote["rule"] == "canary-better"
    # After the promotion the new champion decides: its version is on the last day's log.
    assert result.records[-1].champion_version != result.records[0].champion_version


def test_leaky_challenger_is_rolled_back_by_the_canary(runs_root: Path) -> None:
    result, summary = run("bad-challenger-leaky", runs_root)
    assert_story_held(summary)
    rollback = next(a for a in summary["actions"] if a["action"] == "rollback")
    assert rollback["rule"] == "canary-worse"
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
