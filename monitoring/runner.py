"""One monitor run: read the log, run the jobs, apply the policy, act, record.

Drift and skew look at the window itself (what serving saw today). Performance and the
canary need labels, which arrive weeks late, so they look back further (the policy's
`jobs.performance.label_lookback_days`) and count only the chargebacks that have
arrived by now.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

import pandas as pd
from mlflow.exceptions import MlflowException

from client.admin import ServingAdmin
from data.labels import read_label_feed
from data.validate import load_transactions
from features.store import open_store
from fraudlab.errors import ModelUnavailable
from fraudlab.settings import Settings
from monitoring import actions
from monitoring.actions import ActionOutcome
from monitoring.canary import run_canary
from monitoring.decisions import Decision, DecisionLog, MonitorRun, triggered
from monitoring.drift import run_drift
from monitoring.evidently_workspace import add_drift_snapshot
from monitoring.findings import Finding
from monitoring.freshness import run_freshness
from monitoring.journal import ActionJournal, Entry, monitor_lock
from monitoring.minute_jobs import run_minute_jobs
from monitoring.performance import VersionReference, run_performance
from monitoring.policy import ACTIONS, Action, Policy
from monitoring.skew import run_skew
from monitoring.window import Window
from pipelines.calibration import Calibration
from pipelines.reference import load_reference
from pipelines.registry import connect, version_tags
from serving.prediction_log import read_predictions, read_shadow_scores, table_ids

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def run_jobs(
    settings: Settings,
    window: Window,
    policy: Policy,
    progress: Progress,
    *,
    html: bool = True,
    transactions: pd.DataFrame | None = None,
) -> tuple[list[Finding], str]:
    """Every job over the window; returns the findings and the reports folder."""
    out_dir = settings.monitoring_dir / "runs" / window.until.strftime("%Y%m%dT%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    if transactions is None:  # the system of record, and the chargeback feed
        transactions = load_transactions(settings)
    label_events = read_label_feed(settings.label_feed_path, transactions)  # None: the file's
    log_path = settings.prediction_log_path
    current = with_recorded_amount(
        read_predictions(log_path, window.since, window.until), transactions
    )
    reference = load_reference(settings)
    features = reference.features
    champion_rows = current[current["route"] == "champion"]
    progress(
        f"drift: {len(champion_rows):,} requests against champion v{reference.version}'s reference"
    )
    jobs = policy.jobs
    drift = run_drift(
        champion_rows,
        reference.frame,
        features,
        out_dir,
        jobs.drift,
        html=html,
        at=window.until.to_pydatetime(),
        keep_snapshot=lambda snapshot: _keep_in_workspace(settings, snapshot),
    )
    findings = [drift]
    progress("skew: recomputing served features offline at the same timestamps")
    findings.append(
        run_skew(
            open_store(settings),
            current,
            features,
            out_dir,
            jobs.skew,
            service_name=reference.tags.feature_service,
            sample_rows=settings.monitoring.skew_sample_rows,
        )
    )
    progress("freshness: the age of every served feature value against its objective")
    findings.append(run_freshness(current, jobs.freshness, out_dir))
    # Label jobs read the request and its scores, not the feature vector.
    lookback = jobs.performance.label_lookback_days
    since = window.until - pd.Timedelta(days=lookback)
    history = read_predictions(log_path, since, window.until, with_features=False)
    progress(f"performance: {len(history):,} requests of the last {lookback:g} days")
    findings.append(
        run_performance(
            history,
            transactions,
            window.until,
            jobs.performance,
            review_cost=settings.training.review_cost,
            label_events=label_events,
            references=references_of(settings, history["model_version"].unique()),
        )
    )
    # A trial runs while a challenger is serving: the newest request names it. Once it is
    # promoted or rolled back, its old rows must not be judged (and acted on) again.
    latest = history["challenger_version"].iloc[-1] if len(history) else None
    if isinstance(latest, str) and latest:
        trial = history[history["challenger_version"] == latest]
        shadow = read_shadow_scores(log_path, trial["request_id"])
        progress(f"canary: challenger v{latest} against the champion on matured labels")
        canary = run_canary(trial, shadow, transactions, window.until, jobs.canary, label_events)
        canary.details["challenger_version"] = latest  # what a promote or rollback may touch
        findings.append(canary)
    return findings, str(out_dir)


def _keep_in_workspace(settings: Settings, snapshot: Any) -> None:
    """The report into the home's Evidently workspace (the history `evidently ui`
    shows). A view, not a decision: if it cannot be written, the run goes on, logged."""
    try:
        add_drift_snapshot(settings.evidently_workspace_dir, settings.training.model_name, snapshot)
    except Exception as exc:  # Evidently's storage raises its own errors as well as OSError
        log.warning("drift report not added to the Evidently workspace: %r", exc)


def references_of(settings: Settings, versions: Iterable[str]) -> dict[str, VersionReference]:
    """Each logged version's reference, from its registry tags (a version the registry
    no longer has is left out: its scores are read as they are, no missed-fraud
    verdict)."""
    client, name = connect(settings), settings.training.model_name
    found = {}
    for version in versions:
        try:
            tags = version_tags(client, name, str(version))
        except (MlflowException, ModelUnavailable) as exc:
            log.warning("no reference for version %s (%s)", version, exc)
            continue
        found[str(version)] = VersionReference(
            Calibration.from_tags(
                tags.calibration_slope, tags.calibration_intercept, tags.calibration_points
            ),
            tags.missed_fraud_rate or math.nan,  # 0: registered before the tag existed
            pd.Timestamp(tags.labels_as_of, tz="UTC"),
        )
    return found


def with_recorded_amount(requests: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Each request's amount as the transactions table recorded it (for the skew job)."""
    recorded = transactions.set_index("transaction_id")["amount"]
    return requests.assign(
        recorded_amount=table_ids(requests["transaction_id"]).map(recorded).astype("float64")
    )


