"""The policy file: bad ones refused with the field and reason; rules and cool-downs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from fraudlab.errors import ConfigError
from monitoring.decisions import DecisionLog, MonitorRun
from monitoring.findings import Finding
from monitoring.policy import DEFAULT_POLICY, load_policy
from monitoring.runner import decide_and_act
from tests.conftest import World


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_the_shipped_policy_is_valid() -> None:
    policy = load_policy(DEFAULT_POLICY)
    assert {r.action for r in policy.rules} == {
        "alert",
        "mitigate",
        "rollback",
        "retrain",
        "promote",
    }


def _shipped_with(change: Callable[[dict[str, Any]], object]) -> str:
    """The shipped policy with one change: each case breaks one thing only."""
    raw = yaml.safe_load(DEFAULT_POLICY.read_text())
    change(raw)
    return yaml.safe_dump(raw)


RULE = {"name": "a", "job": "skew", "metric": "max_mismatch_rate", "above": 1, "action": "alert"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.update(rules=[]), "rules: List should have at least 1 item"),
        (
            lambda p: p.update(rules=[{**RULE, "above": None}]),
            "give exactly one of above, below or equals",
        ),
        (
            lambda p: p.update(rules=[{**RULE, "job": "drift", "metric": "recall"}]),
            "job drift has no metric 'recall'",
        ),
        (lambda p: p.update(rules=[{**RULE, "job": "weather"}]), "rules.0.job"),
        (lambda p: p.update(rules=[{**RULE, "action": "panic"}]), "rules.0.action"),
        (lambda p: p["cooldown_hours"].update(alert=-1), "must be >= 0; negative: ['alert']"),
        (lambda p: p["cooldown_hours"].pop("retrain"), "missing: ['retrain']"),
        (lambda p: p.update(colour="blue"), "colour"),
        (lambda p: p["jobs"]["canary"].pop("min_frauds"), "jobs.canary.min_frauds: Field required"),
        (lambda p: p["jobs"]["skew"].update(feature_mismatch_above=2), "less than or equal to 1"),
        (lambda p: p["jobs"].update(weather={}), "jobs.weather"),
        (lambda p: p.update(version=1), "version"),
    ],
)
def test_bad_policy_is_refused_with_field_and_reason(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], expected: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_policy(_write(tmp_path, _shipped_with(change)))
    assert expected in str(refused.value)


@pytest.mark.parametrize(
    ("text", "expected"), [("rules: [", "is not valid YAML"), ("- a list", "must hold a mapping")]
)
def test_a_policy_file_that_is_not_a_mapping_is_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_policy(_write(tmp_path, text))


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")


def _skewed() -> list[Finding]:
    return [
        Finding(
            "skew", "ok", "amount differs", {"max_mismatch_rate": 0.9, "skewed_feature_count": 1}
        )
    ]


def test_cooldown_stops_flapping(world: World, tmp_path: Path) -> None:
    """The same alert on consecutive runs is taken once per cool-down, then again."""
    settings = world.settings.model_copy(update={"home": tmp_path})
    policy = load_policy(DEFAULT_POLICY)  # alert cool-down: 6 hours
    log = DecisionLog(tmp_path / "decisions.jsonl")
    start = pd.Timestamp("2026-03-01", tz="UTC")
    taken = []
    for hour in range(0, 14, 2):  # a run every 2 hours, the skew never goes away
        now = start + pd.Timedelta(hours=hour)
        decisions = decide_and_act(settings, policy, _skewed(), now, log, execute=True)
        log.append(MonitorRun(now.isoformat(), now.isoformat(), now.isoformat(), [], decisions))
        (decision,) = decisions
        taken.append(decision.taken)
        if not decision.taken:
            assert decision.held_back.startswith("cool-down")
    assert taken == [True, False, False, True, False, False, True]


def test_insufficient_data_never_triggers_a_rule(world: World, tmp_path: Path) -> None:
    settings = world.settings.model_copy(update={"home": tmp_path})
    thin = [Finding("performance", "insufficient_data", "3 frauds", {"missed_fraud_p": 0.0})]
    decisions = decide_and_act(
        settings,
        load_policy(),
        thin,
        pd.Timestamp("2026-03-01", tz="UTC"),
        DecisionLog(tmp_path / "d.jsonl"),
        execute=True,
    )
    assert decisions == []


def test_dry_run_decides_but_takes_nothing(world: World, tmp_path: Path) -> None:
    settings = world.settings.model_copy(update={"home": tmp_path})
    (decision,) = decide_and_act(
        settings,
        load_policy(),
        _skewed(),
        pd.Timestamp("2026-03-01", tz="UTC"),
        DecisionLog(tmp_path / "d.jsonl"),
        execute=False,
    )
    assert not decision.taken and decision.held_back == "dry run"


def test_no_retrain_while_a_challenger_is_on_trial(world: World, tmp_path: Path) -> None:
    """The champion misses more fraud, but the last retrain's challenger is still
    collecting labels in its canary: a new retrain would replace it and restart the
    trial, so it is held back."""
    settings = world.settings.model_copy(update={"home": tmp_path})
    decayed = Finding("performance", "ok", "missed frauds x3", {"missed_fraud_p": 1e-6})
    waiting = Finding(
        "canary", "insufficient_data", "wait", {"outcome_code": 0.0}, {"outcome": "wait"}
    )
    (decision,) = decide_and_act(
        settings,
        load_policy(),
        [decayed, waiting],
        pd.Timestamp("2026-03-01", tz="UTC"),
        DecisionLog(tmp_path / "d.jsonl"),
        execute=True,
    )
    assert decision.action == "retrain" and not decision.taken
    assert decision.held_back == "a challenger is on trial (canary waiting for labels)"


def test_a_finding_is_an_alert_exactly_when_a_rule_fires(world: World, tmp_path: Path) -> None:
    """At exactly the policy's drift share, the drift job and the policy agree: a finding
    shown as an alert is one that a rule acts on, and the other way round."""
    from monitoring.drift import _finding

    features = [f"f{i}" for i in range(10)]
    table = [
        {"column": c, "drifted": i < 3, "method": "psi", "threshold": 0.1, "statistic": 0.2}
        for i, c in enumerate([*features, "score"])
    ]
    table[-1]["drifted"] = False  # the score is stable; 3 of 10 features drifted: 0.3
    finding = _finding(table, features)
    settings = world.settings.model_copy(update={"home": tmp_path})
    decisions = decide_and_act(
        settings,
        load_policy(),
        [finding],
        pd.Timestamp("2026-03-01", tz="UTC"),
        DecisionLog(tmp_path / "d.jsonl"),
        execute=False,
    )
    assert finding.metrics["drift_share"] == 0.3
    assert (finding.status == "alert") == bool(decisions), (finding.status, decisions)
