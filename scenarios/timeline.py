"""One row per simulated day: what the traffic did, what the monitor measured, what the
policy decided. The report, the plots and summary.json are all read off this table."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from monitoring.decisions import MonitorRun
from serving.exploration import explored
from serving.prediction_log import table_ids


@dataclass
class Event:
    day: int
    at: str  # ISO time in simulated time
    kind: str  # injection, detection, action, fix, recovery, deploy, note
    text: str


@dataclass
class DayRecord:
    day: int
    date: str
    requests: int
    errors: int
    fallbacks: int
    p99_ms: float
    score_p50: float
    score_p90: float
    score_p99: float
    review_rate: float
    decline_rate: float
    frauds: int  # payments of the day that are fraud (ground truth, known to the simulator)
    frauds_missed: int  # ... that the system approved
    fraud_losses: float  # amount of the approved frauds, as the system of record has it
    flagged: int  # payments sent to review or declined (each costs a review)
    legit_declined: int  # good customers turned away
    frauds_declined: int  # frauds declined outright, with no analyst needed
    # Frauds the model flagged that exploration approved (serving.exploration_share).
    frauds_explored: int
    explored_losses: float  # ... and their amount: what exploration cost in fraud
    cost: float  # fraud losses + review cost x flagged: the cost the threshold minimises
    canary_requests: int
    champion_version: str
    challenger_version: str
    findings: dict[str, dict[str, Any]]  # job -> {status, metrics}
    decisions: list[dict[str, Any]]  # triggered rules, taken or held back
    events: list[Event] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock per phase
    minute_runs: int = 0  # runs of the minute jobs (guardrails, freshness, parity) that day

    def metric(self, job: str, name: str) -> float:
        value = self.findings.get(job, {}).get("metrics", {}).get(name)
        return float(value) if value is not None else math.nan

    def status(self, job: str) -> str:
        return str(self.findings.get(job, {}).get("status", "-"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def true_recall(
    records: list[DayRecord], day: int, lookback_days: float, *, of_model: bool = False
) -> float:
    """The share of the frauds of the monitor's window ending with `day` that the system
    flagged, from the simulator's truth: what the performance job's recall estimates
    once every label is in (all routes; a story with a canary mixes them). `of_model`:
    the model's own decisions, the frauds exploration approved counted as caught (what
    the performance job's `ipw_recall` estimates)."""
    window = [r for r in records if day - lookback_days < r.day <= day]
    frauds = sum(r.frauds for r in window)
    caught = sum(r.frauds - r.frauds_missed for r in window)
    if of_model:
        caught += sum(r.frauds_explored for r in window)
    return caught / frauds if frauds else math.nan


def traffic_figures(
    requests: pd.DataFrame, transactions: pd.DataFrame, review_cost: float
) -> dict[str, Any]:
    """The day's answers joined to the simulator's truth: scores, decisions, losses, and
    the cost as training defines it (a missed fraud costs its amount, a flag a review)."""
    if requests.empty:
        nan = math.nan
        return dict.fromkeys(["score_p50", "score_p90", "score_p99"], nan) | {
            "review_rate": nan,
            "decline_rate": nan,
            "frauds": 0,
            "frauds_missed": 0,
            "fraud_losses": 0.0,
            "flagged": 0,
            "legit_declined": 0,
            "frauds_declined": 0,
            "frauds_explored": 0,
            "explored_losses": 0.0,
            "cost": 0.0,
            "canary_requests": 0,
        }
    truth = transactions.set_index("transaction_id")[["is_fraud", "amount"]]
    joined = requests.join(truth, on=table_ids(requests["transaction_id"]), rsuffix="_recorded")
    fraud = joined["is_fraud"].fillna(0).astype(bool)
    missed = fraud & (joined["decision"] == "approve")
    by_exploration = fraud & explored(joined["decision"], joined["model_decision"])
    flagged = int((joined["decision"] != "approve").sum())
    losses = float(joined.loc[missed, "amount_recorded"].sum())
    champion_scores = joined.loc[joined["route"] == "champion", "score"].to_numpy()
    p50, p90, p99 = (
        np.percentile(champion_scores, [50, 90, 99]) if len(champion_scores) else [math.nan] * 3
    )
    return {
        "score_p50": float(p50),
        "score_p90": float(p90),
        "score_p99": float(p99),
        "review_rate": float((joined["decision"] != "approve").mean()),
        "decline_rate": float((joined["decision"] == "decline").mean()),
        "frauds": int(fraud.sum()),
        "frauds_missed": int(missed.sum()),
        "fraud_losses": losses,
        "flagged": flagged,
        "legit_declined": int((~fraud & (joined["decision"] == "decline")).sum()),
        "frauds_declined": int((fraud & (joined["decision"] == "decline")).sum()),
        "frauds_explored": int(by_exploration.sum()),
        "explored_losses": float(joined.loc[by_exploration, "amount_recorded"].sum()),
        "cost": losses + review_cost * flagged,
        "canary_requests": int((joined["route"] == "canary").sum()),
    }


def monitor_figures(run: MonitorRun) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    findings = {
        f["job"]: {"status": f["status"], "metrics": f["metrics"], "summary": f["summary"]}
        for f in run.findings
    }
    decisions = [
        {
            "rule": d.rule,
            "job": d.job,
            "action": d.action,
            "value": d.value,
            "taken": d.taken,
            "held_back": d.held_back,
            "outcome": d.outcome,
        }
        for d in run.decisions
    ]
    return findings, decisions


def frame(records: list[DayRecord]) -> pd.DataFrame:
    """The timeline as a table with the monitored figures as columns, for plots."""
    rows = []
    for r in records:
        rows.append(
            {
                "day": r.day,
                "date": pd.Timestamp(r.date),
                "score_p50": r.score_p50,
                "score_p90": r.score_p90,
                "score_p99": r.score_p99,
                "review_rate": r.review_rate,
                "decline_rate": r.decline_rate,
                "fraud_losses": r.fraud_losses,
                "cost": r.cost,
                "legit_declined": r.legit_declined,
                "fallback_rate": r.fallbacks / r.requests if r.requests else math.nan,
                "drift_share": r.metric("drift", "drift_share"),
                "score_drift": r.metric("drift", "score_drift"),
                "score_psi": r.metric("drift", "score_drift_statistic"),
                "skew_max_mismatch": r.metric("skew", "max_mismatch_rate"),
                "precision": r.metric("performance", "precision"),
                "recall": r.metric("performance", "recall"),
                "missed_fraud_ratio": r.metric("performance", "missed_fraud_ratio"),
                "label_coverage": r.metric("performance", "label_coverage"),
                "canary_delta_ap": r.metric("canary", "delta_ap"),
            }
        )
    return pd.DataFrame(rows)
