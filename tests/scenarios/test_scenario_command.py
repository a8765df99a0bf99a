"""`fraudlab scenario`: the catalogue, and bad arguments refused with one clear line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fraudlab.cli import app
from fraudlab.console import console
from monitoring.findings import JOBS
from scenarios.catalog import SCENARIOS
from scenarios.outcome import MODEL

runner = CliRunner()


def test_list_names_every_story_and_its_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    # Wide enough for every cell on one line, whatever width the console found at import.
    monkeypatch.setattr(console, "width", 200)
    result = runner.invoke(app, ["scenario", "list"])
    assert result.exit_code == 0, result.output
    for name, scenario in SCENARIOS.items():
        assert name in result.output
        assert (scenario.detector or "nothing to catch") in result.output


def test_unknown_scenario_is_refused_with_the_known_names() -> None:
    result = runner.invoke(app, ["scenario", "run", "skew-typo"])
    assert result.exit_code != 0
    assert "unknown scenario 'skew-typo'" in result.output
    assert "skew-amount-units" in result.output
    assert "Traceback" not in result.output


def test_unknown_scale_is_refused_before_anything_runs(tmp_path) -> None:
    result = runner.invoke(
        app, ["scenario", "run", "baseline", "--scale", "huge", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "huge" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing written


def test_every_story_states_what_it_expects() -> None:
    """A story with a fault names its detector, a bound and the policy's action; one the
    model answers by itself names the model, a bound, and no action; one with nothing to
    catch expects no action (feedback-loop switches exploration on, and says why)."""
    for scenario in SCENARIOS.values():
        if scenario.detector == MODEL:
            assert scenario.inject_day is None and not scenario.expected_actions
            assert 0 < scenario.detect_within_hours <= 24 * scenario.days
            continue
        if scenario.detector is None:  # nothing to catch: healthy, or a change made on purpose
            assert not scenario.expected_actions
            assert scenario.inject_day is None or (scenario.recovery and scenario.what_broke)
            continue
        assert scenario.detector in JOBS  # a monitoring job, by the name the policy knows
        assert 0 < scenario.detect_within_hours <= 24 * scenario.days
        assert scenario.expected_actions and scenario.recovery
        assert scenario.inject_day < scenario.days
