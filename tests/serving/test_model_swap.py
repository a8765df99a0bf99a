"""Hot swap: moving an alias in the registry changes the serving model under load with
no failed request; a version that cannot load is refused and the old one keeps serving.
The swap server has an MLflow store of its own, so these tests may move its aliases."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from mlflow import MlflowClient

from pipelines.registry import CHALLENGER, CHAMPION, connect, set_alias
from tests.serving.conftest import ADMIN_TOKEN, POLL_SECONDS, Fleet, ServingWorld
from tests.serving.live_server import LiveServer

MODEL = "fraud-detector"
# A poll, then loading the version from MLflow (~0.5 s; seconds on a loaded machine).
SWAP_WITHIN_SECONDS = 10 * POLL_SECONDS


class Traffic(threading.Thread):
    """Sends the payments round and round until stopped; remembers every outcome."""

    def __init__(self, server: LiveServer, payments: list[dict]) -> None:
        super().__init__(daemon=True)
        self.server, self.payments = server, payments
        self.outcomes: list[tuple[float, int, str | None]] = []  # (time, status, version)
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            response = self.server.score(self.payments[i % len(self.payments)])
            version = response.json()["model"]["version"] if response.status_code == 200 else None
            self.outcomes.append((time.monotonic(), response.status_code, version))
            i += 1

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.halt.set()
        self.join(timeout=10)


@pytest.fixture(scope="module")
def registry(fleet: Fleet) -> MlflowClient:
    return connect(fleet.swap.settings)


def _serving_version(server: LiveServer, payment: dict) -> str:
    return server.score(payment).json()["model"]["version"]


def test_moving_the_champion_alias_swaps_the_model_under_load_without_errors(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient
) -> None:
    with Traffic(fleet.swap, live_world.payments(50)) as traffic:
        time.sleep(0.3)
        set_alias(registry, MODEL, CHAMPION, live_world.challenger)
        moved_at = time.monotonic()
        deadline = moved_at + 20 * POLL_SECONDS
        while time.monotonic() < deadline:
            if traffic.outcomes and traffic.outcomes[-1][2] == live_world.challenger:
                break
            time.sleep(0.05)
        time.sleep(0.3)
    statuses = Counter(status for _, status, _ in traffic.outcomes)
    assert statuses == {200: len(traffic.outcomes)}, statuses
    versions = [v for _, _, v in traffic.outcomes]
    assert versions[0] == live_world.champion and versions[-1] == live_world.challenger
    first_new = next(t for t, _, v in traffic.outcomes if v == live_world.challenger)
    assert first_new - moved_at < SWAP_WITHIN_SECONDS
    switch = versions.index(live_world.challenger)  # one swap: no flapping back afterwards
    assert set(versions[switch:]) == {live_world.challenger}
    print(f"swap seen after {first_new - moved_at:.2f} s, {len(versions)} requests, 0 errors")


def test_admin_reload_loads_a_moved_alias_at_once(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient
) -> None:
    set_alias(registry, MODEL, CHAMPION, live_world.champion)
    response = fleet.swap.admin("/admin/reload", ADMIN_TOKEN)
    assert response.status_code == 200
    assert response.json() == {
        "loaded": {"champion": live_world.champion, "challenger": live_world.challenger},
        "errors": {},
    }
    assert _serving_version(fleet.swap, live_world.payments(1)[0]) == live_world.champion


def test_a_version_that_fails_to_load_is_refused_and_the_old_one_keeps_serving(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient
) -> None:
    broken = _register_like(
        registry,
        live_world.champion,
        features="amount,log_amount",  # two of its 18 inputs
    )
    set_alias(registry, MODEL, CHAMPION, broken)
    time.sleep(3 * POLL_SECONDS)  # the watcher tries, and refuses, several times
    payment = live_world.payments(1)[0]
    assert _serving_version(fleet.swap, payment) == live_world.champion
    refused = _reload_failures(fleet.swap)
    assert refused >= 1  # counted by the watcher, without anyone calling /admin/reload
    response = fleet.swap.admin("/admin/reload", ADMIN_TOKEN).json()
    assert f"version {broken} refused" in response["errors"]["champion"]
    assert response["loaded"]["champion"] == live_world.champion
    assert _reload_failures(fleet.swap) > refused
    assert fleet.swap.client.get("/readyz").status_code == 200
    set_alias(registry, MODEL, CHAMPION, live_world.champion)


def _reload_failures(server: LiveServer, alias: str = "champion") -> float:
    for line in server.metrics().splitlines():
        if line.startswith(f'fraudlab_model_reload_failures_total{{alias="{alias}"}}'):
            return float(line.split()[-1])
    return 0.0


def _register_like(registry: MlflowClient, version: str, **changed_tags: str) -> str:
    """A new version of the same artifact whose tags differ as given (a mis-tagged one)."""
    good = registry.get_model_version(MODEL, version)
    bad = registry.create_model_version(
        MODEL, good.source, run_id=good.run_id, tags=dict(good.tags) | changed_tags
    )
    return str(bad.version)


@pytest.mark.parametrize(
    "mistag",
    [
        pytest.param("renamed feature", id="renamed-feature"),
        pytest.param("nan threshold", id="nan-threshold"),
        pytest.param("review above decline", id="review-above-decline"),
        pytest.param("unknown service", id="unknown-service"),
    ],
)
def test_a_mis_tagged_challenger_is_refused_and_the_champion_answers_stay_whole(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient, mistag: str
) -> None:
    """Issue 11, finding 1: a `features` tag with one name renamed passed the all-NaN
    probe (same length), then broke every champion answer through the shadow row."""
    features = registry.get_model_version(MODEL, live_world.challenger).tags["features"]
    changed = {
        "renamed feature": {"features": features.replace("amount", "amount_eur", 1)},
        "nan threshold": {"threshold_review": "nan"},
        "review above decline": {"threshold_review": "0.9", "threshold_decline": "0.1"},
        "unknown service": {"feature_service": "fraud_v9"},
    }[mistag]
    bad = _register_like(registry, live_world.challenger, **changed)
    refused = _reload_failures(fleet.swap, "challenger")
    set_alias(registry, MODEL, CHALLENGER, bad)
    try:
        answer = fleet.swap.admin("/admin/reload", ADMIN_TOKEN).json()
        assert f"version {bad} refused" in answer["errors"].get("challenger", ""), answer
        assert answer["loaded"]["challenger"] == live_world.challenger
        assert _reload_failures(fleet.swap, "challenger") > refused
        statuses = Counter(
            fleet.swap.score(p).status_code for p in live_world.payments(40, skip=100)
        )
        assert statuses == {200: 40}, statuses
    finally:
        set_alias(registry, MODEL, CHALLENGER, live_world.challenger)
        fleet.swap.admin("/admin/reload", ADMIN_TOKEN)
