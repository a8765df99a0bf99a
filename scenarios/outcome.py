"""What a run showed, in numbers: time to detect, false alarms, actions, recovery, losses,
and whether the story held (the checks the scenario's test asserts)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.validate import load_transactions
from monitoring.policy import load_policy
from scenarios.catches import burst_catches, catch_summary, traffic_costs
from scenarios.engine import RunResult
from scenarios.faults import Exploration
from scenarios.timeline import DayRecord, frame, true_recall

RANGE_COLUMNS = (
    "drift_share",
    "score_psi",
    "skew_max_mismatch",
    "recall",
    "precision",
    "review_rate",
    "decline_rate",
    "fraud_losses",
    "cost",
    "fallback_rate",
)


def summarize(result: RunResult, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    scenario, records = result.scenario, result.records
    inject = scenario.inject_day
    before = [r for r in records if inject is None or r.day < inject]
    detection = next((e for e in result.events if e.kind == "detection"), None)
    injection = next((e for e in result.events if e.kind == "injection"), None)
    injected_at = None if injection is None else pd.Timestamp(injection.at)
    hours = (
        (pd.Timestamp(detection.at) - injected_at) / pd.Timedelta(hours=1)
        if detection and injected_at is not None
        else None
    )
    actions = [
        {"day": r.day, "at": _monitor_time(r), **d}  # a minute check's decision has its own
        for r in records
        for d in r.decisions
        if d["taken"]
    ]
    mitigated = next(  # the breaker this incident tripped, not one tripped before it
        (
            a
            for a in actions
            if a["action"] == "mitigate"
            and (injected_at is None or pd.Timestamp(a["at"]) >= injected_at)
        ),
        None,
    )
    recovery_day = _recovery_day(result)
    recovery = next((e for e in result.events if e.kind == "recovery"), None)
    catches = None
    if scenario.detector == MODEL:
        catches = model_catches(result)
        champion = catches.get("champion", {})
        minutes = champion.get("median_minutes_to_first_flag")
        hours = None if minutes is None else minutes / 60
        detection = None
    policy = load_policy(result.settings.monitoring.policy_path)
    lookback = policy.jobs.performance.label_lookback_days
    summary = {
        "scenario": scenario.name,
        "world": result.spec.key,
        "baseline_story": scenario.baseline,
        "scale": result.spec.scale,
        "seed": result.spec.seed,
        "days": len(records),
        "injected_at": injected_at.isoformat() if injected_at is not None else None,
        "detector_expected": scenario.detector,
        "detected_at": detection.at if detection else None,
        "detected_by": detection.text if detection else None,
        "catches": catches,
        "time_to_detect_hours": hours,
        "detect_within_hours": scenario.detect_within_hours if scenario.detector else None,
        # A story with nothing to detect (exploration is a choice, not a fault) has no
        # day on which a rule may hold: every day counts, not only those before it.
        "false_alarms": _alarms(before if scenario.detector else records),
        "minute_job_runs": sum(r.minute_runs for r in records),
        "challenger_trials": result.trials,
        "actions": actions,
        "mitigated_at": mitigated["at"] if mitigated else None,
        "time_to_mitigate_hours": _hours_between(
            injected_at, mitigated["at"] if mitigated else None
        ),
        "recovered_at": recovery.at
        if recovery
        else (_monitor_time(records[recovery_day]) if recovery_day is not None else None),
        "recovered_day": recovery_day,
        "recovery": scenario.recovery,
        "losses": _losses(records, inject, recovery_day, baseline),
        "review_cost": result.settings.training.review_cost,
        "normal_ranges": _ranges(before),
        "label_free": label_free_check(records, lookback),
        "exploration": exploration_check(result, lookback)
        if isinstance(scenario.fault, Exploration)
        else None,
        "wall_clock_seconds": round(result.seconds, 1),
        "requests": sum(r.requests for r in records),
        "errors": sum(r.errors for r in records),
    }
    summary["checks"] = checks(result, summary)
    return summary


def label_free_check(records: list[DayRecord], lookback_days: float) -> dict[str, Any]:
    """Each midnight's recall, as the scores expect it (no label needed) and as the
    labels known by then say, against the truth of the same window: how far off each
    is, and on how many days the labels could not say at all."""
    truth = np.array([true_recall(records, r.day, lookback_days) for r in records], float)
    expected = np.array([r.metric("performance", "expected_recall") for r in records], float)
    known = np.array([r.metric("performance", "recall") for r in records], float)

    def mean_abs_error(estimate: np.ndarray) -> float | None:
        both = ~np.isnan(estimate) & ~np.isnan(truth)
        return float(np.abs(estimate[both] - truth[both]).mean()) if both.any() else None

    return {
        "days": len(records),
        "lookback_days": lookback_days,
        "expected_recall_error": mean_abs_error(expected),
        "known_recall_error": mean_abs_error(known),
        "days_expected": int((~np.isnan(expected)).sum()),
        "days_known": int((~np.isnan(known)).sum()),
    }


def exploration_check(result: RunResult, lookback_days: float) -> dict[str, Any]:
    """The monitor's recall of the model at each midnight, read naively from the labels
    the system let through and by inverse propensity, against the simulator's truth of
    the same window; before exploration starts and once it has run `settle_days` (its
    first explored frauds need that long to be reported); and what it cost."""
    records, start = result.records, result.scenario.inject_day or 0
    settle_days = EXPLORATION_SETTLE_DAYS

    def series(name: str) -> list[float | None]:
        return [_number(r.metric("performance", name)) for r in records]

    truth = [_number(true_recall(records, r.day, lookback_days, of_model=True)) for r in records]
    naive, ipw = series("recall"), series("ipw_recall")

    def error(estimate: list[float | None], days: range) -> float | None:
        pairs = [(estimate[d], truth[d]) for d in days if d < len(records)]
        both = [abs(e - t) for e, t in pairs if e is not None and t is not None]
        return float(np.mean(both)) if both else None

    before, settled = range(0, start), range(start + settle_days, len(records))
    explored = [r for r in records if r.day >= start]
    return {
        "share": getattr(result.scenario.fault, "share", None),
        "from_day": start,
        "settle_days": settle_days,
        "truth": truth,
        "naive_recall": naive,
        "ipw_recall": ipw,
        "explored_frauds_known": series("explored_frauds"),
        "naive_error_before": error(naive, before),
        "naive_error_settled": error(naive, settled),
        "ipw_error_settled": error(ipw, settled),
        "frauds_explored": sum(r.frauds_explored for r in explored),
        "explored_losses_per_day": sum(r.explored_losses for r in explored) / len(explored)
        if explored
        else None,
    }


EXPLORATION_SETTLE_DAYS = 7  # about the median chargeback delay (data/simulator.py)


def _number(value: float) -> float | None:
    return None if value != value else round(float(value), 4)


def checks(result: RunResult, summary: dict[str, Any]) -> dict[str, bool]:
    """The story's own claims, each true or false for this run."""
    scenario = result.scenario
    out = {"no_failed_requests": summary["errors"] == 0}
    if scenario.detector == MODEL:
        return out | _model_checks(scenario.detect_within_hours, summary)
    if scenario.detector is None:
        out["no_alarm"] = summary["false_alarms"]["count"] == 0
        if explored := summary.get("exploration"):
            out |= _exploration_checks(explored)
        return out
    hours = summary["time_to_detect_hours"]
    out["no_false_alarm_before_injection"] = summary["false_alarms"]["count"] == 0
    out["detected_by_expected_job"] = summary["detected_by"] is not None
    out["detected_within_bound"] = hours is not None and hours <= scenario.detect_within_hours
    taken = [a["action"] for a in summary["actions"] if a["action"] != "alert"]
    alerts = any(
        a["action"] == "alert" and a["job"] == scenario.detector for a in summary["actions"]
    )
    wanted = [a for a in scenario.expected_actions if a != "alert"]
    out["expected_actions_taken"] = _in_order(wanted, taken) and (
        "alert" not in scenario.expected_actions or alerts
    )
    out["recovered"] = summary["recovered_at"] is not None
    return out


