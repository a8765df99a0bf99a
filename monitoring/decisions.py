"""The decision log: every monitor run appends what it measured, what the policy
decided and why, the reports it wrote, and what each action did. JSON lines, one run
per line, append-only: the audit trail a postmortem starts from. A torn line (a crash
mid-write) is skipped with a warning, not fatal to every later run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.findings import Finding
from monitoring.journal import append_json_line, read_json_lines
from monitoring.policy import Action, Policy


@dataclass
class Decision:
    rule: str
    job: str
    action: Action
    condition: str
    value: float | None
    why: str
    taken: bool = False
    held_back: str = ""  # why a triggered action was not taken (cool-down, ...)
    outcome: str = ""  # what the action did, or why it failed
    judged: str | None = None  # the model version the finding judged, if any
    failed: bool = False  # tried and failed: not taken, no cool-down, tried again next run


@dataclass
class MonitorRun:
    now: str
    since: str
    until: str
    findings: list[dict[str, Any]]
    decisions: list[Decision] = field(default_factory=list)
    reports_dir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


def triggered(policy: Policy, findings: list[Finding]) -> list[Decision]:
    """Every rule whose condition holds, in policy order (the findings it acts on are
    marked as alerts: Policy.judge)."""
    return [
        Decision(
            rule.name,
            rule.job,
            rule.action,
            rule.condition(),
            finding.metrics.get(rule.metric),
            rule.why,
            judged=_judged_version(finding),
        )
        for rule, finding in policy.judge(findings)
    ]


def _judged_version(finding: Finding) -> str | None:
    """The version an action on this finding may touch: the challenger the canary
    judged, or the champion whose performance was measured."""
    key = {"canary": "challenger_version", "performance": "champion_version"}.get(finding.job)
    value = finding.details.get(key) if key else None
    return str(value) if value else None


class DecisionLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def runs(self) -> list[dict[str, Any]]:
        return read_json_lines(self.path)

    def append(self, run: MonitorRun) -> None:
        append_json_line(self.path, asdict(run))

    def last_taken(self, action: Action) -> pd.Timestamp | None:
        """Monitor time of the latest run that took this kind of action."""
        latest = None
        for run in self.runs():
            if any(d["action"] == action and d["taken"] for d in run["decisions"]):
                latest = pd.Timestamp(run["now"])
        return latest
