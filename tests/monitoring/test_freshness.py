"""The freshness job: each view's logged feature ages against its objective in the
policy, and the policy's rule that turns a broken objective into an alert."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudlab.errors import ConfigError
from monitoring.freshness import run_freshness
from monitoring.policy import DEFAULT_POLICY, load_policy
from serving.prediction_log.reader import AGE_PREFIX

POLICY = load_policy()
CONFIG = POLICY.jobs.freshness
HOUR = 3_600.0


def _requests(n: int, ages: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({f"{AGE_PREFIX}{view}": age[:n] for view, age in ages.items()})


def _healthy(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "customer_spending": rng.uniform(0, 24 * HOUR, n),  # read through the day
        "terminal_risk": rng.uniform(0, 24 * HOUR, n),
        "customer_velocity": np.zeros(n),  # inline: no lag
        "terminal_velocity": np.zeros(n),
    }


def test_fresh_views_break_no_objective(tmp_path) -> None:
    finding = run_freshness(
        _requests(500, _healthy(500, np.random.default_rng(0))), CONFIG, tmp_path
    )
    assert finding.status == "ok", finding.summary
    assert finding.metrics == {"stale_view_count": 0.0, "worst_stale_share": 0.0}
    assert POLICY.judge([finding]) == []
    assert (tmp_path / "freshness.json").exists()


def test_a_stopped_stream_names_the_velocity_views_and_alerts(tmp_path) -> None:
    ages = _healthy(500, np.random.default_rng(1))
    lag = np.linspace(0, 600, 500)  # the worker stopped: its lag grows by the second
    ages |= {"customer_velocity": lag, "terminal_velocity": lag}
    finding = run_freshness(_requests(500, ages), CONFIG, tmp_path)
    assert finding.details["stale_views"] == ["customer_velocity", "terminal_velocity"]
    assert [rule.name for rule, _ in POLICY.judge([finding])] == ["stale-features"]


def test_a_materialization_that_did_not_run_names_its_views(tmp_path) -> None:
    ages = _healthy(300, np.random.default_rng(2))
    ages["terminal_risk"] = ages["terminal_risk"] + 24 * HOUR  # yesterday's snapshot, all day
    finding = run_freshness(_requests(300, ages), CONFIG, tmp_path)
    assert finding.details["stale_views"] == ["terminal_risk"]
    assert finding.metrics["worst_stale_share"] > 0.9


def test_too_few_requests_is_no_verdict(tmp_path) -> None:
    ages = {"customer_velocity": np.full(5, 1e6)}
    finding = run_freshness(_requests(5, ages), CONFIG, tmp_path)
    assert finding.status == "insufficient_data"
    assert POLICY.judge([finding]) == []


def test_an_objective_for_a_view_that_does_not_exist_is_refused(tmp_path) -> None:
    path = tmp_path / "policy.yaml"
    source = DEFAULT_POLICY.read_text()
    assert "customer_velocity: 60" in source
    path.write_text(source.replace("customer_velocity: 60", "customer_velocty: 60"))
    with pytest.raises(ConfigError, match="no such feature view: customer_velocty"):
        load_policy(path)
