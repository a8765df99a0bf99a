"""Issue 11, findings 2, 7 and 9: the serving snapshot (models and the online-feature
client that serves them) changes in one step or not at all, across feature services
too; a champion alias that reads "not found" keeps the last good champion; a version
whose artifact changed after registration is refused.

A fraud_v1 logistic regression is trained into the swap server's own registry first,
so a swap can change the feature list the online client must fetch. (The module's
name sorts before test_prediction_log, whose last test SIGKILLs the swap server.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    connect,
    load_version,
    log_model_version,
    set_alias,
)
from pipelines.train import run_training
from serving.features import OnlineFeatures
from serving.models import LoadedModels
from serving.schemas import ScoreRequest
from serving.service import ScoringService
from tests.serving.conftest import (
    ADMIN_TOKEN,
    LATENESS,
    POLL_SECONDS,
    SERVING_CUTOFF_DAY,
    Fleet,
    ServingWorld,
)
from tests.serving.live_server import at_simulated_time, furnish, server_home
from tests.serving.test_model_swap import MODEL, Traffic, _reload_failures


@pytest.fixture(scope="module")
def registry(fleet: Fleet) -> MlflowClient:
    return connect(fleet.swap.settings)


@pytest.fixture(scope="module")
def fraud_v1(fleet: Fleet, live_world: ServingWorld, registry: MlflowClient) -> Iterator[str]:
    """A champion-grade version on fraud_v1 (6 features) in the swap registry."""
    (outcome,) = run_training(
        fleet.swap.settings, ["logreg"], "fraud_v1", cutoff_day=SERVING_CUTOFF_DAY
    )
    # The offline gate may have made it the challenger: the tests set aliases themselves.
    set_alias(registry, MODEL, CHALLENGER, live_world.challenger)
    yield outcome.version
    set_alias(registry, MODEL, CHAMPION, live_world.champion)
    set_alias(registry, MODEL, CHALLENGER, live_world.challenger)
    fleet.swap.admin("/admin/reload", ADMIN_TOKEN)


IN_PROCESS_BUDGET_MS = 35.0  # not the default: the client must get the setting's value


@pytest.fixture
def in_process(fleet: Fleet, live_world: ServingWorld, tmp_path: Path) -> Iterator[ScoringService]:
    """A ScoringService in this process on the swap registry, with a home (and so a
    prediction log) of its own; no alias watcher: the test calls refresh itself."""
    settings = server_home(live_world.settings, tmp_path / "home", own_registry=False)
    serving = settings.serving.model_copy(update={"online_budget_ms": IN_PROCESS_BUDGET_MS})
    settings = settings.model_copy(
        update={"mlflow_tracking_uri": fleet.swap.settings.tracking_uri, "serving": serving}
    )
    furnish(live_world.settings, settings)
    settings = at_simulated_time(settings, live_world.clock, LATENESS)
    service = ScoringService(settings)
    try:
        yield service
    finally:
        service.close()
        mlflow.set_tracking_uri(fleet.swap.settings.tracking_uri)


def _request(live_world: ServingWorld, i: int = 0) -> ScoreRequest:
    return ScoreRequest.model_validate(live_world.payments(1, skip=i)[0])


def test_a_swap_to_another_feature_service_never_pairs_new_models_with_the_old_client(
    in_process: ScoringService,
    live_world: ServingWorld,
    registry: MlflowClient,
    fraud_v1: str,
) -> None:
    """Both aliases on fraud_v1, then the champion moves to a fraud_v2 version while
    building the new online client is slow (a Feast registry taking its time): every
    request in between is answered whole by the old snapshot, then by the new one."""
    set_alias(registry, MODEL, CHAMPION, fraud_v1)
    set_alias(registry, MODEL, CHALLENGER, fraud_v1)
    assert in_process.models.refresh() == {}
    building, release = threading.Event(), threading.Event()
    build = in_process._online_for

    def slow_build(loaded: LoadedModels) -> OnlineFeatures:
        building.set()
        release.wait(10)
        return build(loaded)

    in_process.models.online_for = slow_build
    set_alias(registry, MODEL, CHAMPION, live_world.champion)
    refresh = threading.Thread(target=in_process.models.refresh)
    refresh.start()
    try:
        assert building.wait(30), "the reload never reached the client build"
        during = [in_process.score(_request(live_world, i)).model.version for i in range(20)]
    finally:
        release.set()
        refresh.join(30)
    after = in_process.score(_request(live_world)).model.version
    assert during == [fraud_v1] * 20
    assert after == live_world.champion


def test_the_online_client_gets_the_budget_the_settings_give(
    in_process: ScoringService, live_world: ServingWorld, registry: MlflowClient
) -> None:
    """The setting was once dropped on the way to the client, which then used its own
    default: a budget nobody could change."""
    set_alias(registry, MODEL, CHAMPION, live_world.champion)
    set_alias(registry, MODEL, CHALLENGER, live_world.challenger)
    assert in_process.models.refresh() == {}
    online = in_process.models.current.online
    assert online is not None and online.budget_seconds == IN_PROCESS_BUDGET_MS / 1e3


def test_a_client_that_cannot_be_built_refuses_the_swap_and_is_counted(
    in_process: ScoringService,
    live_world: ServingWorld,
    registry: MlflowClient,
    fraud_v1: str,
) -> None:
    set_alias(registry, MODEL, CHAMPION, live_world.champion)
    set_alias(registry, MODEL, CHALLENGER, live_world.challenger)
    assert in_process.models.refresh() == {}

    def broken_build(_: LoadedModels) -> OnlineFeatures:
        raise ConnectionError("injected: the Feast registry did not answer")

    in_process.models.online_for = broken_build
    set_alias(registry, MODEL, CHAMPION, fraud_v1)
    errors = in_process.models.refresh()
    assert "no online features" in errors[CHAMPION], errors
    answer = in_process.score(_request(live_world))
    assert answer.model.version == live_world.champion  # the old snapshot, whole
    ready, _, refused = in_process.ready()
    assert ready and "no online features" in refused[CHAMPION]
    counted = in_process.metrics.reload_failures.labels(CHAMPION)._value.get()
    assert counted >= 1


def test_swaps_across_feature_services_under_load_fail_no_request(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient, fraud_v1: str
) -> None:
    """Champion flips fraud_v2 -> fraud_v1 -> fraud_v2 on the live server, the
    challenger off, while traffic runs: every answer is a 200 from one of the two."""
    registry.delete_registered_model_alias(MODEL, CHALLENGER)
    flips = [fraud_v1, live_world.champion, fraud_v1, live_world.champion]
    seen: list[float] = []
    try:
        with Traffic(fleet.swap, live_world.payments(50, skip=200)) as traffic:
            for version in flips:
                set_alias(registry, MODEL, CHAMPION, version)
                moved = time.monotonic()
                while time.monotonic() - moved < 20 * POLL_SECONDS:
                    if traffic.outcomes and traffic.outcomes[-1][2] == version:
                        seen.append(time.monotonic() - moved)
                        break
                    time.sleep(0.02)
                time.sleep(0.2)
    finally:
        set_alias(registry, MODEL, CHALLENGER, live_world.challenger)
    statuses = Counter(status for _, status, _ in traffic.outcomes)
    versions = Counter(version for _, _, version in traffic.outcomes)
    assert statuses == {200: len(traffic.outcomes)}, statuses
    assert len(seen) == len(flips), seen
    assert set(versions) == {fraud_v1, live_world.champion}
    print(
        f"{len(flips)} cross-service swaps, {len(traffic.outcomes)} requests, 0 errors; "
        f"seen after {', '.join(f'{s:.2f}' for s in seen)} s"
    )


def test_a_champion_alias_that_reads_not_found_keeps_the_last_good_champion(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient, fraud_v1: str
) -> None:
    """Finding 7: the alias deleted (what an empty or wrong backend also answers)."""
    set_alias(registry, MODEL, CHAMPION, live_world.champion)
    fleet.swap.admin("/admin/reload", ADMIN_TOKEN)
    refused = _reload_failures(fleet.swap)
    registry.delete_registered_model_alias(MODEL, CHAMPION)
    try:
        time.sleep(3 * POLL_SECONDS)  # the watcher sees "not found" several times
        statuses = Counter(fleet.swap.score(p).status_code for p in live_world.payments(20))
        ready = fleet.swap.client.get("/readyz")
        answer = fleet.swap.admin("/admin/reload", ADMIN_TOKEN).json()
    finally:
        set_alias(registry, MODEL, CHAMPION, live_world.champion)
    assert statuses == {200: 20}, statuses
    assert answer["loaded"]["champion"] == live_world.champion
    assert "not found" in answer["errors"][CHAMPION]
    assert ready.status_code == 200 and "not found" in ready.json()["refused"][CHAMPION]
    assert _reload_failures(fleet.swap) > refused
    assert alias_version(registry, MODEL, CHAMPION) == live_world.champion


def test_a_version_whose_artifact_changed_after_registration_is_refused(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient
) -> None:
    """Finding 9: a version registered the normal way, then its model file edited in
    the artifact store (one leaf value: LightGBM would still parse it), is refused by
    the digest recorded at registration; the challenger before it keeps serving."""
    good = load_version(registry, MODEL, live_world.challenger)
    assert good.example is not None
    with mlflow.start_run(run_name="tampered-copy"):
        tampered = log_model_version(good.model, good.example, MODEL, good.tags)
    model_id = registry.get_model_version(MODEL, tampered).source.removeprefix("models:/")
    folder = Path(urlparse(mlflow.get_logged_model(model_id).artifact_location).path)
    text = (folder / "model.lgb").read_text()
    (folder / "model.lgb").write_text(text.replace("leaf_value=", "leaf_value=9", 1))
    _assert_challenger_refused(fleet, live_world, registry, tampered, "does not match the digest")


def test_a_pickled_model_is_refused_without_being_unpickled(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient
) -> None:
    """Finding 9: the champion's pipeline registered as cloudpickle (what every baseline
    was until now), with the champion's tags: serving reads no pickle, whatever the tags."""
    good = load_version(registry, MODEL, live_world.champion)
    with mlflow.start_run(run_name="pickled-copy"):
        info = mlflow.sklearn.log_model(
            good.model,
            name="model",
            serialization_format="cloudpickle",
            registered_model_name=MODEL,
            pip_requirements=[],  # inferring them costs ~10 s; this version never runs
        )
    pickled = str(info.registered_model_version)
    for key, value in good.tags.to_tags().items():
        registry.set_model_version_tag(MODEL, pickled, key, value)
    _assert_challenger_refused(
        fleet, live_world, registry, pickled, "a pickled model is never loaded"
    )


def _assert_challenger_refused(
    fleet: Fleet, live_world: ServingWorld, registry: MlflowClient, version: str, why: str
) -> None:
    """`challenger` moved to `version`: the reload refuses it, saying `why`, and the
    challenger before it stays loaded."""
    set_alias(registry, MODEL, CHALLENGER, version)
    try:
        answer = fleet.swap.admin("/admin/reload", ADMIN_TOKEN).json()
    finally:
        set_alias(registry, MODEL, CHALLENGER, live_world.challenger)
    assert why in answer["errors"][CHALLENGER], answer
    assert answer["loaded"][CHALLENGER] == live_world.challenger
