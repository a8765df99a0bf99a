"""`fraudlab stack up|status|down` for real, in the production profile, against the
PostgreSQL and Redis on localhost: a database and a Redis db of the test's own, free
ports, a temporary home holding the shared world's data. The champion is trained after
`up`, through the stack's tracking server, as `fraudlab demo` would.

Skips when PostgreSQL or Redis is absent, unless FRAUDLAB_REQUIRE_SERVICES=1 (CI),
where absence is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pandas as pd
import psutil
import pytest
import redis
import yaml
from sqlalchemy import create_engine, text

from client.replay import payment_body
from features.store import apply_definitions, materialize
from fraudlab.settings import ServingSettings, Settings
from fraudlab.stack.processes import Record, down, group, read_records, stop, up
from fraudlab.stack.services import Network, native_network, services
from pipelines.train import run_training
from serving.process import free_port
from tests.conftest import (
    TEST_SIMULATION,
    TEST_TRAINING,
    World,
    make_settings,
    reachable,
    services_required,
)

POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
REDIS_TEST_DB = 9  # away from a demo's online store (db 0) and the smoke test's (db 7)
POLL_SECONDS = 0.5  # the API's alias watcher: the champion appears within a poll
CLI_SECONDS = 300  # bound on one CLI call; `up` waits for health checks itself


@dataclass(frozen=True)
class Stack:
    settings: Settings  # the services' settings: production, tracking through the server
    env: dict[str, str]  # the CLI's environment: FRAUDLAB_CONFIG, no other FRAUDLAB_*
    net: Network  # where `stack up` puts each service
    payment: dict

    @property
    def ports(self) -> list[str]:
        """`stack up`'s options for the ports settings do not name."""
        exporter, prometheus = self.net.ports["monitor-exporter"], self.net.ports["prometheus"]
        return ["--exporter-port", str(exporter), "--prometheus-port", str(prometheus)]

    def url(self, service: str) -> str:
        return self.net.url(service)

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """Run `fraudlab ARGS`; its output, after checking it exited 0 without a traceback."""
        done = subprocess.run(
            [sys.executable, "-m", "fraudlab", *args],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=CLI_SECONDS,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def stack(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = [
        name for name, at in (("PostgreSQL", POSTGRES), ("Redis", REDIS)) if not reachable(at)
    ]
    if missing:
        message = f"{' and '.join(missing)} not reachable on localhost"
        if services_required():
            pytest.fail(f"{message}, and FRAUDLAB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("stack")
    home = root / "home"
    home.mkdir()
    for linked in ("data", "feature_data"):
        (home / linked).symlink_to(getattr(world.settings, f"{linked}_dir"))
    database = f"fraudlab_stack_{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("mlflow", "api", "exporter", "prometheus")}
    config = {
        "profile": "production",
        "postgres_uri": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "redis_connection": f"127.0.0.1:6379,db={REDIS_TEST_DB}",
        "mlflow_tracking_uri": f"http://127.0.0.1:{ports['mlflow']}",
    }
    serving = {"port": ports["api"], "alias_poll_seconds": POLL_SECONDS}
    config_file = root / "fraudlab.yaml"
    config_file.write_text(
        yaml.safe_dump(
            config
            | {
                "home": str(home),
                "simulation": TEST_SIMULATION.model_dump(mode="json"),
                "training": TEST_TRAINING.model_dump(mode="json"),
                "serving": serving,
            }
        )
    )
    settings = make_settings(home, **config, serving=ServingSettings(**serving))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDLAB_")}
    env |= {"FRAUDLAB_CONFIG": str(config_file), "COLUMNS": "250"}  # status on one line
    apply_definitions(settings)
    snapshots = pd.read_parquet(settings.feature_data_dir / "customer_spending.parquet")
    end = snapshots["event_timestamp"].max()
    start = (end - pd.Timedelta(days=3)).to_pydatetime()
    materialize(settings, end=(end + pd.Timedelta(seconds=1)).to_pydatetime(), start=start)
    latest = world.transactions.sort_values("event_timestamp").tail(1)
    payment = payment_body(next(latest.itertuples()))
    net = native_network(settings, ports["exporter"], ports["prometheus"])
    yield Stack(settings, env, net, payment)
    down(settings, say=lambda _: None)  # whatever a failed test left running
    engine = create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    engine.dispose()
    redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_TEST_DB).flushdb()


def status_line(output: str, service: str) -> str:
    (line,) = [row for row in output.splitlines() if row.startswith(f"│ {service} ")]
    return line


def wait_until_ready(url: str, seconds: float = 120.0) -> None:
    """Until /readyz answers 200 on ten fresh connections in a row: with two workers,
    each loads the champion on its own alias poll."""
    deadline, streak = time.monotonic() + seconds, 0
    while streak < 10:
        assert time.monotonic() < deadline, f"the API at {url} did not become ready"
        streak = streak + 1 if httpx.get(f"{url}/readyz", timeout=5).status_code == 200 else 0
        time.sleep(0.1)


def test_up_names_the_service_that_cannot_start_and_stops_what_it_started(stack: Stack) -> None:
    with socket.socket() as squatter:  # someone else's server on the API's port
        squatter.bind(("127.0.0.1", stack.settings.serving.port))
        squatter.listen()
        done = subprocess.run(
            [sys.executable, "-m", "fraudlab", "stack", "up", *stack.ports],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=CLI_SECONDS,
        )
    assert done.returncode != 0
    assert "error: api:" in done.stderr and "is taken" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "mlflow: stopped" in done.stdout  # started before the API, so stopped again
    assert read_records(stack.settings) == []


def test_stack_up_serves_through_the_tracking_server_and_down_leaves_nothing(
    stack: Stack,
) -> None:
    output = stack.cli("stack", "up", *stack.ports)
    expected = [s.name for s in services(stack.settings, stack.net)]
    records = read_records(stack.settings)
    assert [r.name for r in records] == [name for name in expected if f"{name}: healthy" in output]
    assert {"mlflow", "api", "monitor-exporter", "monitor"} <= {r.name for r in records}
    api = stack.url("api")
    # Alive before any model exists: the API waits for a champion instead of failing.
    assert httpx.get(f"{api}/readyz", timeout=5).status_code == 503

    (trained,) = run_training(stack.settings, ["logreg"], "fraud_v2")
    assert any((stack.settings.artifact_root).rglob("MLmodel"))  # the file artifact store
    wait_until_ready(api)
    held = httpx.put(  # simulated time: the clock held at the payment's (its token file's)
        f"{api}/admin/clock",
        json={"now": stack.payment["timestamp"]},
        headers={"Authorization": f"Bearer {stack.settings.admin_token()}"},
        timeout=10,
    )
    assert held.status_code == 200, held.text
    answer = httpx.post(f"{api}/v1/score", json=stack.payment, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == {
        "name": stack.settings.training.model_name,
        "version": trained.version,
        "alias": "champion",
    }

    status = stack.cli("stack", "status")
    assert "healthy, ready" in status_line(status, "api")
    for name in ("mlflow", "api", "monitor-exporter", "monitor"):
        assert "running" in status_line(status, name), status
    monitor = next(r for r in records if r.name == "monitor")
    assert psutil.Process(monitor.pid).status() != psutil.STATUS_ZOMBIE
    exported = httpx.get(f"{stack.url('monitor-exporter')}/metrics", timeout=5).text
    assert "fraudlab_monitor_runs_total" in exported

    said: list[str] = []  # a second `up` starts nothing new (in-process: the CLI ran above)
    up(stack.settings, stack.net, said.append)
    assert [line for line in said if "already running" in line] == [
        f"{r.name}: already running (pid {r.pid})" for r in records
    ]
    assert [(r.name, r.pid) for r in read_records(stack.settings)] == [
        (r.name, r.pid) for r in records
    ]

    restarted = _admin_token_and_routing_survive_an_api_restart(stack, said)
    records = [restarted if r.name == "api" else r for r in records]
    processes = [process for record in records for process in group(record)]
    assert len(processes) > len(records)  # the API's and MLflow's workers are in the groups
    stack.cli("stack", "down")
    left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
    assert read_records(stack.settings) == []
    assert not list((stack.settings.home / "stack").glob("*.json"))


def _admin_token_and_routing_survive_an_api_restart(stack: Stack, said: list[str]) -> Record:
    """Issue 11, finding 8, on the running stack: `up` generated an admin token file
    (mode 0600) that the API serves with (it ran without one, so the monitor's routing
    changes were no-ops); a second server on the same home refuses instead of wiping
    the routing row and metrics of this one; the canary share outlives an API restart
    (it was forgotten, leaving a challenger on trial forever). Returns the new API."""
    token_file = stack.settings.admin_token_path
    assert token_file.stat().st_mode & 0o777 == 0o600
    api, headers = stack.url("api"), {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    share = httpx.post(
        f"{api}/admin/routing", json={"canary_share": 0.25}, headers=headers, timeout=10
    )
    assert share.status_code == 200, share.text
    second = subprocess.run(
        [sys.executable, "-m", "fraudlab", "serve", "--port", str(free_port())],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=CLI_SECONDS,
    )
    assert second.returncode != 0 and "already runs on home" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    routing = httpx.get(f"{api}/admin/routing", headers=headers, timeout=10)
    assert routing.json()["canary_share"] == 0.25  # not wiped by the refused server
    (old,) = [r for r in read_records(stack.settings) if r.name == "api"]
    said.append(stop(stack.settings, old))
    up(stack.settings, stack.net, said.append)
    (new,) = [r for r in read_records(stack.settings) if r.name == "api"]
    assert new.pid != old.pid
    wait_until_ready(api)
    routing = httpx.get(f"{api}/admin/routing", headers=headers, timeout=10)
    assert routing.json()["canary_share"] == 0.25, routing.text
    return new
