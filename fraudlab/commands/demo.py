"""`fraudlab demo`: every plane end to end on embedded defaults, from an empty folder."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import typer
from rich.rule import Rule

from fraudlab.cli import app, console, user_errors
from fraudlab.settings import Settings, get_settings


def _fresh_start(settings: Settings) -> None:
    """Remove only what earlier demo runs wrote, never other files in the home folder."""
    for sub in ("data", "feature_data", "feast", "mlartifacts"):
        shutil.rmtree(settings.home / sub, ignore_errors=True)
    (settings.home / "mlflow.db").unlink(missing_ok=True)


def _step(title: str, action: Callable[[], None]) -> None:
    console.print(Rule(f"[bold]{title}"))
    started = time.perf_counter()
    action()
    console.print(f"[dim]{title}: {time.perf_counter() - started:.1f} s[/]")


@app.command("demo")
@user_errors
def demo(
    fresh: bool = typer.Option(
        True,
        help="Start from an empty working folder (removes the "
        "data, features, registry and runs of earlier demos).",
    ),
) -> None:
    """Run the training plane end to end: generate, build, apply, materialize, train, gate."""
    from fraudlab.commands import data, features, train

    settings = get_settings()
    if fresh and settings.profile == "embedded":
        _fresh_start(settings)
    console.print(f"working folder: {settings.home} (profile: {settings.profile})")
    _step(
        "1/5 simulate payments with delayed chargebacks",
        lambda: data.generate_command(None, None, None, None, None, None, None),
    )
    _step("2/5 batch feature pipeline: daily snapshots", features.build)
    _step("3/5 feast apply: register entities, views, services", features.apply)
    _step(
        "4/5 feast materialize: latest values to the online store",
        lambda: features.materialize(None, None),
    )
    _step(
        "5/5 train baseline and LightGBM, register, gate",
        lambda: train.train(None, train.ModelChoice.both, train.JoinChoice.pit, None),
    )
    console.print(f"\nMLflow UI: [bold]mlflow ui --backend-store-uri {settings.tracking_uri}[/]")
