"""`fraudlab stack up|down|status`: the production profile's services as local processes,
the same commands docker-compose.yml runs in containers (docs/production.md)."""

from __future__ import annotations

import typer
from rich.table import Table

from fraudlab.console import console, user_errors
from fraudlab.settings import get_settings
from fraudlab.stack.services import EXPORTER_PORT, PROMETHEUS_PORT, native_network, stack_dir
from fraudlab.stack.uis import UI_PORTS

app = typer.Typer(
    help="Run the production profile's services natively: MLflow tracking server, scoring "
    "API, monitor, monitor exporter and (when installed) Prometheus, on the PostgreSQL "
    "and Redis already running on this machine. Set FRAUDLAB_PROFILE=production first.",
    no_args_is_help=True,
)

_EXPORTER_PORT = typer.Option(
    EXPORTER_PORT, min=1, max=65_535, help="Port of the monitor exporter (monitor metrics)."
)
_PROMETHEUS_PORT = typer.Option(
    PROMETHEUS_PORT, min=1, max=65_535, help="Port of Prometheus, when it is installed."
)


@app.command("up")
@user_errors
def up(exporter_port: int = _EXPORTER_PORT, prometheus_port: int = _PROMETHEUS_PORT) -> None:
    """Start the services in dependency order, each once the ones before it are healthy.

    MLflow listens where FRAUDLAB_MLFLOW_TRACKING_URI points (default
    http://127.0.0.1:5000) and the API where settings.serving does (default
    127.0.0.1:8000, 2 workers). Services already running are left as they are.
    Pid records and logs: <home>/stack/.
    """
    from fraudlab.stack.processes import up as start

    settings = get_settings()
    net = native_network(settings, exporter_port, prometheus_port)
    start(settings, net, console.print)
    console.print(
        f"stack up: MLflow UI at {net.url('mlflow')}, API at {net.url('api')}. Next: "
        "`FRAUDLAB_PROFILE=production fraudlab demo`, then `fraudlab stack status`."
    )


@user_errors
def ui(
    mlflow_port: int = typer.Option(
        UI_PORTS["mlflow-ui"], min=1, max=65_535, help="MLflow UI (embedded profile)."
    ),
    feast_port: int = typer.Option(UI_PORTS["feast-ui"], min=1, max=65_535, help="Feast UI."),
    evidently_port: int = typer.Option(
        UI_PORTS["evidently-ui"], min=1, max=65_535, help="Evidently UI (monitoring history)."
    ),
) -> None:
    """Start the UIs on this home, on loopback: MLflow's (the registry: runs, versions,
    aliases), Feast's (entities, views, services) and Evidently's (every monitor run's
    drift report over time). Each runs in the background until `fraudlab stack down`;
    `fraudlab stack status` lists them. In the production profile `stack up` serves
    MLflow's UI (its tracking server) and Prometheus."""
    from fraudlab.stack.processes import start_all
    from fraudlab.stack.uis import ui_services

    settings = get_settings()
    ports = {"mlflow-ui": mlflow_port, "feast-ui": feast_port, "evidently-ui": evidently_port}
    wanted = ui_services(settings, ports)
    if "feast-ui" not in {s.name for s in wanted}:
        console.print(
            "feast-ui: skipped, the repository is not applied yet (fraudlab features apply)"
        )
    settings.evidently_workspace_dir.mkdir(parents=True, exist_ok=True)
    start_all(settings, native_network(settings), wanted, console.print)
    for service in wanted:
        console.print(f"{service.name}: {service.url}")
    console.print("stop them with `fraudlab stack down`; `fraudlab stack status` lists them")


@app.command("status")
@user_errors
def status() -> None:
    """Each service: pid, state, health, URL and log (and PostgreSQL, Redis reachable?)."""
    from fraudlab.stack.processes import status as rows_of

    settings = get_settings()
    folder = stack_dir(settings)
    table = Table(
        "service", "pid", "state", "health", title=f"fraudlab stack (pid records, logs: {folder})"
    )
    for name in ("URL", "log"):  # long, so folded rather than cut short
        table.add_column(name, overflow="fold")
    for row in rows_of(settings, native_network(settings)):
        colour = {"running": "green", "external": "green", "exited": "red"}.get(row.state, "dim")
        health = f"[red]{row.health}[/]" if "unreachable" in row.health else row.health
        table.add_row(row.service, row.pid, f"[{colour}]{row.state}[/]", health, row.url, row.log)
    console.print(table)


@app.command("down")
@user_errors
def down() -> None:
    """Stop every service `up` started: SIGTERM, then SIGKILL after 20 s; remove pid records."""
    from fraudlab.stack.processes import down as stop_all

    stop_all(get_settings(), console.print)


@app.command("monitor-exporter")
@user_errors
def monitor_exporter(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(EXPORTER_PORT, min=1, max=65_535, help="Port to listen on."),
) -> None:
    """Serve the monitor's latest findings at /metrics (a service `stack up` starts)."""
    from fraudlab.stack.exporter import serve

    console.print(f"monitor exporter on http://{host}:{port}/metrics")
    serve(get_settings(), host, port)
