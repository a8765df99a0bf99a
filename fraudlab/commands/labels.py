"""`fraudlab labels settle`: the simulated world's labels for what the service decided."""

from __future__ import annotations

import typer
from rich.table import Table

from fraudlab.console import console, user_errors
from fraudlab.settings import get_settings

app = typer.Typer(
    help="Labels that depend on the decisions: the label feed of served traffic.",
    no_args_is_help=True,
)


@app.command("settle")
@user_errors
def settle() -> None:
    """Answer the prediction log's decisions as the world would, and write the feed.

    Approved payments get their chargeback (or none) as the transactions file says;
    reviewed ones an analyst's verdict within hours, up to the analysts' daily capacity
    (training.analyst_capacity_per_day), wrong at feedback.analyst_error_rate; declined
    ones no label, except good customers who call. Training and the monitor then read
    labels from this feed (<home>/labels/events.parquet) instead of the file's own;
    delete the file to go back."""
    from monitoring.label_feed import settle_served

    settings = get_settings()
    summary = settle_served(settings)
    table = Table("served payments", "count", title="decisions settled")
    for name, count in sorted(summary.decisions.items()):
        table.add_row(f"decided {name}", f"{count:,}")
    for name, count in sorted(summary.outcomes.items()):
        table.add_row(f"ended {name}", f"{count:,}")
    table.add_row("approved by exploration", f"{summary.explored:,}")
    console.print(table)
    sources = Table("label source", "events", title="the feed, whole file")
    for name, count in sorted(summary.events.items()):
        sources.add_row(name, f"{count:,}")
    console.print(sources)
    note = (
        f"; {summary.unmatched:,} answers name no payment of the file" if summary.unmatched else ""
    )
    console.print(f"{summary.served:,} served payments settled{note} -> {settings.label_feed_path}")
