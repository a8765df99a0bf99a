"""Policy actions against a real registry and a real running server: promote, roll back
(champion and canary), retrain through the gate into a canary."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.admin import ServingAdmin
from fraudlab.settings import Settings
from monitoring import actions
from pipelines.registry import CHALLENGER, CHAMPION, alias_version, connect, set_alias
from pipelines.train import run_training
from tests.monitoring.conftest import MonitorWorld
from tests.serving.live_server import LiveServer

TOKEN = "monitor-test-token"


@pytest.fixture(scope="module")
def served(
    monitor_world: MonitorWorld, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, LiveServer]]:
    """A copy of the monitor world's registry, and a server watching it."""
    base = monitor_world.settings
    home = tmp_path_factory.mktemp("actions")
    for linked in ("data", "feature_data", "feast"):
        (home / linked).symlink_to((base.home / linked).resolve())
    shutil.copy(base.home / "mlflow.db", home / "mlflow.db")
    serving = base.serving.model_copy(update={"admin_token": TOKEN, "alias_poll_seconds": 0.5})
    settings = base.model_copy(
        update={
            "home": home,
            "mlflow_tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
            "serving": serving,
        }
    )
    go = home / "go"
    go.touch()
    server = LiveServer(settings).start(go).wait_ready()
    settings = settings.model_copy(
        update={"monitoring": settings.monitoring.model_copy(update={"api_url": server.url})}
    )
    yield settings, server
    server.stop()


def _payment(customer: int = 1) -> dict:
    return {
        "transaction_id": "t1",
        "customer_id": customer,
        "terminal_id": 1,
        "amount": 42.0,
        "timestamp": "2026-02-25T10:00:00Z",
    }


def _serving_version(server: LiveServer, want: str, seconds: float = 15) -> str:
    deadline = time.monotonic() + seconds
    version = ""
    while time.monotonic() < deadline:
        version = server.score(_payment()).json()["model"]["version"]
        if version == want:
            break
        time.sleep(0.2)
    return version


def test_promote_moves_the_champion_and_the_server_follows(served, monitor_world) -> None:
    settings, server = served
    outcome = actions.promote(settings, ServingAdmin(settings))
    client = connect(settings)
    assert outcome.executed, outcome.detail
    assert alias_version(client, "fraud-detector", CHAMPION) == monitor_world.challenger.version
    assert alias_version(client, "fraud-detector", CHALLENGER) is None
    assert (
        _serving_version(server, monitor_world.challenger.version)
        == monitor_world.challenger.version
    )


def test_rollback_restores_the_previous_champion(served, monitor_world) -> None:
    settings, server = served
    outcome = actions.rollback_champion(settings, ServingAdmin(settings))
    assert outcome.executed, outcome.detail
    assert (
        alias_version(connect(settings), "fraud-detector", CHAMPION)
        == monitor_world.champion.version
    )
    assert (
        _serving_version(server, monitor_world.champion.version) == monitor_world.champion.version
    )
    again = actions.rollback_champion(settings, ServingAdmin(settings))
    assert not again.executed and "no earlier champion" in again.detail


def test_canary_rollback_zeroes_the_canary_and_drops_the_challenger(served, monitor_world) -> None:
    settings, server = served
    client = connect(settings)
    set_alias(client, "fraud-detector", CHALLENGER, monitor_world.challenger.version)
    assert server.admin("/admin/reload", TOKEN).status_code == 200
    assert server.admin("/admin/routing", TOKEN, {"canary_share": 1.0}).status_code == 200
    assert server.score(_payment()).json()["route"] == "canary"
    outcome = actions.rollback_canary(settings, ServingAdmin(settings))
    assert outcome.executed, outcome.detail
    assert alias_version(client, "fraud-detector", CHALLENGER) is None
    routing = server.client.get("/admin/routing", headers={"Authorization": f"Bearer {TOKEN}"})
    assert routing.json()["canary_share"] == 0.0
    routes = {server.score(_payment(c)).json()["route"] for c in range(30)}
    assert routes == {"champion"}


def test_retrain_produces_a_gated_challenger_and_starts_its_canary(served, monitor_world) -> None:
    settings, server = served
    # A weak champion (the baseline on the small feature service) so the gate's verdict
    # on a fresh LightGBM is clear on this small world.
    (weak,) = run_training(settings, ["logreg"], "fraud_v1", cutoff_day=55)
    client = connect(settings)
    set_alias(client, "fraud-detector", CHAMPION, weak.version)
    if alias_version(client, "fraud-detector", CHALLENGER):
        client.delete_registered_model_alias("fraud-detector", CHALLENGER)
    outcome = actions.retrain(
        settings, ServingAdmin(settings), monitor_world.day(72), canary_share=0.25
    )
    assert outcome.executed
    challenger = alias_version(connect(settings), "fraud-detector", CHALLENGER)
    assert challenger is not None, outcome.detail  # LightGBM beats the logreg champion
    assert "gate ΔAP" in outcome.detail and "canary 25%" in outcome.detail
    routing = server.client.get("/admin/routing", headers={"Authorization": f"Bearer {TOKEN}"})
    assert routing.json()["canary_share"] == 0.25
    routes = {server.score(_payment(c)).json()["route"] for c in range(60)}
    assert routes == {"champion", "canary"}


def test_actions_report_an_unreachable_server_instead_of_failing(served, tmp_path: Path) -> None:
    settings, _ = served
    offline = settings.model_copy(
        update={
            "monitoring": settings.monitoring.model_copy(update={"api_url": "http://127.0.0.1:9"})
        }
    )
    message = ServingAdmin(offline).set_canary(0.0)
    assert "unreachable" in message
