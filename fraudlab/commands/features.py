"""`fraudlab features build|apply|materialize`: the batch feature pipeline and Feast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.table import Table

from fraudlab.console import console, user_errors
from fraudlab.errors import ConfigError, MissingInput
from fraudlab.settings import Settings, get_settings

app = typer.Typer(help="Build, register and materialize Feast features.", no_args_is_help=True)


@app.command("build")
@user_errors
def build() -> None:
    """Compute the daily feature tables from the transactions (the batch feature pipeline)."""
    from data.labels import read_label_feed
    from data.validate import read_transactions
    from features.build import build_feature_tables, observed_label_delay_days

    settings = get_settings()
    if not settings.transactions_path.exists():
        raise MissingInput(
            f"no transactions at {settings.transactions_path}: run `fraudlab data generate` first"
        )
    with console.status("computing feature snapshots"):
        tx = read_transactions(settings.transactions_path)
        delay = settings.training.label_delay_days
        source = "training.label_delay_days"
        if delay is None:
            delay, source = observed_label_delay_days(tx), "the data's median chargeback delay"
        events = read_label_feed(settings.label_feed_path, tx)  # None: the file's labels
        rows = build_feature_tables(tx, settings.feature_data_dir, delay, events)
    console.print(feature_rows_table(rows, settings.feature_data_dir))
    console.print(f"matured-risk windows end {delay} days before each snapshot ({source})")
    if events is not None:
        console.print(
            f"known frauds from the label feed {settings.label_feed_path} (the decisions "
            "made: a declined fraud is never known), not the file's chargebacks"
        )


def feature_rows_table(rows: dict[str, int], folder: Path) -> Table:
    table = Table("feature view", "rows", title=f"feature tables in {folder}")
    for view, count in rows.items():
        table.add_row(view, f"{count:,}")
    return table


@app.command("apply")
@user_errors
def apply() -> None:
    """Register entities, feature views and feature services in the Feast registry."""
    from features.store import apply_definitions

    settings = get_settings()
    console.print(applied_text(settings, apply_definitions(settings)))


def applied_text(settings: Settings, names: list[str]) -> str:
    from features.store import EFFECTIVE_CONFIG

    return (
        f"registered in Feast: {', '.join(names)}\n"
        f"the feast CLI on this registry: feast -f {settings.feast_dir / EFFECTIVE_CONFIG} "
        "feature-services list (in features/repo, the embedded default home needs no -f)"
    )


def _parse_time(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--{name} {text!r} is not an ISO date or time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("materialize")
@user_errors
def materialize(
    end: str | None = typer.Option(
        None,
        help="Copy snapshots up to this UTC time "
        "(default: the last snapshot in the feature tables).",
    ),
    start: str | None = typer.Option(
        None, help="Start of the window (default: one snapshot TTL, 2 days, before --end)."
    ),
    payment_state: bool = typer.Option(
        True,
        help="Also seed the velocity features' payment state as of --end (the API's updates "
        "carry it on from there; --no-payment-state leaves what they wrote).",
    ),
) -> None:
    """Copy the latest feature values per entity into the online store."""
    from data.calendar import Calendar
    from features.definitions import VIEWS, feature_table_path
    from features.store import materialize as run_materialize

    settings = get_settings()
    tables = [feature_table_path(settings.feature_data_dir, view) for view in VIEWS]
    if not all(path.exists() for path in tables):
        raise MissingInput("no feature tables: run `fraudlab features build` first")
    end_time = _parse_time(end, "end")
    if end_time is None:  # just after the last snapshot (the tables share one grid)
        snapshots = Calendar.of_file(tables[0])  # snapshots are stamped at midnights
        end_time = snapshots.start(snapshots.last_day).to_pydatetime() + timedelta(seconds=1)
    run_materialize(
        settings, end=end_time, start=_parse_time(start, "start"), payment_state=payment_state
    )
    console.print(f"online store ({settings.online_store_type}) holds values up to {end_time}")
