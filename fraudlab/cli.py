"""The `fraudlab` command line: one Typer app that wires every plane's commands.

Commands stay thin: they read settings, call one function of a plane, and print.
Every FraudlabError becomes one red line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from fraudlab.errors import FraudlabError

console = Console()
err_console = Console(stderr=True)
app = typer.Typer(
    help="fraudlab: a worked, end-to-end reference ML system for payment fraud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate and validate transaction data.", no_args_is_help=True)
features_app = typer.Typer(
    help="Build, register and materialize Feast features.", no_args_is_help=True
)
scenario_app = typer.Typer(
    help="Failure stories: inject skew, drift or a bad model and watch the system react.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(scenario_app, name="scenario")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn our own errors into one clear line and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FraudlabError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        quiet_libraries()


def quiet_libraries() -> None:
    """Library chatter (deprecations, MLflow's info lines) hides what our commands say."""
    warnings.simplefilter("ignore")
    # Some libraries re-enable their own warnings on import; drop them at display time.
    warnings.showwarning = lambda *args, **kwargs: None
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # for child processes (the API)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "feast", "py4j"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


# Commands live beside the plane they drive; importing registers them on the apps above.
from fraudlab import commands  # noqa: E402,F401


def run() -> None:  # pragma: no cover - console entry for `python -m fraudlab`
    app()


__all__ = ["Path", "app", "console", "data_app", "err_console", "features_app", "user_errors"]
