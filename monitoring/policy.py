"""The policy: one YAML file of thresholds and actions, validated before anything runs.

It is the only place a threshold lives. `jobs` holds what each job needs to reach a
finding (how many frauds make evidence, when a feature counts as skewed, the canary's
guardrails); `rules` turn the findings' metrics into actions. A finding is an alert
exactly when a rule acts on it with anything but a promotion (a promotion is good
news): the jobs report `ok` or `insufficient_data`, and `judge` marks the findings.
Cool-downs stop flapping: an action of a kind that already ran less than its cool-down
ago (in monitor time) is held back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fraudlab.errors import ConfigError
from fraudlab.settings import describe_validation_error
from monitoring.findings import JOB_METRICS, Finding, Job

# In the order a run takes them: safety first. `mitigate` trips the circuit breaker
# (serving/routing.py); `release` is the monitor's own, once the signal is back.
Action = Literal["rollback", "mitigate", "release", "promote", "retrain", "alert"]
ACTIONS: tuple[Action, ...] = get_args(Action)
DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftConfig(_Strict):
    min_requests: int = Field(ge=1)  # a window with fewer is insufficient data
    min_column_values: int = Field(ge=2)  # a column with fewer non-missing values is untested
    score_psi_above: float = Field(gt=0)  # the score drifted when its PSI exceeds this


class SkewConfig(_Strict):
    tolerance: float = Field(ge=0)  # relative difference that still counts as equal
    feature_mismatch_above: float = Field(ge=0, le=1)  # a feature is skewed above this share


class MinuteJobsConfig(_Strict):
    """The jobs cheap enough to run every few minutes of service time: freshness,
    store parity and the guardrails (the daily run also looks at the whole day)."""

    every_minutes: float = Field(gt=0, le=1_440)  # how often they run on their own
    window_minutes: float = Field(gt=0, le=1_440)  # over the answers of the last ...
    # Store parity and a challenger's trial so far change slowly (the online store at
    # each materialization, a trial's evidence with every hour of traffic): they run at
    # the multiples of this many minutes (from midnight) that the schedule passes.
    slow_every_minutes: float = Field(gt=0, le=1_440)


class FreshnessConfig(_Strict):
    # view -> the oldest a served value may be, in seconds (serving logs each age)
    objectives_seconds: dict[str, float] = Field(min_length=1)
    stale_share_above: float = Field(ge=0, le=1)  # a view breaks its objective above this
    min_requests: int = Field(ge=1)  # a window with fewer is insufficient data

    @model_validator(mode="after")
    def _known_views(self) -> FreshnessConfig:
        from features.definitions import VIEWS

        unknown = sorted(set(self.objectives_seconds) - set(VIEWS))
        if unknown:
            raise ValueError(f"no such feature view: {', '.join(unknown)}")
        if any(v <= 0 for v in self.objectives_seconds.values()):
            raise ValueError("every freshness objective must be a positive number of seconds")
        return self


class ParityConfig(_Strict):
    sample_entities: int = Field(ge=1)  # per snapshot view, compared with its offline row
    mismatch_above: float = Field(ge=0, le=1)  # a feature differing on more is wrong online


class GuardrailConfig(_Strict):
    """Label-free checks of the last minutes, each a binomial tail test (a count this
    unlikely under the expected share, `alpha`) and an effect large enough to matter.
    Customers, not payments, are counted: one card's burst is one customer."""

    alpha: float = Field(gt=0, lt=0.5)
    min_customers: int = Field(ge=1)  # fewer in the window: insufficient data
    # At most the window's newest this many answers: enough power for every check, and a
    # run that stays well under a second at 1,000 requests/s (benchmarks/monitor.py).
    max_answers: int = Field(ge=100)
    range_quantile: float = Field(gt=0, lt=0.5)  # a feature's band: [q, 1 - q] of the reference
    range_margin: float = Field(ge=0)  # outside means beyond the band by this share of its width
    min_out_of_band_share: float = Field(gt=0, le=1)  # ... for at least this share of customers
    min_missing_change: float = Field(gt=0, le=1)  # missing share moved by at least this
    decision_min_share: float = Field(gt=0, le=1)  # flagging or declining this share, at least
    below_factor: float = Field(gt=1)  # a challenger flagging under 1/this of its band's share
    score_psi_min_requests: int = Field(ge=1)  # the champion's score PSI needs this many
    fallback_min_answers: int = Field(ge=1)  # the fallback rate needs this many answers
    # The challenger, over its trial so far (canary and shadow), against its own reference.
    canary_lookback_hours: float = Field(gt=0)
    canary_min_scores: int = Field(ge=1)
    canary_score_psi_above: float = Field(gt=0)
    # The AUC of the challenger's score for the champion's flag on the same payments.
    canary_min_agreement_auc: float = Field(gt=0, le=1)
    canary_min_champion_flags: int = Field(ge=1)  # ... once the champion flagged this many
    canary_max_error_rate: float = Field(ge=0, le=1)


