"""The staleness curve: how fast a model ages, measured, so the retraining cadence is a
number with a curve behind it instead of "every 2 to 4 weeks".

Models are trained as of several days (each with only the labels known that morning,
pipelines/prequential.py `fit_at`) and each scores the weeks that follow; average
precision by the model's age in weeks, against the final truth (the simulator's
`is_fraud`: late weeks have not matured otherwise). Twice: on the home's own world,
where fraud keeps its habits, and on a copy of it where a new attack (card testing)
starts on `drift_day`. The first curve sets the schedule: retrain before the mean AP
has lost `tolerance` against week 0. The second shows why a schedule is not enough: an
attack the model has never seen costs its AP within the week, and only a trigger on
evidence (the policy's missed-fraud-excess rule) retrains in time.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import average_precision_score

from data.calendar import Calendar
from data.simulator import SimulationConfig
from data.validate import load_transactions
from fraudlab.errors import ConfigError
from fraudlab.settings import Settings
from pipelines.prequential import FOLD_DAYS, earliest_training_day, fit_at, load_history

Progress = Callable[[str], None]
TOLERANCE = 0.02  # AP a model may lose before it is due: the canary's margin, doubled


@dataclass(frozen=True)
class Curve:
    """AP per (training day, test week): model m trained on day d scores the weeks
    starting d, d+7, ...; a week's fresh model is the one trained on its first day.

    Weeks differ in how hard their fraud is (a week with many large-amount frauds is
    easy for every model), so AP by age alone mixes age with the calendar. The loss is
    read on the same week: a model's AP minus the fresh model's on that week."""

    world: str  # "as simulated", or "card testing from day D"
    kind: str
    ap: dict[int, dict[int, float]]  # trained day -> week's first day -> AP

    def loss_by_age(self) -> list[tuple[float, float, int]]:
        """Per age in weeks: (mean AP lost against the fresh model, its standard
        deviation, weeks compared)."""
        ages = max(len(weeks) for weeks in self.ap.values())
        out = []
        for age in range(ages):
            losses = [
                self.ap[week][week] - by_week[week]
                for day, by_week in self.ap.items()
                for week in by_week
                if week - day == age * FOLD_DAYS and week in self.ap
            ]
            losses = [x for x in losses if math.isfinite(x)]
            mean = float(np.mean(losses)) if losses else math.nan
            sd = float(np.std(losses, ddof=1)) if len(losses) > 1 else math.nan
            out.append((mean, sd, len(losses)))
        return out


def due_after_weeks(curve: Curve, tolerance: float = TOLERANCE) -> int:
    """The first age (weeks) at which a model has lost `tolerance` AP against a fresh
    one on the same weeks; the number of ages measured if none has."""
    losses = curve.loss_by_age()
    for age, (mean, _, _) in enumerate(losses):
        if age and mean >= tolerance:
            return age
    return len(losses)


def trained_days(settings: Settings, last_day: int, weeks: int) -> list[int]:
    """Every week's first day from the earliest a model can be trained on (the warm-up,
    a week of training, the gap, a validation week, the label delay) to the last full
    week: each is a training day and a test week."""
    days = list(range(earliest_training_day(settings), last_day + 2 - FOLD_DAYS, FOLD_DAYS))
    if len(days) < 2:
        raise ConfigError(
            f"the data's {last_day + 1} days leave room for {len(days)} weekly model(s) "
            "after the warm-up, training, validation and label delay: at least two are "
            "needed to compare ages; generate more days"
        )
    return days


def curve_of(settings: Settings, kind: str, world: str, weeks: int, progress: Progress) -> Curve:
    calendar = Calendar.of_file(settings.transactions_path)
    days = trained_days(settings, calendar.last_day, weeks)
    history = load_history(
        settings,
        settings.training.feature_service,
        settings.training.warmup_days,
        days[-1] + FOLD_DAYS,
        progress,
    )
    ap: dict[int, dict[int, float]] = {}
    for day in days:
        progress(f"{world}: {kind} trained on day {day}")
        scorer, _ = fit_at(history, kind, day, settings)
        ap[day] = {}
        for week in (w for w in days if day <= w < day + weeks * FOLD_DAYS):
            rows = history.days(week, week + FOLD_DAYS)
            y = rows["is_fraud"].to_numpy()
            ok = 0 < y.sum() < len(y)
            ap[day][week] = float(average_precision_score(y, scorer(rows))) if ok else math.nan
    return Curve(world, kind, ap)


def drifted_world(settings: Settings, drift_day: int, home: Path, progress: Progress) -> Settings:
    """The home's simulation again, in `home`, with card testing from `drift_day`."""
    from pipelines.world import WorldBuilder, WorldRecipe

    config = replace(
        SimulationConfig.from_settings(settings.simulation), new_pattern_start_day=drift_day
    )
    drifted = settings.model_copy(update={"home": home})
    builder = WorldBuilder(drifted, WorldRecipe(simulation=config))
    progress(f"simulating the same world with card testing from day {drift_day}")
    builder.generate()
    progress("building its feature tables and Feast registry")
    builder.build_features()
    builder.apply()
    return drifted


def run_staleness(
    settings: Settings,
    drift_day: int | None,
    weeks: int,
    kind: str,
    progress: Progress = lambda _: None,
) -> list[Curve]:
    load_transactions(settings)  # a clear error before anything is built
    curves = [curve_of(settings, kind, "as simulated", weeks, progress)]
    if drift_day is not None:
        with tempfile.TemporaryDirectory(prefix="fraudlab-staleness-") as tmp:
            drifted = drifted_world(settings, drift_day, Path(tmp), progress)
            world = f"card testing from day {drift_day}"
            curves.append(curve_of(drifted, kind, world, weeks, progress))
    return curves


def plot(curves: list[Curve], tolerance: float, path: Path) -> Path:
    """Left: AP lost against a fresh model by age, per world. Right: the last world's
    AP week by week, one line per model (an attack shows as every older line falling)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, curve in enumerate(curves):
        losses = curve.loss_by_age()
        ages = np.arange(len(losses)) + 0.05 * i
        means = [m for m, _, _ in losses]
        sds = [0.0 if math.isnan(sd) else sd for _, sd, _ in losses]
        left.errorbar(ages, means, yerr=sds, marker="o", capsize=3, label=curve.world)
    left.axhline(tolerance, color="C3", ls="--", lw=1, label=f"tolerance {tolerance}")
    left.axhline(0, color="0.5", lw=0.8)
    left.set_xlabel("model age (weeks after training)")
    left.set_ylabel("AP lost against a fresh model, same week")
    left.set_title(f"{curves[0].kind}: staleness (mean ± sd over weeks)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    last = curves[-1]
    for day, by_week in last.ap.items():
        weeks = sorted(by_week)
        right.plot(weeks, [by_week[w] for w in weeks], marker=".", lw=1, label=f"day {day}")
    right.set_xlabel("test week (first day)")
    right.set_ylabel("average precision (final truth)")
    right.set_title(f"{last.world}: each model, week by week")
    right.legend(fontsize=6, ncol=2)
    right.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
