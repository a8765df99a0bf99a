"""`fraudlab ui`: what a user looks at, each in its own tool's UI, on loopback: the
MLflow UI on the home's registry (embedded; in production the stack's tracking server
is that UI), Feast's UI on the home's registry, and Evidently's UI on the monitor's
workspace (monitoring/evidently_workspace.py). Started detached like the stack's
services (fraudlab/stack/processes.py), listed by `fraudlab stack status`, stopped by
`fraudlab stack down`. Prometheus, with the project's rules, comes with `stack up`.
"""

from __future__ import annotations

from fraudlab.settings import Settings
from fraudlab.stack.services import Service

UI_PORTS = {"mlflow-ui": 5000, "feast-ui": 8888, "evidently-ui": 8001}
LOCAL = "127.0.0.1"


def ui_services(
    settings: Settings,
    ports: dict[str, int] | None = None,
    bind: str = LOCAL,
    only_applied: bool = True,
) -> list[Service]:
    """The UIs for this home, in start order. The Feast UI comes only once the repository
    is applied (`fraudlab features apply` writes the config it reads), unless
    `only_applied` is off: docker-compose.yml runs the same commands (bound to every
    interface of the container), and restarts the Feast UI until the demo has applied."""
    from features.store import EFFECTIVE_CONFIG

    ports = UI_PORTS | (ports or {})

    def url(name: str) -> str:
        return f"http://{LOCAL}:{ports[name]}"

    def bound(name: str) -> tuple[str, ...]:
        return ("--host", bind, "--port", str(ports[name]))

    found: list[Service] = []
    if settings.profile == "embedded":
        found.append(
            Service(
                "mlflow-ui",
                ("mlflow", "ui", "--backend-store-uri", settings.tracking_uri, *bound("mlflow-ui")),
                env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no GenAI job runner
                url=url("mlflow-ui"),
                health_path="/health",
                start_seconds=120.0,
            )
        )
    feast_config = settings.feast_dir / EFFECTIVE_CONFIG
    if feast_config.exists() or not only_applied:
        found.append(
            Service(
                "feast-ui",
                ("feast", "-f", str(feast_config), "ui", *bound("feast-ui")),
                url=url("feast-ui"),
                health_path="/health",
                start_seconds=120.0,
            )
        )
    found.append(
        Service(
            "evidently-ui",
            (
                *("evidently", "ui", "--workspace", str(settings.evidently_workspace_dir)),
                *bound("evidently-ui"),
            ),
            url=url("evidently-ui"),
            health_path="/api/projects",
            start_seconds=120.0,
        )
    )
    return found
