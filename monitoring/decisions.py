"""The decision log: every monitor run appends what it measured, what the policy
decided and why, the reports it wrote, and what each action did. JSON lines, one run
per line, append-only: the audit trail a postmortem starts from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring.findings import Finding
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
    outcome: str = ""  # what the action did, when taken


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
        )
        for rule, finding in policy.judge(findings)
    ]


class DecisionLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def runs(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def append(self, run: MonitorRun) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(run.to_json() + "\n")

    def last_taken(self, action: Action) -> pd.Timestamp | None:
        """Monitor time of the latest run that took this kind of action."""
        latest = None
        for run in self.runs():
            if any(d["action"] == action and d["taken"] for d in run["decisions"]):
                latest = pd.Timestamp(run["now"])
        return latest
