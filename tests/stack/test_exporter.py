"""The monitor exporter: the decision log the monitor writes, as the Prometheus metrics
the dashboard's monitoring row reads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fraudlab.stack.exporter import MonitorFindings
from monitoring.decisions import Decision, DecisionLog, MonitorRun
from monitoring.findings import Finding


def scrape(decision_log: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, keyed by name and labels."""
    registry = CollectorRegistry()
    registry.register(MonitorFindings(decision_log))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def run(now: str, findings: list[Finding], decisions: list[Decision]) -> MonitorRun:
    return MonitorRun(now, now, now, [f.to_dict() for f in findings], decisions)


def test_exporter_reports_the_latest_run_per_job_and_every_action_taken(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl")
    rollback = Decision("drift-rollback", "drift", "rollback", "drift_share > 0.3", 0.6, "why")
    log.append(
        run(
            "2026-04-10T00:00:00",
            [Finding("drift", "alert", "drifted", {"drift_share": 0.6})],
            [replace(rollback, taken=True)],
        )
    )
    log.append(
        run(
            "2026-04-11T00:00:00",
            [
                Finding("drift", "ok", "stable", {"drift_share": 0.1}),
                Finding("skew", "alert", "unit change", {"max_mismatch_rate": 0.9}),
                Finding("performance", "insufficient_data", "labels not in yet"),
            ],
            [rollback],  # triggered again, but held back: not counted as taken
        )
    )
    samples = scrape(log.path)
    assert samples[("fraudlab_monitor_status", (("job", "drift"),))] == 0
    assert samples[("fraudlab_monitor_status", (("job", "skew"),))] == 2
    assert samples[("fraudlab_monitor_status", (("job", "performance"),))] == 1
    assert ("fraudlab_monitor_status", (("job", "canary"),)) not in samples
    drift_share = ("fraudlab_monitor_value", (("job", "drift"), ("metric", "drift_share")))
    assert samples[drift_share] == 0.1
    assert samples[("fraudlab_monitor_runs_total", ())] == 2
    assert samples[("fraudlab_monitor_actions_total", (("action", "rollback"),))] == 1
    assert samples[("fraudlab_monitor_last_run_timestamp_seconds", ())] > 0


def test_exporter_before_the_first_monitor_run_reports_zero_runs(tmp_path: Path) -> None:
    samples = scrape(tmp_path / "decisions.jsonl")
    assert samples[("fraudlab_monitor_runs_total", ())] == 0
    assert samples[("fraudlab_monitor_last_run_timestamp_seconds", ())] == 0
    assert not [key for key in samples if key[0] == "fraudlab_monitor_status"]
