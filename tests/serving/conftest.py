"""The serving plane against real servers: models trained on the shared world's data
before day SERVING_CUTOFF_DAY and registered in an MLflow store of our own, the online
store materialized up to that day, and the days after it as the "future" to score.

Starting a server costs seconds of imports, so the four servers the tests need start
together, once per session; each test module says which one it talks to.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from client.replay import payment_body
from data.calendar import Calendar
from fraudlab.settings import Settings
from pipelines.registry import CHALLENGER, CHAMPION
from pipelines.world import World as TrainedWorld
from pipelines.world import WorldBuilder, WorldRecipe
from serving.prediction_log import count_rows, rows_for_requests
from tests.conftest import TEST_SIMULATION, TEST_TRAINING
from tests.conftest import World as SessionWorld
from tests.serving.live_server import LiveServer, at_simulated_time, furnish, server_home

SERVING_CUTOFF_DAY = 65  # train before day 65 of the 75 simulated; days 65.. are the future
ADMIN_TOKEN = "test-admin-token-7f3a"
POLL_SECONDS = 0.5
FUTURE = pd.Timedelta(days=2)  # within the snapshot TTL: the cutoff's features are fresh
LATENESS = FUTURE + pd.Timedelta(hours=1)  # accepted, with the clock at the future's end
# The plain server approves this share of what its model stops (far above a real
# setting, so that a few dozen payments show it).
EXPLORATION_SHARE = 0.3
CLEAN_EXIT = (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its graceful shutdown


@dataclass(frozen=True)
class ServingWorld:
    settings: Settings  # its home holds the MLflow store, Feast registry and online store
    future: pd.DataFrame  # payments of the 2 days after the cutoff (~4,000), in time order
    versions: dict[str, str]  # model kind -> registry version

    @property
    def champion(self) -> str:
        return self.versions["logreg"]

    @property
    def challenger(self) -> str:
        return self.versions["lightgbm"]

    @property
    def clock(self) -> pd.Timestamp:
        """Where the fleet's clocks are held: the end of the future."""
        return self.future["event_timestamp"].min().floor("D") + FUTURE

    def payments(self, n: int, skip: int = 0) -> list[dict]:
        return [payment_body(r) for r in self.future.iloc[skip : skip + n].itertuples()]


@dataclass
class Fleet:
    api: LiveServer  # shadow on, admin token, shared registry (read-only use)
    faulty: LiveServer  # the challenger's scorer can be made slow or crash (faulty_app)
    swap: LiveServer  # a registry copy of its own: tests move aliases, then SIGKILL it
    plain: LiveServer  # no admin token; test_prediction_log stops it cleanly

    @property
    def servers(self) -> list[LiveServer]:
        return [self.api, self.faulty, self.swap, self.plain]


def train_champion_and_challenger(
    settings: Settings, cutoff_day: int = SERVING_CUTOFF_DAY
) -> TrainedWorld:
    """Register logreg (champion) and LightGBM (challenger) on fraud_v2; fill the
    online store with the snapshots of the cutoff day."""
    recipe = WorldRecipe(
        models=("logreg", "lightgbm"),
        cutoff_day=cutoff_day,
        aliases={CHAMPION: "logreg", CHALLENGER: "lightgbm"},
    )
    return WorldBuilder(settings, recipe).build()


def future_payments(world: TrainedWorld, span: pd.Timedelta) -> pd.DataFrame:
    """The payments of `span` after the world's cutoff (the "future"), in time order."""
    tx = world.transactions
    after = (tx["event_timestamp"] >= world.cutoff) & (tx["event_timestamp"] < world.cutoff + span)
    return tx[after].sort_values("event_timestamp", kind="stable").reset_index(drop=True)


@pytest.fixture(scope="session")
def serving_world(
    world: SessionWorld, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServingWorld, Fleet]]:
    """Launch the servers (they import while we train), train, then let them start."""
    root = tmp_path_factory.mktemp("serving")
    home = root / "registry"
    home.mkdir()
    for linked in ("data", "feature_data"):
        (home / linked).symlink_to(getattr(world.settings, f"{linked}_dir"))
    base = Settings(
        home=home,
        simulation=TEST_SIMULATION,
        training=TEST_TRAINING.model_copy(update={"cutoff_day": SERVING_CUTOFF_DAY}),
    )

    cutoff = Calendar.of_file(base.transactions_path).start(SERVING_CUTOFF_DAY)

    def server_settings(name: str, own_registry: bool = False, **serving: object) -> Settings:
        settings = server_home(base, root / name, own_registry)
        # Held at the future's end (the cutoff is day 65's midnight, known before training).
        settings = at_simulated_time(settings, cutoff + FUTURE, LATENESS)
        update = {"alias_poll_seconds": POLL_SECONDS, "admin_token": ADMIN_TOKEN} | serving
        return settings.model_copy(update={"serving": settings.serving.model_copy(update=update)})

    fleet = Fleet(
        api=LiveServer(server_settings("api")),
        faulty=LiveServer(
            server_settings("faulty", shadow_queue_size=20),
            factory="tests.serving.faulty_app:create_app",
        ),
        swap=LiveServer(server_settings("swap", own_registry=True)),
        plain=LiveServer(
            server_settings("plain", admin_token=None, exploration_share=EXPLORATION_SHARE)
        ),
    )
    go_file = root / "go"
    try:
        # The faulty server must know the challenger's version: the next one registered.
        fleet.faulty.extra_env["FAULTY_VERSION"] = "2"
        for server in fleet.servers:
            server.start(go_file)
        trained = train_champion_and_challenger(base)
        versions = {kind: outcome.version for kind, outcome in trained.outcomes.items()}
        assert versions["lightgbm"] == "2", versions
        for server in fleet.servers:
            furnish(base, server.settings)
        assert trained.cutoff == cutoff, (trained.cutoff, cutoff)
        go_file.touch()
        yield ServingWorld(base, future_payments(trained, FUTURE), versions), fleet
    finally:
        go_file.touch()
        running = [server for server in fleet.servers if server.running]
        for server in running:
            server.stop()
        for server in running:  # a clean stop flushes every answered request to the log
            assert server.process is not None
            assert server.process.returncode in CLEAN_EXIT, server.tail()
            assert count_rows(server.log_path) == server.answered, server.settings.home.name


@pytest.fixture(scope="session")
def fleet(serving_world: tuple[ServingWorld, Fleet]) -> Fleet:
    _, fleet = serving_world
    for server in fleet.servers:
        server.wait_ready()
    return fleet


@pytest.fixture(scope="session")
def live_world(serving_world: tuple[ServingWorld, Fleet]) -> ServingWorld:
    return serving_world[0]


def logged_rows(
    path: Path, table: str, request_ids: list[str], timeout: float = 10.0
) -> list[dict]:
    """The log's rows for these requests, once all are written (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = rows_for_requests(path, table, request_ids)
        if len(rows) >= len(request_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
