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

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(decision_log: Path | MonitorFindings) -> Samples:
    """Every sample of one scrape (by a new collector, or the one given), keyed by name
    and labels."""
    registry = CollectorRegistry()
    registry.register(
        decision_log if isinstance(decision_log, MonitorFindings) else MonitorFindings(decision_log)
    )
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


def test_each_job_is_its_latest_finding_in_any_run_as_minute_and_daily_runs_interleave(
    tmp_path: Path,
) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl")
    exporter = MonitorFindings(log.path)  # one collector across scrapes, as the server has
    mitigate = Decision("guardrail-inputs", "guardrail", "mitigate", "input_failures > 0", 2, "")
    log.append(
        run(
            "2026-04-11T00:00:00",  # the daily run: every job
            [
                Finding("drift", "alert", "drifted", {"drift_share": 0.6}),
                Finding("guardrail", "ok", "in band", {"input_failures": 0}),
            ],
            [],
        )
    )
    assert scrape(exporter)[("fraudlab_monitor_status", (("job", "drift"),))] == 2
    for minute in ("00:05", "00:10"):  # the minute jobs' runs: no drift among them
        log.append(
            run(
                f"2026-04-11T{minute}:00",
                [Finding("guardrail", "alert", "unit change", {"input_failures": 2})],
                [replace(mitigate, taken=True)],
            )
        )
    with log.path.open("a") as handle:  # a run still being written
        handle.write('{"now": "2026-04-11T00:15:00", "findi')
    samples = scrape(exporter)
    assert samples == scrape(log.path)  # reading on from the last scrape sees what a new one does
    assert samples[("fraudlab_monitor_status", (("job", "drift"),))] == 2  # from the daily run
    drift_share = ("fraudlab_monitor_value", (("job", "drift"), ("metric", "drift_share")))
    assert samples[drift_share] == 0.6
    inputs = ("fraudlab_monitor_value", (("job", "guardrail"), ("metric", "input_failures")))
    assert samples[inputs] == 2
    assert samples[("fraudlab_monitor_status", (("job", "guardrail"),))] == 2
    assert samples[("fraudlab_monitor_runs_total", ())] == 3
    assert samples[("fraudlab_monitor_actions_total", (("action", "mitigate"),))] == 2

    log.path.unlink()  # a new log in the same place: counted from its start
    log.append(run("2026-04-12T00:00:00", [Finding("skew", "ok", "equal", {})], []))
    samples = scrape(exporter)
    assert samples[("fraudlab_monitor_runs_total", ())] == 1
    assert [key for key in samples if key[0] == "fraudlab_monitor_status"] == [
        ("fraudlab_monitor_status", (("job", "skew"),))
    ]
