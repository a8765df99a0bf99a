"""What the policy can do: move aliases in the registry and tell the serving API.

Every action returns an ActionOutcome: done, refused (nothing to do, or the registry
no longer holds the version that was judged), or failed (tried again next run).

Each action may be cut short between any two steps (a crash, a kill) and run again:
it compares the registry with the version it judged before each step and skips a
step already done, so a resumed action finishes the job instead of repeating it (a
champion rollback never walks back two versions). A reload the API does not answer
is not a failure (its alias watcher finds the change on its next poll); a routing
change it does not acknowledge is.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow import MlflowClient

from client.admin import AdminAnswer, ServingAdmin
from data.calendar import Calendar
from fraudlab.settings import Settings
from pipelines.registry import CHALLENGER, CHAMPION, alias_version, connect, set_alias
from pipelines.train import run_training

HISTORY_TAG = "champion_history"  # registered-model tag: earlier champions, oldest first


@dataclass
class ActionOutcome:
    executed: bool
    detail: str
    failed: bool = False  # tried and did not finish: retried by the next run


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def _told(change: str, routing: AdminAnswer, reload: AdminAnswer | None = None) -> ActionOutcome:
    """The registry part is done; the action is done once the API took the routing."""
    told = f"{routing}" + (f"; {reload}" if reload is not None else "")
    if not routing.ok:
        return ActionOutcome(False, f"{change}; FAILED to change routing: {told}", failed=True)
    return ActionOutcome(True, f"{change}; {told}")


def promote(settings: Settings, admin: ServingAdmin, judged: str | None) -> ActionOutcome:
    """Make the judged challenger champion (earlier champion onto the history)."""
    client, name = connect(settings), settings.training.model_name
    challenger = alias_version(client, name, CHALLENGER)
    champion = alias_version(client, name, CHAMPION)
    judged = judged or challenger
    if judged is None:
        return ActionOutcome(False, "no challenger to promote")
    if champion != judged:  # not yet promoted (a resumed promote may find it done)
        if challenger != judged:
            return ActionOutcome(
                False, f"challenger is v{challenger}, not the judged v{judged}: not promoted"
            )
        history = _history(client, name)
        if champion is not None and history[-1:] != [champion]:
            client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*history, champion]))
        set_alias(client, name, CHAMPION, judged)
    if alias_version(client, name, CHALLENGER) == judged:
        client.delete_registered_model_alias(name, CHALLENGER)
    previous = _history(client, name)[-1:] or ["none"]
    return _told(f"champion v{previous[0]} -> v{judged}", admin.set_canary(0.0), admin.reload())


def rollback_canary(settings: Settings, admin: ServingAdmin, judged: str | None) -> ActionOutcome:
    """Zero the canary, then drop the judged challenger."""
    client, name = connect(settings), settings.training.model_name
    challenger = alias_version(client, name, CHALLENGER)
    judged = judged or challenger
    if challenger is not None and challenger != judged:
        return ActionOutcome(
            False, f"challenger is v{challenger}, not the judged v{judged}: left alone"
        )
    routing = admin.set_canary(0.0)
    if not routing.ok:  # traffic first: the alias stays until the API stops routing to it
        return _told(f"challenger v{judged} kept", routing)
    if challenger is None:
        return ActionOutcome(False, f"no challenger alias; canary zeroed anyway ({routing})")
    client.delete_registered_model_alias(name, CHALLENGER)
    return _told(f"challenger v{judged} removed, canary 0", routing, admin.reload())


def rollback_champion(settings: Settings, admin: ServingAdmin, judged: str | None) -> ActionOutcome:
    """Put the previous champion back in place of the judged one."""
    client, name = connect(settings), settings.training.model_name
    history = _history(client, name)
    current = alias_version(client, name, CHAMPION)
    judged = judged or current
    if history and current == history[-1] and current != judged:
        # Resumed: the alias already moved back; only the history is left to trim.
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[:-1]))
        return ActionOutcome(True, f"champion v{judged} -> v{current} (finished); {admin.reload()}")
    if current != judged:
        return ActionOutcome(False, f"champion is v{current}, not the judged v{judged}: left alone")
    if not history:
        return ActionOutcome(False, "no earlier champion to roll back to")
    previous = history[-1]
    set_alias(client, name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[:-1]))
    return ActionOutcome(True, f"champion v{current} -> v{previous}; {admin.reload()}")


def set_breaker(admin: ServingAdmin, tripped: bool) -> ActionOutcome:
    """Trip the circuit breaker (no payment declined outright: review instead) or
    release it. Done once the API took it; otherwise failed, and tried again."""
    mode = "review_instead_of_decline" if tripped else "off"
    answer = admin.set_breaker(mode)
    change = "breaker tripped: review instead of decline" if tripped else "breaker released"
    if not answer.ok:
        return ActionOutcome(False, f"FAILED to set the breaker ({mode}): {answer}", failed=True)
    return ActionOutcome(True, f"{change}; {answer}")


def retrain(
    settings: Settings, admin: ServingAdmin, now: pd.Timestamp, canary_share: float
) -> ActionOutcome:
    """Retrain with the labels known now (the split ends the training rows weeks before
    now, so their labels have matured); a version that passes the gate gets a canary."""
    cutoff_day = Calendar.of_file(settings.transactions_path).day_of(now)
    (outcome,) = run_training(
        settings, ["lightgbm"], settings.training.feature_service, cutoff_day=cutoff_day
    )
    gate = outcome.gate
    gate_text = (
        ""
        if gate is None
        else (f" (gate ΔAP {gate.delta_ap:+.3f} [{gate.ci_low:+.3f}, {gate.ci_high:+.3f}])")
    )
    if outcome.alias != CHALLENGER:
        return ActionOutcome(
            True,
            f"retrained v{outcome.version} with labels as of day {cutoff_day}; gate refused it"
            f"{gate_text}",
        )
    reload, routing = admin.reload(), admin.set_canary(canary_share)
    # Done even if the API did not take the canary share: retrying would train yet
    # another version; the challenger is registered and the detail says what is missing.
    canary = f"canary {canary_share:.0%}" if routing.ok else "canary share NOT set"
    return ActionOutcome(
        True,
        f"retrained v{outcome.version} with labels as of day {cutoff_day}; challenger"
        f"{gate_text}; {canary}; {reload}; {routing}",
    )
