"""Prometheus alert rules, generated from the monitoring policy.

The policy (monitoring/policy.yaml) is the one owner of every threshold: the monitor
acts on it and the alerts page on it. A rule file written by hand would be a second
copy, wrong from the day someone tunes the policy; `fraudlab monitor alert-rules`
writes deploy/prometheus/alerts.yml from it instead, and a test fails when the two
disagree. Two groups:

- fraudlab-policy: one alert per rule the monitor acts on, on the exporter's copy of
  each job's latest finding (fraudlab/stack/exporter.py): what the monitor saw and did.
- fraudlab-api: the API's own metrics against the same thresholds, so a page still
  comes while the monitor is down or between its runs; and the monitor stalling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from monitoring.policy import DEFAULT_POLICY, Action, Policy, Rule

# Who hears of it, per action. A rollback or a tripped breaker changed what customers
# get: a human looks now. Promote and release are good news: no alert.
SEVERITY: dict[Action, str] = {
    "rollback": "page",
    "mitigate": "page",
    "alert": "warning",
    "retrain": "ticket",
}
MONITOR_DOES: dict[Action, str] = {
    "rollback": "rolls back the model version the finding judged",
    "mitigate": "trips the circuit breaker (declines are served as reviews) until the "
    "signal has been back for release_after_minutes",
    "alert": "records the alert in the decision log and does nothing else",
    "retrain": "retrains on the labels known now; the new version must pass the gate and a canary",
}
OPERATOR = {"above": ">", "below": "<", "equals": "=="}
REQUESTS = "fraudlab_requests_total"


def alert_rules(policy: Policy) -> dict[str, Any]:
    """The rule file's content: the policy's rules, then the API's direct alerts."""
    acted_on = [rule for rule in policy.rules if rule.action in SEVERITY]
    return {
        "groups": [
            {"name": "fraudlab-policy", "rules": [_policy_alert(rule) for rule in acted_on]},
            {"name": "fraudlab-api", "rules": _api_alerts(policy)},
        ]
    }


def alert_rules_yaml(policy: Policy, source: Path = DEFAULT_POLICY) -> str:
    """The rule file as `fraudlab monitor alert-rules` writes it."""
    shown = (
        "monitoring/policy.yaml" if source.resolve() == DEFAULT_POLICY.resolve() else str(source)
    )
    header = (
        f"# Generated from {shown} by `fraudlab monitor alert-rules`: do not edit by hand.\n"
        "# Tune the policy and run the command again; tests/stack/test_alert_rules.py\n"
        "# fails while this file and the policy disagree.\n"
    )
    body = yaml.dump(alert_rules(policy), Dumper=_Dumper, sort_keys=False, width=100)
    return header + body


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer expressions) as literal blocks: one clause a line."""


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def _policy_alert(rule: Rule) -> dict[str, Any]:
    kind = next(k for k in OPERATOR if getattr(rule, k) is not None)
    value = f'fraudlab_monitor_value{{job="{rule.job}",metric="{rule.metric}"}}'
    expr = f"{value} {OPERATOR[kind]} {_number(rule.threshold)}"
    if rule.job != "canary":  # as Rule.holds: no verdict from a job that lacked data
        expr += f'\nunless on (job) fraudlab_monitor_status{{job="{rule.job}"}} == 1'
    return {
        "alert": "Fraudlab" + "".join(part.capitalize() for part in rule.name.split("-")),
        "expr": expr,
        "labels": {"severity": SEVERITY[rule.action], "policy_rule": rule.name},
        "annotations": {
            "summary": rule.why or rule.condition(),
            "description": (
                f"Policy rule {rule.name} holds on the monitor's latest {rule.job} finding "
                f"({rule.condition()}; now {{{{ $value }}}}). The monitor acts on it itself: "
                f"it {MONITOR_DOES[rule.action]}. `fraudlab monitor status` shows its runs."
            ),
        },
    }


def _api_alerts(policy: Policy) -> list[dict[str, Any]]:
    minutes = policy.minute_jobs
    window, wait = f"{_number(minutes.window_minutes)}m", f"{_number(minutes.every_minutes)}m"
    guardrail = policy.jobs.guardrail
    share = _number(guardrail.decision_min_share)
    fallbacks = policy.rule("guardrail-fallbacks")
    lag = policy.jobs.freshness.objectives_seconds["customer_velocity"]
    stalled = 3 * minutes.every_minutes * 60

    def by_route(decisions: str) -> str:
        """The share of a route's answers with these decisions, where the route gave as
        many answers as the guardrail needs customers (fewer: insufficient data)."""
        total = f"sum by (route) (increase({REQUESTS}[{window}]))"
        chosen = f"sum by (route) (increase({REQUESTS}{{{decisions}}}[{window}]))"
        return f"{chosen}\n  / {total}\n  >= {share}\nand {total} >= {guardrail.min_customers}\n"

    def alert(
        name: str, expr: str, severity: str, summary: str, hold: str | None
    ) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": name, "expr": expr}
        if hold:
            rule["for"] = hold
        rule["labels"] = {"severity": severity}
        rule["annotations"] = {"summary": summary}
        return rule

    return [
        alert(
            "FraudlabApiDeclineShare",
            by_route('decision="decline"'),
            "page",
            f"Route {{{{ $labels.route }}}} declined at least {share} of its answers over "
            f"{window}: the bar (jobs.guardrail.decision_min_share) past which the "
            "monitor's guardrail trips the circuit breaker.",
            wait,
        ),
        alert(
            "FraudlabApiFlaggedShare",
            by_route('decision=~"review|decline"'),
            "page",
            f"Route {{{{ $labels.route }}}} flagged (review or decline) at least {share} of "
            f"its answers over {window} (jobs.guardrail.decision_min_share).",
            wait,
        ),
        alert(
            "FraudlabApiFallbackRate",
            f"sum(increase(fraudlab_feature_fallbacks_total[{window}]))\n"
            f"  / sum(increase({REQUESTS}[{window}]))\n"
            f"  > {_number(fallbacks.threshold)}\n",
            SEVERITY[fallbacks.action],
            f"Over {window}, more than {_number(fallbacks.threshold)} of the answers were "
            f"scored on missing or stale features (policy rule {fallbacks.name}).",
            wait,
        ),
        alert(
            "FraudlabApiStreamLag",
            f"fraudlab_stream_lag_seconds > {_number(lag)}\n"
            "or fraudlab_stream_lag_seconds != fraudlab_stream_lag_seconds\n",
            "warning",
            f"The oldest payment event not yet applied is over {_number(lag)} s old, or the "
            "stream is unreachable (NaN): velocity features are stale (the freshness "
            "objective of customer_velocity).",
            wait,
        ),
        alert(
            "FraudlabBreakerTripped",
            "fraudlab_breaker_tripped > 0",
            "warning",
            "The circuit breaker is in force: the model's declines are served as reviews "
            "(the monitor releases it once the signal is back; fraudlab_breaker_overrides "
            "counts them).",
            None,
        ),
        alert(
            "FraudlabMonitorStalled",
            f"time() - fraudlab_monitor_last_run_timestamp_seconds > {_number(stalled)}",
            "page",
            f"The monitor has written no run for over {_number(stalled / 60)} minutes (3 x "
            "minute_jobs.every_minutes), or none yet: no rollback or breaker acts until it runs.",
            None,
        ),
    ]


def _number(value: float) -> str:
    """As short as exact: 0.2, 15, 1e-06 (PromQL reads each)."""
    return format(value, ".15g")
