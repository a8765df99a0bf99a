"""The compose file's access control, run for real (issue 11, finding 9): its Redis
command line on a private redis-server, its MLflow auth settings on a real tracking
server, each on loopback with test secrets put where compose puts the environment's.
No Docker engine runs here, so what is checked is exactly what compose would start,
minus the container: the default Redis user is refused, the project's user can do what
Feast needs and nothing dangerous, and the registry refuses anyone without the
password the API and the monitor are given."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fraudlab.redis_client import redis_client
from fraudlab.settings import Settings
from fraudlab.stack.services import check_redis
from serving.process import free_port
from tests.reliability.conftest import ChildService

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "REDIS_PASSWORD": "redis-test-secret-41d2",
    "MLFLOW_PASSWORD": "mlflow-test-secret-9a0e",
    "MLFLOW_SECRET_KEY": "flask-test-key-77b1",
    "POSTGRES_PASSWORD": "unused-here",
    "FRAUDLAB_ADMIN_TOKEN": "unused-here-too",
}
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _filled(value: object) -> str:
    """A compose value with each ${VAR:?message} replaced by the test's secret."""
    return REQUIRED.sub(lambda m: SECRETS[m[1]], str(value))


def _fraudlab_env(compose: dict) -> dict[str, str]:
    return {key: _filled(value) for key, value in compose["x-fraudlab-env"].items()}


def test_redis_refuses_its_default_user_and_lets_fraudlab_do_only_safe_things(
    compose: dict, tmp_path: Path
) -> None:
    port = free_port()
    argv = [_filled(part) for part in compose["services"]["redis"]["command"]]
    assert argv[0] == "redis-server"

    def pong_as_fraudlab() -> bool:
        try:
            client = redis.Redis(port=port, username="fraudlab", password=SECRETS["REDIS_PASSWORD"])
            return bool(client.ping())
        except redis.RedisError:
            return False

    command = [*argv, "--port", str(port), "--bind", "127.0.0.1"]
    server = ChildService("redis-server", command, pong_as_fraudlab, tmp_path / "redis.log")
    server.start()
    try:
        with pytest.raises(redis.AuthenticationError):  # NOAUTH: the default user is off
            redis.Redis(port=port, socket_timeout=2).get("k")
        # The connection string the API and monitor get, pointed at this server.
        connection = _fraudlab_env(compose)["FRAUDLAB_REDIS_CONNECTION"]
        connection = connection.replace("redis:6379", f"127.0.0.1:{port}", 1)
        assert check_redis(Settings(redis_connection=connection)) == f"redis://127.0.0.1:{port}/0"
        from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

        # Feast's own client, from Feast's own parse of that string.
        feast = RedisOnlineStore()._get_client(RedisOnlineStoreConfig(connection_string=connection))
        feast.hset("fraudlab:test", mapping={"feature": "1.5"})
        assert feast.hgetall("fraudlab:test") == {b"feature": b"1.5"}
        # The payment stream's commands, through the client the publisher and worker use.
        stream = redis_client(connection, timeout_seconds=2)
        stream.xgroup_create("fraudlab:test:stream", "g", id="0", mkstream=True)
        stream.xadd("fraudlab:test:stream", {"event": "1"}, maxlen=1_000, approximate=True)
        ((_, [(entry, _)]),) = stream.xreadgroup("g", "w", {"fraudlab:test:stream": ">"})
        assert stream.xack("fraudlab:test:stream", "g", entry) == 1
        assert stream.xinfo_groups("fraudlab:test:stream")[0]["pending"] == 0
        with pytest.raises(redis.exceptions.NoPermissionError):
            feast.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            feast.config_get("requirepass")
    finally:
        server.stop()


def test_the_registry_refuses_anyone_without_the_services_password(
    compose: dict, tmp_path: Path
) -> None:
    spec = compose["services"]["mlflow"]
    argv = [str(part) for part in spec["command"]]
    app_name = argv[argv.index("--app-name") + 1]
    assert app_name == "basic-auth"
    env = {key: _filled(value) for key, value in spec["environment"].items()}
    del env["MLFLOW_BACKEND_STORE_URI"]  # PostgreSQL in compose; a file here
    env["MLFLOW_AUTH_CONFIG_PATH"] = env["MLFLOW_AUTH_CONFIG_PATH"].replace(
        "/app/", f"{REPO_ROOT}/", 1
    )  # the image's copy of the repository is /app
    assert Path(env["MLFLOW_AUTH_CONFIG_PATH"]).is_file()
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:  # compose's health check: /health, no credentials
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    command = [sys.executable, "-m", "mlflow", "server", "--app-name", app_name]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = ChildService("mlflow basic-auth", command, healthy, tmp_path / "mlflow.log")
    server.cwd, server.env = tmp_path, env  # compose's working_dir and environment
    server.start()
    try:
        search = f"{url}/api/2.0/mlflow/registered-models/search"
        assert httpx.get(search, timeout=10).status_code == 401
        wrong = httpx.get(search, auth=("fraudlab", "not-the-password"), timeout=10)
        assert wrong.status_code == 401
        client_env = _fraudlab_env(compose)
        user, password = (
            client_env["MLFLOW_TRACKING_USERNAME"],
            client_env["MLFLOW_TRACKING_PASSWORD"],
        )
        assert httpx.get(search, auth=(user, password), timeout=10).status_code == 200
        # MLflow's own client, given what the API and the monitor are given.
        with pytest.MonkeyPatch.context() as env_of_a_service:
            env_of_a_service.setenv("MLFLOW_TRACKING_USERNAME", user)
            env_of_a_service.setenv("MLFLOW_TRACKING_PASSWORD", password)
            MlflowClient(tracking_uri=url).create_registered_model("fraud-detector")
            assert [m.name for m in MlflowClient(url).search_registered_models()] == [
                "fraud-detector"
            ]
        with pytest.raises(MlflowException, match=r"401|[Uu]nauthori"):
            MlflowClient(tracking_uri=url).create_registered_model("planted-model")
    finally:
        server.stop()