def decide_and_act(
    settings: Settings,
    policy: Policy,
    findings: list[Finding],
    now: pd.Timestamp,
    decision_log: DecisionLog,
    execute: bool,
    journal: ActionJournal | None = None,
) -> list[Decision]:
    journal = journal or ActionJournal(settings.action_journal_path)
    admin = ServingAdmin(settings)
    # An action an earlier run began and never finished comes first: it was decided
    # on that run's evidence and is written to be resumed (monitoring/actions.py).
    resumed = [
        _resume(settings, policy, entry, admin, now, journal)
        for entry in (journal.interrupted() if execute else [])
    ]
    decisions = triggered(policy, findings)
    # Asked of the API only when a decision turns on it: most runs of the minute jobs
    # decide nothing, and would each spend a request on the answer.
    tripped = functools.cache(lambda: breaker_tripped(admin, decision_log))
    decisions += breaker_release(policy, decisions, findings, now, decision_log, tripped)
    done: set[str] = {d.action for d in resumed if d.taken}
    # A challenger still waiting for labels is the answer to the last retrain: replacing
    # it with a newer one every cool-down would restart its trial before it can finish.
    on_trial = any(f.job == "canary" and f.details.get("outcome") == "wait" for f in findings)
    for decision in sorted(decisions, key=lambda d: ACTIONS.index(d.action)):
        last = max(
            (
                t
                for t in (
                    decision_log.last_taken(decision.action),
                    journal.last_done(decision.action),
                )
                if t is not None
            ),
            default=None,
        )
        cooldown = pd.Timedelta(hours=policy.cooldown_hours[decision.action])
        if decision.action in done:
            decision.held_back = f"a {decision.action} was already taken in this run"
        elif decision.action == "mitigate" and tripped():
            decision.held_back = "the breaker is already tripped"
        elif last is not None and now - last < cooldown:
            decision.held_back = (
                f"cool-down: last {decision.action} at {last}, "
                f"{cooldown.total_seconds() / 3600:g} h not yet passed"
            )
        elif {"rollback", "promote"} & done and decision.action == "retrain":
            decision.held_back = "the model changed in this run; judge it before retraining"
        elif decision.action == "retrain" and on_trial:
            decision.held_back = "a challenger is on trial (canary waiting for labels)"
        elif not execute:
            decision.held_back = "dry run"
        else:
            entry = journal.begin(decision.action, decision.judged, decision.job, now)
            outcome = _execute(
                settings, policy, decision.action, decision.job, decision.judged, admin, now
            )
            journal.finish(entry, not outcome.failed, outcome.detail)
            _record(decision, outcome)
            if decision.taken:
                done.add(decision.action)
    return resumed + decisions


def breaker_tripped(admin: ServingAdmin, decision_log: DecisionLog) -> bool:
    """As serving has it (a person may have released it, a restart reset it); when the
    API cannot say, by the decision log: the latest breaker action taken tripped it."""
    state = admin.routing_state()
    if state is not None and "breaker" in state:
        return bool(state["breaker"] != "off")
    tripped, released = decision_log.last_taken("mitigate"), decision_log.last_taken("release")
    return tripped is not None and (released is None or released < tripped)


