"""The decision log: every monitor run appends what it measured, what the policy
decided and why, the reports it wrote, and what each action did. JSON lines, one run
per line, append-only: the audit trail a postmortem starts from. A torn line (a crash
mid-write) is skipped with a warning, not fatal to every later run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
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

    def as_row(self) -> dict[str, Any]:
        """As `asdict` has it, without deep-copying the findings (plain dicts already):
        the minute jobs append a run every few minutes."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        return row | {"decisions": [asdict(d) for d in self.decisions]}

    def to_json(self) -> str:
        return json.dumps(self.as_row(), default=str)


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
    key = {
        "canary": "challenger_version",
        "guardrail": "challenger_version",
        "performance": "champion_version",
    }.get(finding.job)
    value = finding.details.get(key) if key else None
    return str(value) if value else None


@dataclass
class _Index:
    """What the policy asks of the log on every run, kept up to date by reading only
    the lines appended since (the minute jobs add hundreds of runs a day)."""

    offset: int = 0
    taken: dict[str, pd.Timestamp] = field(default_factory=dict)  # action -> latest run
    held: dict[str, pd.Timestamp] = field(default_factory=dict)  # a rule held, taken or not


_INDEXES: dict[Path, _Index] = {}


class DecisionLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def runs(self) -> list[dict[str, Any]]:
        return read_json_lines(self.path)

    def append(self, run: MonitorRun) -> None:
        """A run that acted (or tried to) is fsynced; any other is not: losing it in a
        crash costs nothing, and the minute jobs would spend most of each run on it."""
        acted = any(d.taken or d.failed for d in run.decisions)
        append_json_line(self.path, run.as_row(), durable=acted)

    def last_taken(self, action: Action) -> pd.Timestamp | None:
        """Monitor time of the latest run that took this kind of action."""
        return self._index().taken.get(action)

    def last_held(self, action: Action) -> pd.Timestamp | None:
        """Monitor time of the latest run where a rule with this action held."""
        return self._index().held.get(action)

    def _index(self) -> _Index:
        index = _INDEXES.setdefault(self.path.resolve(), _Index())
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < index.offset:  # a new log in the same place: start over
            index = _INDEXES[self.path.resolve()] = _Index()
        if size == index.offset:
            return index
        with self.path.open("rb") as handle:
            handle.seek(index.offset)
            appended = handle.read()
        whole = appended[: appended.rfind(b"\n") + 1]  # a line still being written waits
        index.offset += len(whole)
        for line in whole.decode().splitlines():
            try:
                run: dict[str, Any] = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError:
                continue  # a torn line: read_json_lines warns about it
            decisions = run.get("decisions", ())
            if not decisions:
                continue
            now = pd.Timestamp(run["now"])
            for d in decisions:
                index.held[d["action"]] = max(now, index.held.get(d["action"], now))
                if d["taken"]:
                    index.taken[d["action"]] = max(now, index.taken.get(d["action"], now))
        return index
