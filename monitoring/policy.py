"""The policy: one YAML file of thresholds and actions, validated before anything runs.

A rule watches one metric of one job's finding and names the action to take when the
condition holds. Cool-downs stop flapping: an action of a kind that already ran less
than its cool-down ago (in monitor time) is recorded as held back, not taken again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fraudlab.errors import ConfigError
from fraudlab.settings import describe_validation_error
from monitoring.findings import Finding

Action = Literal["alert", "rollback", "retrain", "promote"]
DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")

# The metrics each job reports (monitoring/*.py); a rule naming another is refused.
JOB_METRICS: dict[str, set[str]] = {
    "drift": {"drift_share", "drifted_features", "score_drift", "score_drift_statistic"},
    "skew": {"max_mismatch_rate", "skewed_feature_count"},
    "performance": {
        "average_precision",
        "recall",
        "precision",
        "cost_per_1k",
        "label_maturity",
        "known_frauds",
    },
    "canary": {
        "delta_ap",
        "ci_low",
        "ci_high",
        "frauds_needed",
        "decline_ratio",
        "latency_ratio",
        "outcome_code",
    },
}


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    job: Literal["drift", "skew", "performance", "canary"]
    metric: str
    above: float | None = None
    below: float | None = None
    equals: float | None = None
    action: Action
    why: str = ""  # shown in the decision log next to the evidence

    @model_validator(mode="after")
    def _one_condition_on_a_known_metric(self) -> Rule:
        conditions = [c for c in (self.above, self.below, self.equals) if c is not None]
        if len(conditions) != 1:
            raise ValueError("give exactly one of above, below or equals")
        if self.metric not in JOB_METRICS[self.job]:
            known = ", ".join(sorted(JOB_METRICS[self.job]))
            raise ValueError(f"job {self.job} has no metric {self.metric!r}; it has: {known}")
        return self

    def holds(self, finding: Finding) -> bool:
        value = finding.metrics.get(self.metric)
        waiting = finding.status == "insufficient_data" and self.job != "canary"
        if value is None or waiting:  # no verdict from a job that lacked data
            return False
        if self.above is not None:
            return value > self.above
        if self.below is not None:
            return value < self.below
        return value == self.equals

    def condition(self) -> str:
        if self.above is not None:
            return f"{self.metric} > {self.above:g}"
        if self.below is not None:
            return f"{self.metric} < {self.below:g}"
        return f"{self.metric} == {self.equals:g}"


class Cooldowns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert: float = Field(6.0, ge=0)  # hours of monitor time
    rollback: float = Field(24.0, ge=0)
    retrain: float = Field(72.0, ge=0)
    promote: float = Field(24.0, ge=0)

    def hours(self, action: Action) -> float:
        return float(getattr(self, action))


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    cooldown_hours: Cooldowns = Cooldowns()
    canary_share_after_retrain: float = Field(0.2, ge=0, le=1)
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"rule names must be unique: {names}")
        return self


def load_policy(path: Path | None = None) -> Policy:
    path = path or DEFAULT_POLICY
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"policy file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"policy file {path} must hold a mapping")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"policy file {path} refused:\n{describe_validation_error(exc)}") from exc