MODEL = "model"  # a story the model itself answers: its catches, not a monitor job


def model_catches(result: RunResult) -> dict[str, dict[str, Any]]:
    """The champion's and the shadow model's catches of every card-testing burst."""
    records = result.records
    since = pd.Timestamp(records[0].date)
    until = pd.Timestamp(records[-1].date) + pd.Timedelta(days=1)
    tx, log = load_transactions(result.settings), result.settings.prediction_log_path
    catches = catch_summary(burst_catches(log, tx, since, until))
    costs = traffic_costs(log, tx, since, until, result.settings.training.review_cost)
    services = {
        "champion": result.settings.training.feature_service,
        "shadow": str(getattr(result.scenario.fault, "compare_with", "")),
    }
    return {
        model: catches.get(model, {}) | {"service": services[model], "traffic": costs[model]}
        for model in costs
    }


def _model_checks(within_hours: float, summary: dict[str, Any]) -> dict[str, bool]:
    """The champion catches most bursts, within the bound, and sooner and more often
    than the model shadow-scored beside it on the same payments."""
    champion = summary["catches"].get("champion", {})
    shadow = summary["catches"].get("shadow", {})
    hours = summary["time_to_detect_hours"]
    return {
        "no_alarm": summary["false_alarms"]["count"] == 0,
        "champion_catches_most_bursts": champion.get("caught_share", 0) > 0.5,
        "detected_within_bound": hours is not None and hours <= within_hours,
        "shadow_scored_every_payment": shadow.get("scored_share", 0) == 1.0,
        # Sure enough to decline, not only to ask an analyst: the burst it can see.
        "champion_declines_more_tests_than_shadow": champion.get("declined_share", 0)
        > shadow.get("declined_share", 0),
    }


