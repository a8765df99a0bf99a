"""CLI commands, one module per plane; importing them registers them on the Typer apps."""

from fraudlab.commands import data, demo, features, monitor, replay, serve, train  # noqa: F401
