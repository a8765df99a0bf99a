"""What a monitoring job reports: the contract between the jobs and the policy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "alert", "insufficient_data"]
Job = Literal["drift", "skew", "performance", "canary"]


@dataclass
class Finding:
    """One job's result over one window.

    `metrics` holds the numbers the policy thresholds refer to (flat, name -> float);
    `details` holds what a person needs to act (per-feature tables, examples, tests
    used); `reports` the paths of any files written (HTML, JSON).
    """

    job: Job
    status: Status
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
