"""Builders for the reliability tests: a registry trained once per session (logreg as
champion, LightGBM as challenger, online store materialized at the cutoff), servers on
homes of their own with an MLflow store of their own (so tests may move aliases and
kill them), and a fixed-rate load generator that remembers every outcome.

The test modules import `reliability_world` from here; the trained registry is cached
per session, so both modules share one training run.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest

from client.replay import payment_body
from fraudlab.settings import Settings
from tests.conftest import TEST_SIMULATION, TEST_TRAINING, World
from tests.serving.conftest import future_payments, train_champion_and_challenger
from tests.serving.live_server import LiveServer, at_simulated_time, furnish, server_home

CUTOFF_DAY = 65  # train before day 65 of the 75 simulated; the 2 days after it are scored
FUTURE = pd.Timedelta(days=2)  # within the snapshot TTL: the cutoff's features are fresh
POLL_SECONDS = 0.5  # the alias watcher's period on every reliability server
SENDER_THREADS = 8  # enough in-flight requests for 200/s at ~40 ms worst-case latency


@dataclass(frozen=True)
class ReliabilityWorld:
    root: Path  # servers' homes go under it
    settings: Settings  # the trained registry's home (MLflow store, Feast repo, online store)
    payments: list[dict]  # request bodies of the 2 days after the cutoff, in time order
    versions: dict[str, str]  # model kind -> registry version
    clock: pd.Timestamp  # every server's clock is held here: the end of those 2 days

    @property
    def champion(self) -> str:
        return self.versions["logreg"]

    @property
    def challenger(self) -> str:
        return self.versions["lightgbm"]

    def server_settings(self, name: str) -> Settings:
        """A home of its own with a copy of the registry, ready for a server."""
        settings = server_home(self.settings, self.root / name, own_registry=True)
        serving = settings.serving.model_copy(update={"alias_poll_seconds": POLL_SECONDS})
        settings = settings.model_copy(update={"serving": serving})
        furnish(self.settings, settings)
        return at_simulated_time(settings, self.clock, FUTURE + pd.Timedelta(hours=1))


_CACHE: dict[str, ReliabilityWorld] = {}  # one training run per session, whichever module asks


@pytest.fixture(scope="session")
def reliability_world(world: World, tmp_path_factory: pytest.TempPathFactory) -> ReliabilityWorld:
    if "world" not in _CACHE:
        root = tmp_path_factory.mktemp("reliability")
        home = root / "registry"
        home.mkdir()
        for linked in ("data", "feature_data"):
            (home / linked).symlink_to(getattr(world.settings, f"{linked}_dir"))
        base = Settings(
            home=home,
            simulation=TEST_SIMULATION,
            training=TEST_TRAINING.model_copy(update={"cutoff_day": CUTOFF_DAY}),
        )
        trained = train_champion_and_challenger(base, CUTOFF_DAY)
        versions = {kind: outcome.version for kind, outcome in trained.outcomes.items()}
        future = future_payments(trained, FUTURE)
        payments = [payment_body(row) for row in future.itertuples()]
        clock = trained.cutoff + FUTURE
        _CACHE["world"] = ReliabilityWorld(root, base, payments, versions, clock)
    return _CACHE["world"]


def start_server(settings: Settings) -> tuple[LiveServer, float]:
    """Start a server on `settings.home` at once; returns it ready, and its startup time."""
    go_file = settings.home / "go"
    go_file.touch()
    started = time.monotonic()
    server = LiveServer(settings).start(go_file)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server, time.monotonic() - started


@dataclass
class Outcome:
    sent_at: float  # monotonic seconds
    status: int | None  # None: no HTTP answer (connection refused or reset, timeout)
    version: str | None  # the model version that decided, for 200s
    seconds: float  # latency of the answer (or of the failure)
    request_id: str | None = None  # the answer's, for 200s: what the log must hold


@dataclass
class FixedRateLoad:
    """Sends `payments` round and round at `rate` requests/s for at most `duration`
    seconds (open loop: a slow answer does not delay the next send) until stopped."""

    url: str
    payments: list[dict]
    rate: float
    duration: float
    outcomes: list[Outcome] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._schedule, name="load", daemon=True)

    @property
    def answered(self) -> int:
        return sum(o.status == 200 for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def latency_ms(self, quantile: float) -> float:
        seconds = sorted(o.seconds for o in self.outcomes if o.status == 200)
        return 1000 * seconds[min(len(seconds) - 1, int(quantile * len(seconds)))]

    def start(self) -> FixedRateLoad:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(timeout=self.duration + 60)

    def __enter__(self) -> FixedRateLoad:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.halt.set()
        self.join()

    def _schedule(self) -> None:
        with ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="sender") as pool:
            start = time.monotonic()
            for i in range(int(self.rate * self.duration)):
                if self.halt.wait(max(0.0, start + i / self.rate - time.monotonic())):
                    break
                pool.submit(self._send, self.payments[i % len(self.payments)])
        for client in self._clients:
            client.close()

    def _client(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(base_url=self.url, timeout=5.0)
            with self._lock:
                self._clients.append(self._local.client)
        return self._local.client

    def _send(self, payment: dict) -> None:
        sent = time.monotonic()
        try:
            response = self._client().post("/v1/score", json=payment)
        except httpx.HTTPError:
            status, version, request_id = None, None, None
        else:
            status = response.status_code
            body = response.json() if status == 200 else None
            version = body["model"]["version"] if body else None
            request_id = body["request_id"] if body else None
        outcome = Outcome(sent, status, version, time.monotonic() - sent, request_id)
        with self._lock:
            self.outcomes.append(outcome)
