"""A production-profile scoring API with its two dependencies run by the tests: a private
redis-server (the Feast online store) and an MLflow tracking server on PostgreSQL, each
a child process the tests can kill and restart on the same loopback port.

PostgreSQL must already run on 127.0.0.1:5432 (trust auth, user postgres); without it
the tests skip, unless FRAUDLAB_REQUIRE_SERVICES=1, where its absence is a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from client.replay import payment_body
from features.store import materialize
from fraudlab.settings import Settings
from pipelines.world import WorldBuilder, WorldRecipe
from serving.process import free_port, running_server
from tests.conftest import TEST_TRAINING, World, reachable, services_required
from tests.serving.conftest import future_payments
from tests.serving.live_server import REPO_ROOT, settings_env

POSTGRES = ("127.0.0.1", 5432)
POSTGRES_ADMIN_URI = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
CUTOFF_DAY = 65  # train and materialize up to day 65 of 75; later payments are the traffic
FUTURE = pd.Timedelta(days=2)  # within the snapshot TTL: the cutoff's features are fresh
LATENESS = FUTURE + pd.Timedelta(hours=1)  # accepted, with the clock at the future's end
ADMIN_TOKEN = "reliability-admin-token-51c9"
POLL_SECONDS = 0.5
START_SECONDS = 60.0  # an MLflow server imports for several seconds on a busy machine


def _wait_until(
    ready: Callable[[], bool], what: str, process: subprocess.Popen, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} at startup")
        if ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not answer within {timeout:.0f} s")


class ChildService:
    """One dependency as a child process in its own session (so its workers go with it),
    on a fixed loopback port so a restart comes back where clients look for it."""

    def __init__(
        self, name: str, command: list[str], health: Callable[[], bool], log: Path
    ) -> None:
        self.name, self.command, self.health, self.log = name, command, health, log
        self.process: subprocess.Popen[bytes] | None = None
        self.cwd: Path | None = None
        self.env: dict[str, str] = {}  # on top of this process's environment

    def start(self) -> ChildService:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.cwd,
                env={**os.environ, **self.env},
            )
        _wait_until(self.health, self.name, self.process, START_SECONDS)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the child's process group (its session: this child and its workers)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if sig != signal.SIGKILL:  # a graceful stop may leave workers finishing up
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


def redis_service(port: int, log: Path) -> ChildService:
    import redis

    def pong() -> bool:
        try:
            return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    return ChildService("redis-server", command, pong, log)


def mlflow_service(port: int, database_uri: str, artifacts: Path, log: Path) -> ChildService:
    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database_uri]
    command += ["--default-artifact-root", artifacts.as_uri(), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    return ChildService("mlflow server", command, healthy, log)


@dataclass
class ProductionWorld:
    settings: Settings
    api: httpx.Client  # the scoring API, base_url set
    redis: ChildService
    mlflow: ChildService
    future: pd.DataFrame  # payments of the 2 days after the cutoff, in time order
    materialize_end: pd.Timestamp
    champion: str

    def payments(self, n: int, skip: int = 0) -> list[dict]:
        return [payment_body(r) for r in self.future.iloc[skip : skip + n].itertuples()]

    def rematerialize(self) -> None:
        materialize(self.settings, end=self.materialize_end.to_pydatetime())

    def admin(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.api.post(path, headers=headers, timeout=60)


def _database(database: str, create: bool) -> None:
    engine = create_engine(POSTGRES_ADMIN_URI, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if create:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
            else:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def production_world(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProductionWorld]:
    if not reachable(POSTGRES):
        message = "PostgreSQL not reachable on 127.0.0.1:5432"
        if services_required():
            pytest.fail(f"{message}, and FRAUDLAB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("reliability")
    home = root / "home"
    home.mkdir()
    for linked in ("data", "feature_data"):
        (home / linked).symlink_to(getattr(world.settings, f"{linked}_dir"))
    database = f"fraudlab_reliability_{uuid.uuid4().hex[:8]}"
    redis_port, mlflow_port = free_port(), free_port()
    settings = world.settings.model_copy(
        update={
            "profile": "production",
            "home": home,
            "redis_connection": f"127.0.0.1:{redis_port}",
            "mlflow_tracking_uri": f"http://127.0.0.1:{mlflow_port}",
            "training": TEST_TRAINING.model_copy(update={"cutoff_day": CUTOFF_DAY}),
            "serving": world.settings.serving.model_copy(
                update={
                    "alias_poll_seconds": POLL_SECONDS,
                    "admin_token": ADMIN_TOKEN,
                    "max_payment_lateness_seconds": LATENESS.total_seconds(),
                }
            ),
        }
    )
    redis = redis_service(redis_port, root / "redis.out")
    mlflow = mlflow_service(
        mlflow_port,
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        root / "artifacts",
        root / "mlflow.out",
    )
    _database(database, create=True)
    try:
        redis.start()
        mlflow.start()
        trained = WorldBuilder(settings, WorldRecipe(models=("logreg",))).build()
        cutoff, version = trained.cutoff, trained.version("logreg")
        env = settings_env(settings) | {
            "FRAUDLAB_PROFILE": "production",
            "FRAUDLAB_REDIS_CONNECTION": settings.redis_connection,
            "FRAUDLAB_SERVING__ALIAS_POLL_SECONDS": str(POLL_SECONDS),
            "FRAUDLAB_SERVING__ADMIN_TOKEN": ADMIN_TOKEN,
        }
        future = future_payments(trained, FUTURE)
        with (
            running_server(env=env, log_file=root / "api.out", cwd=REPO_ROOT) as url,
            httpx.Client(base_url=url, timeout=30.0) as api,
        ):
            # Simulated time: the clock held at the future's end, as a replay would.
            held = api.put(
                "/admin/clock",
                json={"now": (cutoff + FUTURE).isoformat()},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert held.status_code == 200, held.text
            yield ProductionWorld(settings, api, redis, mlflow, future, cutoff, version)
    finally:
        mlflow.stop()
        redis.stop()
        _database(database, create=False)
