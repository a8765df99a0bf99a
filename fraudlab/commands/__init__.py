"""CLI commands, one module per plane; importing them registers them on the Typer apps."""

from fraudlab.commands import data, demo, features, serve, train  # noqa: F401
