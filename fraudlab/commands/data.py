"""`fraudlab data ...`: generate a simulated payment history, validate a user's file,
import a user's table with its own column names."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fraudlab.console import console, user_errors
from fraudlab.settings import Settings, get_settings

if TYPE_CHECKING:
    from data.importer import ImportReport
    from data.simulator import GenerationSummary
    from data.validate import ValidationReport

app = typer.Typer(help="Generate, validate and import transaction data.", no_args_is_help=True)


@app.command("generate")
@user_errors
def generate_command(
    customers: int | None = typer.Option(None, min=1, help="Card holders [settings]."),
    terminals: int | None = typer.Option(None, min=1, help="Merchant terminals [settings]."),
    days: int | None = typer.Option(None, min=1, help="Days of history [settings]."),
    seed: int | None = typer.Option(None, min=0, help="Random seed [settings]."),
    start_date: str | None = typer.Option(None, help="Day 0, YYYY-MM-DD (UTC) [settings]."),
    new_pattern_start_day: int | None = typer.Option(
        None, min=0, help="Day the card-testing pattern starts (drift stories); default never."
    ),
    out: Path | None = typer.Option(None, help="Parquet file to write [settings home]."),
) -> None:
    """Simulate card payments with delayed fraud labels and write them to Parquet."""
    from data.simulator import SimulationConfig, generate, parse_start_date

    settings = get_settings()
    defaults = settings.simulation
    config = SimulationConfig(
        customers=customers if customers is not None else defaults.customers,
        terminals=terminals if terminals is not None else defaults.terminals,
        days=days if days is not None else defaults.days,
        seed=seed if seed is not None else defaults.seed,
        start_date=parse_start_date(start_date or defaults.start_date),
        new_pattern_start_day=new_pattern_start_day,
    )
    path = out or settings.transactions_path
    started = time.perf_counter()
    with day_progress(config.days) as on_day:
        summary = generate(config, path, on_day=on_day)
    console.print(generation_table(summary, time.perf_counter() - started))
    if path == settings.transactions_path:
        forget_old_labels(settings)


def forget_old_labels(settings: Settings) -> None:
    """The label feed settles the payments of the table it was made for: a new table
    in the home makes it wrong."""
    feed = settings.label_feed_path
    if feed.exists():
        feed.unlink()
        console.print(f"removed the label feed of the previous data ({feed})")


@contextmanager
def day_progress(days: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over simulated days; yields the callback the simulator calls."""
    with Progress(
        TextColumn("simulating days"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("days", total=days)
        yield lambda _day: progress.advance(task)


@app.command("validate")
@user_errors
def validate_command(
    file: Path = typer.Argument(..., help="A transactions file, .parquet or .csv."),
) -> None:
    """Check a transactions file against the schema in data/schema.py."""
    from data.validate import validate_transactions_file

    console.print(validation_table(validate_transactions_file(file)))


@app.command("import")
@user_errors
def import_command(
    file: Path = typer.Argument(..., help="Your transactions table, .parquet or .csv."),
    mapping: list[str] = typer.Option(
        [],
        "--map",
        metavar="THEIRS=OURS",
        help="Read your column THEIRS as our OURS (data/schema.py); repeat for each, e.g. "
        "--map TX_DATETIME=event_timestamp --map TX_AMOUNT=amount.",
    ),
    label_delay_days: float | None = typer.Option(
        None,
        min=0,
        help="No label_available_at in your table: each label (fraud or not) counts as "
        "known this many days after its payment.",
    ),
) -> None:
    """Validate your table under our column names and make it the home's transactions.

    Columns that are not ours are left out. Nothing is written unless every row is
    valid. Then: fraudlab features build, features apply, features materialize, train."""
    from data.importer import import_transactions, parse_mapping

    settings = get_settings()
    renames = parse_mapping(mapping)
    done = import_transactions(file, settings.transactions_path, renames, label_delay_days)
    console.print(import_table(done))
    forget_old_labels(settings)


def import_table(done: ImportReport) -> Table:
    table = validation_table(done.report)
    table.title = f"imported {done.source} into {done.report.path}"
    for theirs, ours in done.renamed.items():
        table.add_row(f"  {ours}", f"from your {theirs}")
    if done.label_delay_days is not None:
        table.add_row("label times", f"payment time + {done.label_delay_days:g} days")
    if done.left_out:
        table.add_row("left out", ", ".join(done.left_out))
    table.add_row("next", "fraudlab features build, features apply, features materialize, train")
    return table


def generation_table(summary: GenerationSummary, seconds: float) -> Table:
    table = Table(title=f"wrote {summary.path}", show_header=False)
    table.add_row("payments", f"{summary.rows:,}")
    table.add_row("frauds", f"{summary.frauds:,} ({summary.fraud_rate:.2%})")
    table.add_row("frauds ever reported", f"{summary.reported_share:.1%}")
    for name, count in summary.pattern_counts.items():
        table.add_row(f"  {name}", f"{count:,}")
    table.add_row("seconds", f"{seconds:.1f}")
    return table


def validation_table(report: ValidationReport) -> Table:
    table = Table(title=f"{report.path} is a valid transactions file", show_header=False)
    table.add_row("payments", f"{report.rows:,}")
    table.add_row("frauds", f"{report.frauds:,} ({report.fraud_rate:.2%})")
    table.add_row("frauds never reported", f"{report.unreported_frauds:,}")
    table.add_row("first payment", str(report.first_event))
    table.add_row("last payment", str(report.last_event))
    if report.ignored_columns:
        table.add_row("ignored columns", ", ".join(report.ignored_columns))
    return table
