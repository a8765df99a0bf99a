"""Which services the production stack runs, with what command and environment, in
what order, and how each shows it is healthy: one definition for `fraudlab stack up`
(loopback addresses) and docker-compose.yml (service names on the compose network).

PostgreSQL and Redis are not in the list: natively they are the machine's own, checked
by `stack up` and never started; in compose they are containers of stock images.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fraudlab.errors import ConfigError, ServiceUnavailable
from fraudlab.redis_client import redis_client
from fraudlab.settings import Settings

MLFLOW_PORT = 5000  # MLflow's own default, used when the tracking URI names no port
API_WORKERS = 2  # the profile serves with several workers; two cores here, one each
# The daily jobs (drift, skew, the labels' performance and canary): the policy's
# canary.look_every_hours, which its sequential test spends its error by (one look a
# day; a look every hour would spend the day's error 24 times over).
MONITOR_EVERY = "24h"
# The minute jobs (freshness, guardrails, store parity): policy.yaml's
# minute_jobs.every_minutes, which also places their slower half-hourly part.
MINUTE_JOBS_EVERY = "5m"
EXPORTER_PORT = 9108  # in Prometheus's range for third-party exporters
PROMETHEUS_PORT = 9090  # Prometheus's default
EXTERNAL = ("postgres", "redis")  # checked by `stack up`; containers in compose
COMPOSE_ONLY = ("grafana",)  # no native Grafana on these machines: compose runs it
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# In compose the registry listens on a network every container shares, and registry
# write access decides what the API loads: MLflow's basic-auth app there, with its
# admin from the environment (docker-compose.yml). The native stack binds to loopback
# on a one-user machine, where it runs without.
COMPOSE_REGISTRY_AUTH = ("--app-name", "basic-auth")


@dataclass(frozen=True)
class Network:
    """Where services listen and how they find each other."""

    compose: bool  # containers reach each other by service name; natively, on loopback
    ports: dict[str, int]
    bind: str = "0.0.0.0"  # the interface servers listen on
    api_bind: str = "0.0.0.0"  # the API's (settings.serving.host natively)

    def url(self, service: str) -> str:
        host = service if self.compose else "127.0.0.1"
        return f"http://{host}:{self.ports[service]}"


# The addresses docker-compose.yml uses; tests/stack compares its commands with these.
COMPOSE_NETWORK = Network(
    compose=True,
    ports={
        "mlflow": MLFLOW_PORT,
        "api": 8000,
        "monitor-exporter": EXPORTER_PORT,
        "prometheus": PROMETHEUS_PORT,
    },
)
COMPOSE_HOME = Path("/fraudlab")  # the named volume every fraudlab container mounts


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]  # program name and arguments, exactly as compose runs them
    env: dict[str, str] = field(default_factory=dict)  # on top of the caller's environment
    depends_on: tuple[str, ...] = ()
    url: str | None = None
    health_path: str | None = None  # 200 once healthy; None: healthy once alive and idle
    ready_path: str | None = None  # shown by `status` (the API: is a champion loaded?)
    start_seconds: float = 60.0
    optional: bool = False  # skipped, not failed, when its program is not installed


def services(settings: Settings, net: Network) -> list[Service]:
    """The stack in start order, each service after the ones it depends on."""
    tracking, api = net.url("mlflow"), net.url("api")
    home = str(settings.home)
    # The API and the monitor reach the registry through the tracking server, never the
    # database itself: the server is the one component that holds its credentials.
    fraudlab_env = {
        "FRAUDLAB_PROFILE": "production",
        "FRAUDLAB_HOME": home,
        "FRAUDLAB_MLFLOW_TRACKING_URI": tracking,
    }
    chosen = "workers" in settings.serving.model_fields_set
    workers = settings.serving.workers if chosen else API_WORKERS
    if net.compose:
        prometheus_files = ("/etc/prometheus/prometheus.yml", "/prometheus")
    else:
        prometheus_files = (str(stack_dir(settings) / "prometheus.yml"), f"{home}/prometheus")
    return [
        Service(
            "mlflow",
            (
                *("mlflow", "server", "--host", net.bind, "--port", str(net.ports["mlflow"])),
                # One worker: the registry sees a few alias polls a second, and each
                # worker costs seconds of start-up and ~200 MB.
                *("--workers", "1", "--artifacts-destination", str(settings.artifact_root)),
                "--serve-artifacts",
                *(COMPOSE_REGISTRY_AUTH if net.compose else ()),
            ),
            env={
                # In the environment, not argv: in compose the URI carries the password.
                "MLFLOW_BACKEND_STORE_URI": settings.postgres_uri,
                # MLflow's GenAI job runner: seven processes we have no use for.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
            url=tracking,
            health_path="/health",
            start_seconds=180.0,  # a new database gets MLflow's schema migrations first
        ),
        Service(
            "api",
            (
                *("fraudlab", "serve", "--host", net.api_bind, "--port", str(net.ports["api"])),
                *("--workers", str(workers)),
            ),
            env=fraudlab_env,
            depends_on=("mlflow",),
            url=api,
            # Alive, not ready: the stack comes up before the first champion is trained.
            health_path="/healthz",
            ready_path="/readyz",
            # Each worker imports MLflow, Feast and LightGBM: up to a minute at a load
            # average of 7 here. A crash ends the wait at once; this bounds a hang.
            start_seconds=300.0,
        ),
        *(
            Service(
                stream_worker_name(i, settings.stream.workers),
                (
                    "fraudlab",
                    "stream",
                    "worker",
                    "--index",
                    str(i),
                    "--count",
                    str(settings.stream.workers),
                ),
                env=fraudlab_env,
                # The API publishes scored payments whether or not a worker runs; a
                # worker waits for the registry's payment-state views on its own.
            )
            for i in range(settings.stream.workers)
        ),
        Service(
            "monitor-exporter",
            (
                *("fraudlab", "stack", "monitor-exporter", "--host", net.bind),
                *("--port", str(net.ports["monitor-exporter"])),
            ),
            env={"FRAUDLAB_HOME": home},
            url=net.url("monitor-exporter"),
            health_path="/metrics",
        ),
        Service(
            "monitor",
            ("fraudlab", "monitor", "run", "--every", MONITOR_EVERY),
            env={**fraudlab_env, "FRAUDLAB_MONITORING__API_URL": api},
            depends_on=("api",),
            start_seconds=300.0,  # its first run, over up to a day of logged traffic
        ),
        # A second schedule, same lock: a minute run that meets the daily run skips
        # its turn (reported) instead of waiting behind it.
        Service(
            "monitor-minutes",
            ("fraudlab", "monitor", "run", "--minute-jobs", "--every", MINUTE_JOBS_EVERY),
            env={**fraudlab_env, "FRAUDLAB_MONITORING__API_URL": api},
            depends_on=("api",),
        ),
        Service(
            "prometheus",
            (
                "prometheus",
                f"--config.file={prometheus_files[0]}",
                f"--storage.tsdb.path={prometheus_files[1]}",
                f"--web.listen-address={net.bind}:{net.ports['prometheus']}",
            ),
            depends_on=("api", "monitor-exporter"),
            url=net.url("prometheus"),
            health_path="/-/ready",
            optional=True,
        ),
    ]


def stream_worker_name(index: int, count: int) -> str:
    return "stream-worker" if count == 1 else f"stream-worker-{index}"


def stack_dir(settings: Settings) -> Path:
    """Where native services keep their pid records and logs."""
    return settings.home / "stack"


def native_network(
    settings: Settings, exporter_port: int = EXPORTER_PORT, prometheus_port: int = PROMETHEUS_PORT
) -> Network:
    """Loopback: MLflow where the tracking URI says, the API where settings.serving says."""
    uri = settings.mlflow_tracking_uri or f"http://127.0.0.1:{MLFLOW_PORT}"
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise ConfigError(
            f"mlflow_tracking_uri is {uri!r}, but the stack runs its own MLflow server: "
            "leave it unset or point it at http://127.0.0.1:PORT"
        )
    ports = {
        "mlflow": parts.port or MLFLOW_PORT,
        "api": settings.serving.port,
        "monitor-exporter": exporter_port,
        "prometheus": prometheus_port,
    }
    return Network(compose=False, ports=ports, bind="127.0.0.1", api_bind=settings.serving.host)


# The external services: the machine's own PostgreSQL and Redis, checked, never started.
def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def check_postgres(settings: Settings, create: bool = False) -> str:
    """The database's URL (no password) if PostgreSQL answers; `create` makes the
    database MLflow needs. Raises ServiceUnavailable otherwise."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.postgres_uri)
    if create:
        from pipelines.registry import ensure_postgres_database

        ensure_postgres_database(settings.postgres_uri)
    elif not listening(url.host or "127.0.0.1", url.port or 5432):
        raise ServiceUnavailable(f"PostgreSQL at {url.host}:{url.port or 5432} is unreachable")
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def check_redis(settings: Settings) -> str:
    """Ping the online store's Redis (Feast's connection string: host:port,key=value...)."""
    import redis

    client = redis_client(settings.redis_connection, timeout_seconds=2)
    where = client.connection_pool.connection_kwargs
    host, port, db = where["host"], where["port"], where["db"]
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis at {host}:{port} is unreachable: {exc}") from exc
    finally:
        client.close()
    return f"redis://{host}:{port}/{db}"
