"""The jobs cheap enough to run every few minutes of service time (policy: `minute_jobs`).

Freshness, the guardrails and (every `slow_every_minutes`) store parity and the
challenger's trial so far. They read at most `guardrail.max_answers` of the window's
answers; the run goes to the decision log like any other (fsynced only when it acted).
"""

from __future__ import annotations

import pandas as pd

from features.store import open_store
from fraudlab.settings import Settings
from monitoring.expectations import load_expectations
from monitoring.findings import Finding
from monitoring.freshness import materialized_ages, run_freshness
from monitoring.guardrail import run_guardrail
from monitoring.parity import SnapshotViews, run_parity
from monitoring.policy import Policy
from monitoring.window import Window
from serving.prediction_log import read_predictions, read_trial


def run_minute_jobs(
    settings: Settings, window: Window, policy: Policy
) -> tuple[list[Finding], str]:
    """The jobs cheap enough to run every few minutes (policy: `minute_jobs`):
    freshness (served ages and the materialization watermarks), store parity and the
    guardrails, over the window's answers. A stopped stream worker, a materialization
    that did not run, a unit change or a broken challenger is one of these minutes'
    findings, not the next midnight's. `_decide_and_record` appends the run and its
    evidence to the decision log, fsynced only when an action was taken."""
    jobs = policy.jobs
    current = read_predictions(
        settings.prediction_log_path,
        window.since,
        window.until,
        newest=jobs.guardrail.max_answers,
    )
    views = snapshot_views_of(settings)
    watermarks = materialized_ages(views.views(), window.until)
    minutes = policy.minute_jobs
    slow = passes_multiple(window.until, minutes.every_minutes, minutes.slow_every_minutes)
    findings = [
        run_freshness(current, jobs.freshness, None, watermarks),
        guardrail_finding(settings, policy, window, current, with_trial=slow),
    ]
    if slow:
        findings.append(
            run_parity(views, settings.feature_data_dir, jobs.parity, jobs.skew.tolerance)
        )
    return findings, ""


def passes_multiple(until: pd.Timestamp, every_minutes: float, period_minutes: float) -> bool:
    """Does a multiple of `period_minutes` (counted from midnight UTC) fall in the
    `every_minutes` a run covers, (until - every, until]? Stateless, so a schedule
    that runs every 5 minutes runs a 30-minute job every sixth time, on the half hour."""
    period = pd.Timedelta(minutes=period_minutes)
    start = until - pd.Timedelta(minutes=every_minutes)
    midnight = until.normalize()
    return bool((until - midnight) // period != (start - midnight) // period) or start < midnight


_VIEWS: dict[str, SnapshotViews] = {}


def snapshot_views_of(settings: Settings) -> SnapshotViews:
    """One feature store per home and process: opening one reads the registry and
    the repository's definitions, too slow to repeat every few minutes."""
    key = str(settings.home)
    if key not in _VIEWS:
        _VIEWS[key] = SnapshotViews(open_store(settings))
    return _VIEWS[key]


def guardrail_finding(
    settings: Settings,
    policy: Policy,
    window: Window,
    current: pd.DataFrame,
    with_trial: bool = True,
) -> Finding:
    """The guardrail job on the window, and (`with_trial`) on the challenger's trial so
    far if one runs."""
    config = policy.jobs.guardrail
    if len(current) == 0:
        return run_guardrail(current, None, config)
    last = current.iloc[-1]
    champion = load_expectations(settings, str(last["champion_version"]), config.range_quantile)
    challenger_version = last["challenger_version"]
    if not with_trial or not isinstance(challenger_version, str) or not challenger_version:
        return run_guardrail(current, champion, config)
    since = window.until - pd.Timedelta(hours=config.canary_lookback_hours)
    trial = read_trial(settings.prediction_log_path, challenger_version, since, window.until)
    challenger = load_expectations(settings, challenger_version, config.range_quantile)
    return run_guardrail(current, champion, config, trial_rows(trial), challenger)


def trial_rows(trial: pd.DataFrame) -> pd.DataFrame:
    """One row per payment the challenger scored in its trial: its canary answers, and
    its shadow scores with the champion's decision on the same payment beside them."""
    canary = trial["route"] == "canary"
    return pd.DataFrame(
        {
            "customer_id": trial["customer_id"],
            "score": trial["score"].where(canary, trial["shadow_score"]),
            "decision": trial["model_decision"].where(canary, trial["shadow_decision"]),
            "error": trial["shadow_error"].where(~canary),
            "champion_decision": trial["model_decision"].where(~canary),
        }
    )
