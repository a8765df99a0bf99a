"""`fraudlab staleness`: AP by model age, with and without a new attack, as a plot;
the retraining cadence the policy states is read off it (pipelines/staleness.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fraudlab.console import console, user_errors
from fraudlab.settings import get_settings


@user_errors
def staleness(
    weeks: int = typer.Option(
        7, min=2, max=12, help="Weeks each model scores after training (ages 0 .. WEEKS-1)."
    ),
    drift_day: int = typer.Option(
        80,
        min=0,
        help="Day card testing starts in the drifted copy of the world (simulated from the "
        "settings' simulation section, like `fraudlab data generate`); 0: no drifted copy.",
    ),
    kind: str = typer.Option("lightgbm", help="Model kind: lightgbm, logreg or rules."),
    tolerance: float = typer.Option(
        0.02, min=0.001, max=0.5, help="AP a model may lose against its week 0 before it is due."
    ),
    out: Path = typer.Option(
        None, help="Where the plot goes (default: <home>/plots/staleness.png)."
    ),
) -> None:
    """How fast a model ages: a model trained as of every week's first day (labels as
    known then) scores the weeks after it (AP against the final truth); its loss is
    read against the fresh model on the same week. On the home's world and on a copy
    where a new attack starts. Prints the tables and the age at which a model is due;
    writes the plot. Registers nothing."""
    from fraudlab.errors import ConfigError
    from pipelines.prequential import FOLD_DAYS
    from pipelines.staleness import due_after_weeks, plot, run_staleness

    if kind not in ("lightgbm", "logreg", "rules"):
        raise ConfigError(f"--kind must be lightgbm, logreg or rules, got {kind!r}")
    settings = get_settings()
    if drift_day and drift_day >= settings.simulation.days:
        raise ConfigError(
            f"--drift-day {drift_day} is past the simulation's {settings.simulation.days} days"
        )
    curves = run_staleness(settings, drift_day or None, weeks, kind, lambda m: console.log(m))
    for curve in curves:
        table = Table(title=f"{curve.kind}, {curve.world}: AP by test week (rows: models)")
        table.add_column("trained on day")
        week_days = sorted(curve.ap)
        for week in week_days:
            table.add_column(f"wk {week}", justify="right")
        for day, by_week in curve.ap.items():
            table.add_row(
                str(day), *(f"{by_week[w]:.3f}" if w in by_week else "" for w in week_days)
            )
        console.print(table)
        losses = ", ".join(
            f"age {age}: {mean:+.3f} ± {sd:.3f} (n={n})"
            for age, (mean, sd, n) in enumerate(curve.loss_by_age())
            if age
        )
        console.print(f"  {curve.world}: AP lost against a fresh model on the same week, {losses}")
        due = due_after_weeks(curve, tolerance)
        if due >= weeks:
            verdict = f"a model stays within {tolerance} AP of a fresh one for {weeks - 1} weeks"
        elif due == 1:
            verdict = (
                f"a model has lost {tolerance} AP within its first week: no schedule is "
                "fast enough, retraining has to follow the evidence"
            )
        else:
            verdict = (
                f"a model has lost {tolerance} AP by age {due} weeks: retrain before, at "
                f"{FOLD_DAYS * (due - 1)} days at the latest"
            )
        console.print(f"  {curve.world}: {verdict}")
    path = plot(curves, tolerance, out or settings.home / "plots" / "staleness.png")
    console.print(f"plot: {path}")
