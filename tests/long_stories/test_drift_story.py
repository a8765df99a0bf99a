"""The longest story on a folder (so a worker) of its own: it has a world of its own
(card testing in it), so nothing is built twice, and the other stories run beside it.
See tests/scenarios/test_scenarios.py for what the stories assert."""

from __future__ import annotations

from pathlib import Path

from tests.scenarios.stories import assert_story_held, run, runs_root

__all__ = ["runs_root"]  # the session's runs folder: a fixture, imported to be found


def test_new_fraud_pattern_leads_to_retrain_canary_and_promotion(runs_root: Path) -> None:
    result, summary = run("drift-new-fraud-pattern", runs_root)
    assert_story_held(summary)
    taken = [a["action"] for a in summary["actions"]]
    assert taken.index("retrain") < taken.index("promote")
    promote = next(a for a in summary["actions"] if a["action"] == "promote")
    assert promote["rule"] == "canary-better"
    # The challenger that wins was never rolled back by the label-free guardrails.
    assert not [a for a in summary["actions"] if a["rule"] == "guardrail-canary"]
    # After the promotion the new champion decides: its version is on the last day's log.
    assert result.records[-1].champion_version != result.records[0].champion_version
