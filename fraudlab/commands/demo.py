"""`fraudlab demo`: every plane end to end on embedded defaults, from an empty folder.

The tour calls the planes' own functions (the world builder's steps, the replay client,
the monitor, the scenario runner) and prints what the matching commands print.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.rule import Rule

from fraudlab.console import console, user_errors
from fraudlab.errors import ServiceUnavailable
from fraudlab.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.world import WorldBuilder
    from scenarios.world import Scale

T = TypeVar("T")
SCENARIO_SCALE: Scale = "small"  # the committed runs' scale and seed (docs/scenarios/)
SCENARIO_SEED = 11


def _fresh_start(settings: Settings) -> None:
    """Remove only what earlier demo runs wrote, never other files in the home folder."""
    for sub in ("data", "feature_data", "feast", "mlartifacts", "monitoring"):
        shutil.rmtree(settings.home / sub, ignore_errors=True)
    for name in ("mlflow.db", "prediction_log.sqlite", "serve.log"):
        (settings.home / name).unlink(missing_ok=True)


def _step(title: str, action: Callable[[], T], show: Callable[[T], object] | None = None) -> T:
    """One step under its title; `show` prints its result; then the step's time."""
    console.print(Rule(f"[bold]{title}"))
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    if show is not None and (shown := show(result)) is not None:
        console.print(shown)
    console.print(f"[dim]{title}: {seconds:.1f} s[/]")
    return result


@user_errors
def demo(
    fresh: bool = typer.Option(
        True,
        help="Start from an empty working folder (removes the "
        "data, features, registry, log and monitor runs of earlier demos).",
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
    from data.simulator import SimulationConfig
    from features.store import EFFECTIVE_CONFIG
    from fraudlab.commands.data import day_progress, generation_table
    from fraudlab.commands.features import applied_text, feature_rows_table
    from fraudlab.commands.scenario import run_and_report
    from fraudlab.commands.train import print_outcomes
    from pipelines.world import WorldBuilder, WorldRecipe
    from scenarios.catalog import get_scenario

    get_scenario(scenario)  # an unknown name fails now, not after the first seven steps
    settings = get_settings()
    if fresh and settings.profile == "embedded":
        _fresh_start(settings)
    console.print(f"working folder: {settings.home} (profile: {settings.profile})")
    simulation = SimulationConfig.from_settings(settings.simulation)
    builder = WorldBuilder(settings, WorldRecipe(simulation, models=("logreg", "lightgbm")))

    def simulate() -> None:
        started = time.perf_counter()
        with day_progress(simulation.days) as on_day:
            summary = builder.generate(on_day)
        console.print(generation_table(summary, time.perf_counter() - started))

    _step("1/8 simulate payments with delayed chargebacks", simulate)
    _step(
        "2/8 batch feature pipeline: daily snapshots",
        builder.build_features,
        lambda rows: feature_rows_table(rows, settings.feature_data_dir),
    )
    _step(
        "3/8 feast apply: register entities, views, services",
        builder.apply,
        lambda names: applied_text(settings, names),
    )
    import pandas as pd

    cutoff = builder.cutoff()
    _step(
        f"4/8 feast materialize: the online store as of the cutoff ({cutoff:%Y-%m-%d})",
        builder.materialize,
    )
    _step(
        "5/8 train baseline and LightGBM, register, gate",
        lambda: builder.train(progress=lambda msg: console.log(msg)),
        lambda outcomes: print_outcomes(settings, outcomes, settings.training.feature_service),
    )
    _step(
        f"6/8 serve: replay {days} day(s) after the cutoff through the API",
        lambda: _serve_days(builder, days, canary_share, replay_rate),
    )
    _step(
        "7/8 monitor: drift, skew, delayed-label performance, canary, policy",
        lambda: _monitor_last_day(settings, cutoff + pd.Timedelta(days=days)),
    )
    _, report = _step(
        f"8/8 break it on purpose: scenario {scenario}",
        lambda: run_and_report(scenario, SCENARIO_SCALE, SCENARIO_SEED, runs_dir),
    )
    console.print(Rule("[bold]where to look next"))
    console.print(
        f"scenario report (plots, timeline, what to say in a design round): [bold]{report}[/]"
    )
    console.print(f"MLflow UI: [bold]mlflow ui --backend-store-uri {settings.tracking_uri}[/]")
    console.print(
        f"Feast: [bold]feast -f {settings.feast_dir / EFFECTIVE_CONFIG} feature-services "
        "list[/]; decision log: [bold]fraudlab monitor status[/]; other stories: "
        "[bold]fraudlab scenario list[/]"
    )


def _serve_days(builder: WorldBuilder, days: int, canary_share: float, rate: float) -> None:
    """The API as a child process; each day the midnight snapshot goes online first (the
    daily batch cadence), then the day's payments through the API."""
    import pandas as pd

    from client.admin import ServingAdmin
    from client.replay import payments_of_days
    from features.store import materialize
    from fraudlab.commands.replay import replay_table, send_with_progress, server_timings
    from serving.process import home_server_pid, running_server

    settings = builder.settings
    settings.ensure_admin_token()  # the replay holds the API's clock at simulated time
    env = {"FRAUDLAB_SERVING__CANARY_SHARE": str(canary_share)}
    log_file = settings.home / "serve.log"
    served = home_server_pid(settings.home)
    api = (
        _running_api(settings, served, canary_share)
        if served is not None
        else running_server(env=env, log_file=log_file)
    )
    with api as url:
        console.print(
            f"scoring API up at {url} (log: {log_file}); canary share {canary_share:.0%}, shadow on"
        )
        for day in range(days):
            materialize(settings, end=(builder.cutoff() + pd.Timedelta(days=day)).to_pydatetime())
            payments = payments_of_days(builder.transactions, builder.cutoff_day + day)
            clock = ServingAdmin(settings, url)
            summary = send_with_progress(url, payments, rate, concurrency=8, clock=clock)
            time.sleep(2 * settings.serving.log_flush_seconds)  # the log's last batch
            console.print(replay_table(summary, url, server_timings(settings, payments)))
    console.print(
        "client latency includes HTTP, the event loop and any wait for a connection; the "
        "server's is its own time from request to answer (`score()`), from its log."
    )
    console.print(f"every answer is in the prediction log: {settings.prediction_log_path}")


@contextlib.contextmanager
def _running_api(settings: Settings, pid: int, canary_share: float) -> Iterator[str]:
    """The API already serving this home (`fraudlab stack up`'s): one server per home,
    so the demo sends its payments there, after setting its canary share."""
    from client.admin import ServingAdmin

    answer = ServingAdmin(settings).set_canary(canary_share)
    if not answer.ok:
        raise ServiceUnavailable(
            f"a scoring server (pid {pid}) already serves {settings.home}, but "
            f"{settings.api_url} did not take the demo's canary share: {answer}"
        )
    console.print(f"using the scoring API already serving this home (pid {pid})")
    yield settings.api_url


def _monitor_last_day(settings: Settings, end: pd.Timestamp) -> None:
    import pandas as pd

    from fraudlab.commands.monitor import decisions_table, findings_table
    from monitoring.policy import load_policy
    from monitoring.runner import run_monitor
    from monitoring.window import Window

    window = Window.of(end - pd.Timedelta(days=1), end)
    policy = load_policy(settings.monitoring.policy_path)
    result = run_monitor(settings, window, policy, progress=lambda msg: console.log(msg))
    console.print(findings_table(result))
    console.print(decisions_table(result))
    console.print(f"reports: {result.reports_dir}; decision log: `fraudlab monitor status`")