class PerformanceConfig(_Strict):
    label_lookback_days: float = Field(gt=0)  # how far back label jobs look for arrivals
    min_known_frauds: int = Field(ge=1)  # fewer is insufficient data
    # missed_fraud_p tests for missing more than this many times the version's reference
    missed_fraud_factor: float = Field(ge=1)
    # worst_slice_recall_ratio counts slices with at least this many known frauds
    min_slice_frauds: int = Field(ge=1)


class CanaryConfig(_Strict):
    min_frauds: int = Field(ge=1)  # known frauds in the deciding comparison
    ap_margin: float = Field(ge=0)  # promote unless worse by more than this
    alpha: float = Field(gt=0, lt=0.5)  # error per boundary over the whole trial
    plan_frauds: int = Field(ge=1)  # the evidence at which all of alpha is spent
    look_every_hours: float = Field(gt=0)  # the job's cadence: what one look spends
    bootstrap_rounds: int = Field(ge=20)
    max_decline_ratio: float = Field(gt=0)
    min_declines: int = Field(ge=0)  # customers declined: a ratio on fewer is noise
    decline_alpha: float = Field(gt=0, lt=1)  # ... and a count this unlikely at the max ratio
    max_latency_ratio: float = Field(gt=0)  # model-stage p99, challenger over champion
    min_latency_rows: int = Field(ge=1)  # a p99 needs this many requests to mean anything
    latency_floor_ms: float = Field(ge=0)  # a model-stage p99 below this is never too slow
    max_error_rate: float = Field(ge=0, le=1)  # shadow errors; fallbacks above the champion's


class JobConfigs(_Strict):
    drift: DriftConfig
    skew: SkewConfig
    freshness: FreshnessConfig
    parity: ParityConfig
    guardrail: GuardrailConfig
    performance: PerformanceConfig
    canary: CanaryConfig


class Rule(_Strict):
    name: str = Field(min_length=1)
    job: Job
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

    @property
    def threshold(self) -> float:
        value = next(c for c in (self.above, self.below, self.equals) if c is not None)
        return float(value)

    def condition(self) -> str:
        if self.above is not None:
            return f"{self.metric} > {self.above:g}"
        if self.below is not None:
            return f"{self.metric} < {self.below:g}"
        return f"{self.metric} == {self.equals:g}"


class Policy(_Strict):
    version: Literal[3]
    cooldown_hours: dict[Action, float]  # hours of monitor time, per action
    canary_share_after_retrain: float = Field(ge=0, le=1)
    # A tripped breaker is released once no rule that trips it has held for this long.
    release_after_minutes: float = Field(gt=0)
    minute_jobs: MinuteJobsConfig
    jobs: JobConfigs
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _complete_and_unique(self) -> Policy:
        missing = [a for a in ACTIONS if a not in self.cooldown_hours]
        if missing:
            raise ValueError(f"cooldown_hours needs every action; missing: {missing}")
        negative = [a for a, hours in self.cooldown_hours.items() if hours < 0]
        if negative:
            raise ValueError(f"cooldown_hours must be >= 0; negative: {negative}")
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"rule names must be unique: {names}")
        return self

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise ConfigError(f"the policy has no rule {name!r}")

    def judge(self, findings: list[Finding]) -> list[tuple[Rule, Finding]]:
        """Every rule that holds, in policy order; each finding a rule acts on with
        anything but a promotion becomes an alert."""
        by_job = {f.job: f for f in findings}
        held = [
            (rule, by_job[rule.job])
            for rule in self.rules
            if rule.job in by_job and rule.holds(by_job[rule.job])
        ]
        for rule, finding in held:
            if rule.action != "promote":
                finding.status = "alert"
        return held


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
