"""What every command shares: the consoles it prints to, logging set-up, and the edge
where our own errors become one red line and an exit code instead of a traceback.

Foundation, like settings and errors: no plane and no command imports into it.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from fraudlab.errors import FraudlabError

console = Console()
err_console = Console(stderr=True)

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

    wrapper.handles_user_errors = True  # type: ignore[attr-defined]  # checked by a test
    return wrapper  # type: ignore[return-value]


def configure_logging(verbose: bool) -> None:
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