def breaker_release(
    policy: Policy,
    decisions: list[Decision],
    findings: list[Finding],
    now: pd.Timestamp,
    decision_log: DecisionLog,
    tripped: Callable[[], bool],
) -> list[Decision]:
    """Release a tripped breaker once no rule that trips it has held for
    `release_after_minutes` and this run's guardrails passed on enough customers: the
    signal is back, and has stayed back (a quiet hour without traffic is no evidence).
    `tripped` is asked last: it may be a request to the API."""
    if any(d.action == "mitigate" for d in decisions):
        return []
    if not any(f.job == "guardrail" and f.status == "ok" for f in findings):
        return []
    last = decision_log.last_held("mitigate")
    quiet = pd.Timedelta(minutes=policy.release_after_minutes)
    if last is None or now - last < quiet or not tripped():
        return []
    return [
        Decision(
            "breaker-release",
            "guardrail",
            "release",
            f"no trip for {policy.release_after_minutes:g} min",
            (now - last).total_seconds() / 60,
            "the signal that tripped the breaker has been within its band since",
        )
    ]


def _record(decision: Decision, outcome: ActionOutcome) -> None:
    decision.outcome = outcome.detail
    decision.failed = outcome.failed
    decision.taken = not outcome.failed  # a failed action starts no cool-down


def _resume(
    settings: Settings,
    policy: Policy,
    entry: Entry,
    admin: ServingAdmin,
    now: pd.Timestamp,
    journal: ActionJournal,
) -> Decision:
    action = cast(Action, entry.action)
    decision = Decision(
        "resume",
        entry.job,
        action,
        f"begun at {entry.at}, never finished",
        None,
        "an earlier monitor run stopped in the middle of this action",
        judged=entry.judged,
    )
    outcome = _execute(settings, policy, action, entry.job, entry.judged, admin, now)
    journal.finish(entry, not outcome.failed, outcome.detail)
    _record(decision, outcome)
    return decision


def _execute(
    settings: Settings,
    policy: Policy,
    action: Action,
    job: str,
    judged: str | None,
    admin: ServingAdmin,
    now: pd.Timestamp,
) -> ActionOutcome:
    try:
        if action == "alert":
            log.warning("ALERT from the %s job", job)
            return ActionOutcome(True, "alert recorded")
        if action == "mitigate":
            log.warning("ALERT from the %s job: tripping the circuit breaker", job)
        if action == "promote":
            return actions.promote(settings, admin, judged)
        if action in ("mitigate", "release"):
            return actions.set_breaker(admin, tripped=action == "mitigate")
        if action == "rollback":
            by_canary = job in ("canary", "guardrail")
            rollback = actions.rollback_canary if by_canary else actions.rollback_champion
            return rollback(settings, admin, judged)
        return actions.retrain(settings, admin, now, policy.canary_share_after_retrain)
    except Exception as exc:  # an action that fails is recorded with its reason, and retried
        log.exception("action %s failed", action)
        return ActionOutcome(False, f"FAILED: {type(exc).__name__}: {exc}", failed=True)


def run_monitor(
    settings: Settings,
    window: Window,
    policy: Policy,
    *,
    execute: bool = True,
    progress: Progress = lambda _: None,
    html: bool = True,
    transactions: pd.DataFrame | None = None,
    minute_jobs_only: bool = False,
) -> MonitorRun:
    """`html`: also write Evidently's drift report (drift.json is always written);
    `transactions`: the home's table when the caller already holds it;
    `minute_jobs_only`: only the jobs run every few minutes (`run_minute_jobs`)."""
    with monitor_lock(settings.monitoring_dir):
        if minute_jobs_only:
            findings, reports = run_minute_jobs(settings, window, policy)
        else:
            findings, reports = run_jobs(
                settings, window, policy, progress, html=html, transactions=transactions
            )
        return _decide_and_record(settings, window, policy, execute, findings, reports)


def _decide_and_record(
    settings: Settings,
    window: Window,
    policy: Policy,
    execute: bool,
    findings: list[Finding],
    reports: str,
) -> MonitorRun:
    decision_log = DecisionLog(settings.decision_log_path)
    decisions = decide_and_act(settings, policy, findings, window.until, decision_log, execute)
    run = MonitorRun(
        now=window.until.isoformat(),
        since=window.since.isoformat(),
        until=window.until.isoformat(),
        findings=[f.to_dict() for f in findings],
        decisions=decisions,
        reports_dir=reports,
    )
    decision_log.append(run)
    return run