def _exploration_checks(explored: dict[str, Any]) -> dict[str, bool]:
    """Without exploration the labels understate the model's recall; once the explored
    declines' chargebacks are in, the weighted recall is closer to the truth."""
    before, naive, ipw = (
        explored["naive_error_before"],
        explored["naive_error_settled"],
        explored["ipw_error_settled"],
    )
    return {
        "naive_recall_off_before_exploration": before is not None and before > 0.05,
        "ipw_closer_than_naive_once_settled": None not in (naive, ipw) and ipw < naive,
    }


def _hours_between(start: pd.Timestamp | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return float((pd.Timestamp(end) - start) / pd.Timedelta(hours=1))


def _in_order(wanted: list[str], taken: list[str]) -> bool:
    remaining = iter(taken)
    return all(any(t == w for t in remaining) for w in wanted)


def _monitor_time(record: DayRecord) -> str:
    """A day's monitor runs at the following midnight."""
    return (pd.Timestamp(record.date) + pd.Timedelta(days=1)).isoformat()


def _recovery_day(result: RunResult) -> int | None:
    scenario, records = result.scenario, result.records
    if scenario.inject_day is None:
        return None
    recovered = next((e.day for e in result.events if e.kind == "recovery"), None)
    if recovered is not None or scenario.fault.response_minutes is not None:
        return recovered  # a minute-level story notes its recovery itself
    if scenario.fault.operator_fix:
        fix = next((e.day for e in result.events if e.kind == "fix"), None)
        if fix is None:
            return None
        ok = [r.day for r in records if r.day >= fix and r.status(scenario.detector or "") == "ok"]
        return ok[0] if ok else None
    if not scenario.expected_actions:  # nothing to act on (feedback-loop): nothing to recover
        return None
    final = scenario.expected_actions[-1]
    done = [r.day for r in records for d in r.decisions if d["taken"] and d["action"] == final]
    return done[0] if done else None


def _alarms(records: list[DayRecord]) -> dict[str, Any]:
    runs = [
        {"day": r.day, "rules": sorted({d["rule"] for d in r.decisions})}
        for r in records
        if r.decisions
    ]
    return {"count": len(runs), "monitor_runs": len(records), "runs": runs}


LOSS_MEASURES = ("fraud_losses", "cost", "legit_declined", "frauds_declined")


def _losses(
    records: list[DayRecord],
    inject: int | None,
    recovery_day: int | None,
    baseline: dict[str, Any] | None,
) -> dict[str, Any]:
    """Per measure (approved fraud amount; cost = that + reviews; good customers
    declined): per day, and during the incident against the days before it and against
    the baseline run's same days (same seed and scale: the same payments)."""
    out: dict[str, Any] = {}
    end = recovery_day if recovery_day is not None else len(records) - 1
    incident = [] if inject is None else list(range(inject, end + 1))
    if incident:
        out["incident_days"] = [incident[0], incident[-1]]
    for measure in LOSS_MEASURES:
        daily = [float(getattr(r, measure)) for r in records]
        entry: dict[str, Any] = {"per_day": daily, "total": sum(daily)}
        if incident:
            before = daily[: incident[0]]
            entry["during_incident"] = sum(daily[d] for d in incident)
            entry["pre_incident_daily_mean"] = sum(before) / len(before) if before else math.nan
            base = (baseline or {}).get("losses", {}).get(measure, {}).get("per_day")
            if base and len(base) > incident[-1]:
                entry["baseline_same_days"] = sum(base[d] for d in incident)
                entry["excess_over_baseline"] = (
                    entry["during_incident"] - entry["baseline_same_days"]
                )
        out[measure] = entry
    return out


def _ranges(records: list[DayRecord]) -> dict[str, list[float]]:
    table = frame(records)
    ranges = {}
    for column in RANGE_COLUMNS:
        values = table[column].dropna() if column in table else pd.Series(dtype=float)
        if len(values):
            ranges[column] = [round(float(values.min()), 4), round(float(values.max()), 4)]
    return ranges


def latest_baseline(runs_root: Path, name: str, world: str) -> dict[str, Any] | None:
    """The newest run of the healthy story `name` in the same world (same payments)."""
    for path in sorted((runs_root / name).glob("*/summary.json"), reverse=True):
        summary = json.loads(path.read_text())
        if summary.get("world") == world:
            return summary
    return None
