"""What the policy can do: move aliases in the registry and tell the serving API.

Every action returns an ActionOutcome saying what happened, including what failed:
a rollback whose registry step worked but whose API call did not is recorded as
partial, because the server's alias watcher will still pick the change up.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow import MlflowClient

from client.admin import ServingAdmin
from data.calendar import Calendar
from fraudlab.settings import Settings
from pipelines.registry import CHALLENGER, CHAMPION, alias_version, connect, set_alias
from pipelines.train import run_training

HISTORY_TAG = "champion_history"  # registered-model tag: earlier champions, oldest first


@dataclass
class ActionOutcome:
    executed: bool
    detail: str


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def promote(settings: Settings, admin: ServingAdmin) -> ActionOutcome:
    client, name = connect(settings), settings.training.model_name
    challenger = alias_version(client, name, CHALLENGER)
    champion = alias_version(client, name, CHAMPION)
    if challenger is None:
        return ActionOutcome(False, "no challenger to promote")
    if champion is not None:
        history = [*_history(client, name), champion]
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    set_alias(client, name, CHAMPION, challenger)
    client.delete_registered_model_alias(name, CHALLENGER)
    told = f"{admin.set_canary(0.0)}; {admin.reload()}"
    return ActionOutcome(True, f"champion v{champion} -> v{challenger}; {told}")


def rollback_canary(settings: Settings, admin: ServingAdmin) -> ActionOutcome:
    client, name = connect(settings), settings.training.model_name
    challenger = alias_version(client, name, CHALLENGER)
    told = admin.set_canary(0.0)
    if challenger is None:
        return ActionOutcome(False, f"no challenger alias; canary zeroed anyway ({told})")
    client.delete_registered_model_alias(name, CHALLENGER)
    return ActionOutcome(
        True, f"challenger v{challenger} removed, canary 0; {told}; {admin.reload()}"
    )


def rollback_champion(settings: Settings, admin: ServingAdmin) -> ActionOutcome:
    client, name = connect(settings), settings.training.model_name
    history = _history(client, name)
    if not history:
        return ActionOutcome(False, "no earlier champion to roll back to")
    current, previous = alias_version(client, name, CHAMPION), history[-1]
    set_alias(client, name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[:-1]))
    return ActionOutcome(True, f"champion v{current} -> v{previous}; {admin.reload()}")


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
    told = f"{admin.reload()}; {admin.set_canary(canary_share)}"
    return ActionOutcome(
        True,
        f"retrained v{outcome.version} with labels as of day {cutoff_day}; challenger"
        f"{gate_text}; canary {canary_share:.0%}; {told}",
    )
