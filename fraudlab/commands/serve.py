"""`fraudlab serve`: the scoring API under uvicorn."""

from __future__ import annotations

import typer

from fraudlab.console import console, user_errors
from fraudlab.settings import get_settings


@user_errors
def serve(
    host: str = typer.Option(None, help="Interface to bind [settings: 127.0.0.1, loopback]."),
    port: int = typer.Option(None, min=1, max=65_535, help="Port [settings: 8000]."),
    workers: int = typer.Option(None, min=1, max=32, help="uvicorn workers [settings: 1]."),
    reset_routing: bool = typer.Option(
        False, help="Forget the canary share and shadow switch of earlier runs (kept by default)."
    ),
) -> None:
    """Serve POST /v1/score with the registry's champion (and challenger) models.

    With more than one worker, metrics are aggregated through
    <home>/prometheus_multiproc (reset here, before the workers start) and routing
    changes through <home>/serving_routing.sqlite, which outlives restarts unless
    --reset-routing. One server per home: a second one refuses (docs/serving-plane.md).
    """
    from serving.process import serve as run_server

    s = get_settings().serving
    host, port, workers = host or s.host, port or s.port, workers or s.workers
    console.print(
        f"serving on http://{host}:{port} with {workers} worker(s); "
        f"docs at http://{host}:{port}/docs"
    )
    run_server(
        "serving.app:create_app", host=host, port=port, workers=workers, reset_routing=reset_routing
    )
