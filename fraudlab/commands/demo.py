"""`fraudlab demo`: every plane end to end on embedded defaults, from an empty folder."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import typer
from rich.rule import Rule

from fraudlab.console import console, user_errors
from fraudlab.settings import Settings, get_settings
from serving.process import running_server


def _fresh_start(settings: Settings) -> None:
    """Remove only what earlier demo runs wrote, never other files in the home folder."""
    for sub in ("data", "feature_data", "feast", "mlartifacts"):
        shutil.rmtree(settings.home / sub, ignore_errors=True)
    for name in ("mlflow.db", "prediction_log.sqlite", "serve.log"):
        (settings.home / name).unlink(missing_ok=True)


def _step(title: str, action: Callable[[], None]) -> None:
    console.print(Rule(f"[bold]{title}"))
    started = time.perf_counter()
    action()
    console.print(f"[dim]{title}: {time.perf_counter() - started:.1f} s[/]")


@user_errors
def demo(
    fresh: bool = typer.Option(
        True,
        help="Start from an empty working folder (removes the "
        "data, features, registry and runs of earlier demos).",
    ),
    canary_share: float = typer.Option(
        0.2, min=0.0, max=1.0, help="Share of customers the challenger decides in the replay."
    ),
    replay_rate: float = typer.Option(
        400.0, min=0.0, help="Requests per second in the replay (0 = as fast as possible)."
    ),
    days: int = typer.Option(2, min=1, max=20, help="Days of traffic to replay after the cutoff."),
    scenario: str = typer.Option(
        "skew-amount-units", help="The failure story the tour ends with (`scenario list`)."
    ),
    runs_dir: Path = typer.Option(Path("runs"), help="Where the scenario's report goes."),
) -> None:
    """The full tour: data, features, training and gate, serving, monitoring, then one
    failure story (a scenario) with its report."""
    from fraudlab.commands import data, features, replay, train
    from scenarios.catalog import get_scenario

    get_scenario(scenario)  # an unknown name fails now, not after the first seven steps

    settings = get_settings()
    if fresh and settings.profile == "embedded":
        _fresh_start(settings)
    console.print(f"working folder: {settings.home} (profile: {settings.profile})")
    _step(
        "1/8 simulate payments with delayed chargebacks",
        lambda: data.generate_command(None, None, None, None, None, None, None),
    )
    _step("2/8 batch feature pipeline: daily snapshots", features.build)
    _step("3/8 feast apply: register entities, views, services", features.apply)
    cutoff = cutoff_time(settings)
    _step(
        f"4/8 feast materialize: the online store as of the cutoff ({cutoff:%Y-%m-%d})",
        lambda: features.materialize(cutoff.isoformat(), None),
    )
    _step(
        "5/8 train baseline and LightGBM, register, gate",
        lambda: train.train(None, train.ModelChoice.both, train.JoinChoice.pit, None),
    )

    def serve_days() -> None:
        from features.store import materialize

        env = {"FRAUDLAB_SERVING__CANARY_SHARE": str(canary_share)}
        log_file = settings.home / "serve.log"
        with running_server(env=env, log_file=log_file) as url:
            console.print(
                f"scoring API up at {url} (log: {log_file}); canary share "
                f"{canary_share:.0%}, shadow on"
            )
            for day in range(days):
                # The daily batch cadence: each midnight's snapshot goes online first.
                materialize(settings, end=cutoff + timedelta(days=day))
                replay.replay(settings.training.cutoff_day + day, 1, replay_rate, 8, url, None)
        console.print(f"every answer is in the prediction log: {settings.prediction_log_path}")

    _step(f"6/8 serve: replay {days} day(s) after the cutoff through the API", serve_days)

    def monitor_last_day() -> None:
        from fraudlab.commands import monitor

        last = cutoff + timedelta(days=days)
        monitor.run(
            (last - timedelta(days=1)).isoformat(), last.isoformat(), None, None, None, False
        )
        console.print("decision log: `fraudlab monitor status`")

    _step("7/8 monitor: drift, skew, delayed-label performance, canary, policy", monitor_last_day)

    reports: list[Path] = []

    def break_it() -> None:
        from fraudlab.commands.scenario import run_and_report

        _, report = run_and_report(scenario, "small", 11, runs_dir)
        reports.append(report)

    _step(f"8/8 break it on purpose: scenario {scenario}", break_it)
    console.print(Rule("[bold]where to look next"))
    console.print(
        f"scenario report (plots, timeline, what to say in a design round): [bold]{reports[0]}[/]"
    )
    console.print(f"MLflow UI: [bold]mlflow ui --backend-store-uri {settings.tracking_uri}[/]")
    console.print(
        "decision log: [bold]fraudlab monitor status[/]; other stories: "
        "[bold]fraudlab scenario list[/]"
    )


def cutoff_time(settings: Settings) -> datetime:
    """The training cutoff: day `cutoff_day` of the data."""
    from data.calendar import Calendar

    calendar = Calendar.of_file(settings.transactions_path)
    return calendar.start(settings.training.cutoff_day).to_pydatetime()
