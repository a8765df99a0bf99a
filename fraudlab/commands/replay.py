"""`fraudlab replay`: send the data's "future" payments to a running scoring API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from fraudlab.console import console, user_errors
from fraudlab.errors import ConfigError
from fraudlab.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from client.admin import ServingAdmin
    from client.replay import ReplaySummary


@user_errors
def replay(
    from_day: int = typer.Option(
        None,
        min=0,
        help="First day to replay, counted from day 0 of the data (default: the cutoff day).",
    ),
    days: int = typer.Option(1, min=1, help="How many days of payments to send."),
    rate: float = typer.Option(200.0, min=0, help="Requests per second; 0 = as fast as it can."),
    concurrency: int = typer.Option(8, min=1, max=1_024, help="Connections (requests in flight)."),
    url: str = typer.Option(
        None, help="Scoring API (default: from settings, http://127.0.0.1:8000)."
    ),
    limit: int = typer.Option(None, min=1, help="Send at most this many payments."),
    hold_clock: bool = typer.Option(
        True,
        "--hold-clock/--keep-clock",
        help="Simulated time: hold the API's clock at the payments' times as they advance "
        "(PUT /admin/clock, with the admin token). --keep-clock leaves the API's clock as "
        "it is (live, or held by someone else): for payments stamped around its now.",
    ),
) -> None:
    """Replay payments against POST /v1/score and summarise; exits 1 if any request failed."""
    from client.admin import ServingAdmin
    from client.replay import load_payments

    settings = get_settings()
    url = url or f"http://{settings.serving.host}:{settings.serving.port}"
    payments = load_payments(settings, from_day, days, limit)
    clock = ServingAdmin(settings, url) if hold_clock else None
    if clock is not None and not clock.headers:
        raise ConfigError(
            "replaying simulated time holds the API's clock, which needs the admin token "
            f"(FRAUDLAB_SERVING__ADMIN_TOKEN or {settings.admin_token_path}); "
            "or pass --keep-clock for payments stamped around the API's now"
        )
    summary = send_with_progress(url, payments, rate, concurrency, clock)
    console.print(replay_table(summary, url))
    if summary.error_count:
        raise typer.Exit(1)


def send_with_progress(
    url: str,
    payments: list[dict[str, Any]],
    rate: float,
    concurrency: int,
    clock: ServingAdmin | None,
) -> ReplaySummary:
    from client.replay import replay_payments

    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"replaying to {url}", total=len(payments))
        return replay_payments(
            url, payments, rate, concurrency, lambda n: bar.advance(task, n), clock
        )


def replay_table(summary: ReplaySummary, url: str, server: pd.DataFrame | None = None) -> Table:
    """The replay as this client saw it; with `server` (the API's own stage timings from
    its prediction log) the service's view beside it."""
    table = Table(title=f"replay of {summary.requests:,} payments to {url}", show_header=False)
    table.add_row("requests", f"{summary.requests:,}")
    table.add_row("answered (200)", f"{summary.answered:,}")
    errors = ", ".join(f"{k}: {v:,}" for k, v in sorted(summary.errors.items()))
    table.add_row("errors", errors or "0")
    table.add_row("fallbacks", f"{summary.fallbacks:,}")
    lat = summary.latency_ms
    table.add_row(
        "latency p50/p95/p99 (client: HTTP round trip)",
        f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ms",
    )
    if server is not None and len(server):
        total = server["total_ms"].quantile([0.5, 0.95, 0.99]).to_numpy()
        table.add_row(
            "latency p50/p95/p99 (server: scoring, its log)",
            f"{total[0]:.2f} / {total[1]:.2f} / {total[2]:.2f} ms",
        )
        table.add_row(
            "  of which features / model (p50)",
            f"{server['features_ms'].median():.2f} / {server['model_ms'].median():.2f} ms",
        )
    table.add_row("achieved rate", f"{summary.achieved_rate:,.0f} req/s")
    for route, decisions in summary.decisions.items():
        table.add_row(
            f"decisions ({route})", ", ".join(f"{d}: {n:,}" for d, n in decisions.items())
        )
    for version, count in sorted(summary.versions.items()):
        table.add_row(f"model {version}", f"{count:,}")
    return table


def server_timings(settings: Settings, payments: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The API's stage timings for these payments' times, when it logs under this home."""
    import pandas as pd

    from serving.prediction_log import stage_latency

    if not payments or not settings.prediction_log_path.exists():
        return None
    since = pd.Timestamp(payments[0]["timestamp"])
    until = pd.Timestamp(payments[-1]["timestamp"]) + pd.Timedelta(microseconds=1)
    return stage_latency(settings.prediction_log_path, since=since, until=until)
