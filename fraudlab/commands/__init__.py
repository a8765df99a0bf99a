"""CLI commands, one module per plane; importing them registers them on the Typer apps."""

from fraudlab.commands import (  # noqa: F401
    data,
    demo,
    features,
    monitor,
    replay,
    scenario,
    serve,
    stack,
    train,
)
