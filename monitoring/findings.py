"""What a monitoring job reports: the contract between the jobs and the policy.

The jobs and the metrics each reports are declared here, once: a job that reports a
metric not declared fails at once, and a policy rule naming an undeclared one is refused
(monitoring/policy.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

Status = Literal["ok", "alert", "insufficient_data"]
Job = Literal["drift", "skew", "freshness", "parity", "guardrail", "performance", "canary"]

JOB_METRICS: dict[Job, tuple[str, ...]] = {
    "drift": ("drift_share", "drifted_features", "score_drift", "score_drift_statistic"),
    "skew": ("max_mismatch_rate", "skewed_feature_count"),
    "freshness": ("stale_view_count", "worst_stale_share"),
    "parity": ("mismatched_feature_count", "max_mismatch_rate"),
    "guardrail": (
        "customers",
        "input_failures",
        "decision_breaches",
        "fallback_rate",
        "score_psi",
        "canary_breaches",
        "canary_score_psi",
        "agreement_auc",
    ),
    "performance": (
        "model_age_days",
        "worst_slice_recall_ratio",
        "average_precision",
        "recall",
        "precision",
        "cost_per_1k",
        "label_coverage",
        "known_frauds",
        "rows",
        "expected_recall",
        "expected_precision",
        "expected_known_frauds",
        "ipw_recall",
        "explored_frauds",
        "missed_frauds",
        "expected_missed_frauds",
        "missed_fraud_ratio",
        "missed_fraud_p",
    ),
    "canary": (
        "delta_ap",
        "ci_low",
        "ci_high",
        "frauds_needed",
        "known_frauds",
        "decline_ratio",
        "latency_ratio",
        "shadow_error_rate",
        "fallback_excess",
        "outcome_code",
    ),
}
JOBS: tuple[Job, ...] = get_args(Job)
assert set(JOB_METRICS) == set(JOBS)


@dataclass
class Finding:
    """One job's result over one window.

    `metrics` holds the numbers the policy's rules refer to (flat, name -> float);
    `details` holds what a person needs to act (per-feature tables, examples, tests
    used); `reports` the paths of any files written (HTML, JSON). A job reports `ok` or
    `insufficient_data`; `alert` is the policy's word, set when one of its rules holds.
    """

    job: Job
    status: Status
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.metrics) - set(JOB_METRICS[self.job])
        if unknown:
            raise ValueError(f"{self.job} reports undeclared metrics {sorted(unknown)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def saved(self, out_dir: Path) -> Finding:
        """Write it as `<job>.json` in `out_dir` (listed in its reports); returns it."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.job}.json"
        self.reports.append(str(path))
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return self
