"""`fraudlab train`: build the training set, train, evaluate, register, gate."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, cast

import typer
from rich.table import Table

from fraudlab.commands.training_report import (
    gate_interval,
    print_calibration,
    print_gate_intervals,
    print_power,
    print_prequential,
    print_slices,
)
from fraudlab.console import console, user_errors
from fraudlab.settings import Settings, get_settings

if TYPE_CHECKING:
    from pipelines.feedback_loop import FeedbackStudy
    from pipelines.models import ModelKind
    from pipelines.train import TrainingOutcome


class ModelChoice(StrEnum):
    logreg = "logreg"
    lightgbm = "lightgbm"
    both = "both"


class JoinChoice(StrEnum):
    pit = "pit"
    naive = "naive"


METRIC_ROWS = [
    ("average_precision", "average precision", "{:.3f}"),
    ("roc_auc", "ROC AUC", "{:.3f}"),
    ("recall_at_1pct_fpr", "recall at 1% FPR", "{:.3f}"),
    ("precision_at_capacity", "precision at capacity ({capacity}/day)", "{:.3f}"),
    ("card_precision_at_capacity", "card precision at capacity ({capacity} cards/day)", "{:.3f}"),
    ("expected_cost", "expected cost at threshold", "{:,.0f}"),
    ("cost_without_model", "cost with no model", "{:,.0f}"),
    ("review_rate", "share sent to review", "{:.2%}"),
    ("brier", "Brier score", "{:.4f}"),
]


def model_kinds(model: ModelChoice) -> list[ModelKind]:
    return ["logreg", "lightgbm"] if model == ModelChoice.both else [cast("ModelKind", model.value)]


def outcome_table(outcomes: list[TrainingOutcome], title: str, capacity: int) -> Table:
    """One column per model, after the rules baseline's (pipelines/rules.py) on the same
    test rows; `capacity` is the analysts' payments a day."""
    rules = outcomes[0].rules_metrics if outcomes else None
    baseline = ["rules (baseline)"] if rules else []
    table = Table(
        "test period", *baseline, *[f"{o.kind} v{o.version}" for o in outcomes], title=title
    )
    for key, label, fmt in METRIC_ROWS:
        row = [_cell(fmt, o.metrics[key]) for o in outcomes]
        first = [_cell(fmt, rules[key])] if rules else []
        table.add_row(label.format(capacity=capacity), *first, *row)
    table.add_row(
        "review / decline threshold",
        *(["1 / 3 rules"] if rules else []),
        *[f"{o.thresholds.review:.3f} / {o.thresholds.decline:.3f}" for o in outcomes],
    )
    table.add_row(
        "gate: ΔAP vs champion [90% CI, days x cards]",
        *(["-"] if rules else []),
        *[gate_interval(o.gate, missing="-") for o in outcomes],
    )
    table.add_row(
        "alias",
        *(["(not registered)"] if rules else []),
        *[o.alias or "(none: gate refused)" for o in outcomes],
    )
    return table


def _cell(fmt: str, value: float) -> str:
    return "-" if math.isnan(value) else fmt.format(value)


@user_errors
def train(
    feature_service: str = typer.Option(
        None,
        help="Feature service to train on (default: settings, fraud_v3; with --join "
        "naive, fraud_v2: the leaky join rebuilds only its views).",
    ),
    model: ModelChoice = typer.Option(ModelChoice.both, help="Which model(s) to train."),
    join: JoinChoice = typer.Option(
        JoinChoice.pit,
        help="pit: point-in-time correct; naive: the leaky join, on purpose (run tagged leaky).",
    ),
    cutoff_day: int = typer.Option(
        None, min=1, help="Train on days before this (default: settings, 100)."
    ),
    folds: int = typer.Option(
        None,
        min=0,
        max=12,
        help="Prequential folds to print: weekly, each trained as of its own day "
        "(default: settings, training.prequential_folds = 4; 0: none).",
    ),
) -> None:
    """Train, evaluate on the held-out test period, register in MLflow, and gate; then
    the rules baseline, calibration, slices, power and prequential folds."""
    from pipelines.train import run_training
    from pipelines.training_set import NAIVE_SERVICE

    settings = get_settings()
    kinds = model_kinds(model)
    service = feature_service or settings.training.feature_service
    if join == JoinChoice.naive and feature_service is None:
        service = NAIVE_SERVICE
        console.print(f"the naive join rebuilds {NAIVE_SERVICE}'s views: training on it")
    outcomes = run_training(
        settings,
        kinds,
        service,
        join.value,
        cutoff_day,
        progress=lambda msg: console.log(msg),
        gate_by_rows=True,
    )
    print_outcomes(settings, outcomes, service, leaky=join == JoinChoice.naive)
    print_evaluation(settings, outcomes)
    folds = settings.training.prequential_folds if folds is None else folds
    if folds and join == JoinChoice.pit:
        from pipelines.prequential import fold_days, run_prequential

        last_cutoff = cutoff_day or settings.training.cutoff_day
        if not fold_days(settings, last_cutoff, folds):
            console.print(
                f"  no prequential fold fits before day {last_cutoff}: each needs a week "
                "of training after the warm-up, a validation week, the label delay and a "
                "test week"
            )
            return
        result = run_prequential(
            settings,
            service,
            list(kinds),
            cutoff_day or settings.training.cutoff_day,
            folds,
            progress=lambda msg: console.log(msg),
        )
        print_prequential(result, settings.training.analyst_capacity_per_day)


def print_evaluation(settings: Settings, outcomes: list[TrainingOutcome]) -> None:
    print_gate_intervals(outcomes)
    print_power(settings, outcomes)
    print_calibration(outcomes)
    print_slices(outcomes)


def print_outcomes(
    settings: Settings, outcomes: list[TrainingOutcome], service: str, leaky: bool = False
) -> None:
    leak = " [bold red](LEAKY: naive join)[/]" if leaky else ""
    title = f"{settings.training.model_name} on {service}{leak}"
    console.print(outcome_table(outcomes, title, settings.training.analyst_capacity_per_day))
    for o in outcomes:
        for note in o.notes:
            console.print(f"  {o.kind} v{o.version}: {note}")


@user_errors
def ablation(
    feature_service: str = typer.Option(
        None,
        help="The feature service to take apart (default: fraud_v3_candidates; with "
        "--weighting, the one the demo trains on, from settings).",
    ),
    compare_with: list[str] = typer.Option(
        ["fraud_v2", "fraud_v3"],
        help="Services to score beside it on the same split (repeatable).",
    ),
    model: ModelChoice = typer.Option(ModelChoice.lightgbm, help="Which model(s) to fit."),
    cutoff_day: int = typer.Option(
        None, min=1, help="Train on days before this (default: settings)."
    ),
    weighting: bool = typer.Option(
        False,
        "--weighting",
        help="Instead: the baseline's class weighting, balanced against none (AP, Brier "
        "score, calibration).",
    ),
) -> None:
    """What each feature group buys: average precision on the same test period with
    each group left out, with the gate's 90% bootstrap interval. Registers nothing."""
    from pipelines.ablation import run_ablation

    settings = get_settings()
    if weighting:
        print_weighting(settings, feature_service or settings.training.feature_service, cutoff_day)
        return
    feature_service = feature_service or "fraud_v3_candidates"
    rows = run_ablation(
        settings,
        feature_service,
        tuple(model_kinds(model)),
        tuple(s for s in compare_with if s != feature_service),
        cutoff_day,
        progress=lambda msg: console.log(msg),
    )
    table = Table(title=f"feature ablation on {feature_service}: one test period")
    table.add_column("model")
    table.add_column("variant", overflow="fold")  # the group's name, never cut short
    table.add_column("features", justify="right")
    table.add_column("AP", justify="right")
    table.add_column("all minus this, 90% paired bootstrap interval", overflow="fold")
    for row in rows:
        table.add_row(
            row.model,
            row.variant,
            str(row.features),
            f"{row.average_precision:.3f}",
            gate_interval(row.versus_all),
        )
    console.print(table)


def print_weighting(settings: Settings, feature_service: str, cutoff_day: int | None) -> None:
    from pipelines.ablation import WeightingRow, run_weighting_ablation

    rows = run_weighting_ablation(
        settings, feature_service, cutoff_day, progress=lambda msg: console.log(msg)
    )
    table = Table(title=f"logistic regression on {feature_service}: class weighting")
    table.add_column("on the test period")
    for row in rows:
        table.add_column(f"class weight {row.weighting}", justify="right")

    measures: list[tuple[str, Callable[[WeightingRow], str]]] = [
        ("average precision", lambda r: f"{r.average_precision:.3f}"),
        ("minus balanced (90% interval)", lambda r: gate_interval(r.versus_balanced)),
        ("Brier score", lambda r: f"{r.brier:.4f}"),
        ("Brier of the base rate", lambda r: f"{r.base_rate_brier:.4f}"),
        ("mean score", lambda r: f"{r.mean_score:.4f}"),
        ("fraud rate", lambda r: f"{r.fraud_rate:.4f}"),
        ("calibration gap (deciles)", lambda r: f"{r.calibration_gap:.4f}"),
    ]
    for name, shown in measures:
        table.add_row(name, *(shown(row) for row in rows))
    console.print(table)


@user_errors
def feedback_loop(
    exploration: float = typer.Option(
        0.05,
        min=0.001,
        max=0.5,
        help="Share of the reviews and declines approved instead, at random, with the "
        "propensity logged.",
    ),
    operation_days: int = typer.Option(
        28, min=7, help="Days the champion decides and the world labels its decisions."
    ),
) -> None:
    """The feedback loop, measured: labels chosen by the champion's decisions, what a
    naive reading gets wrong, and what exploration with logged propensities buys back
    (pipelines/feedback_loop.py). Registers nothing."""
    from pipelines.feedback_loop import run_feedback_study

    settings = get_settings()
    study = run_feedback_study(
        settings, exploration, operation_days, progress=lambda msg: console.log(msg)
    )
    print_feedback_study(study)


def print_feedback_study(study: FeedbackStudy) -> None:
    p = study.periods
    console.print(
        f"history days {p.history[0]}..{p.history[1]} (validation "
        f"{p.history_validation[0]}..{p.history_validation[1]}), operation "
        f"{p.operation[0]}..{p.operation[1]}, test {p.test[0]}..{p.test[1]}; the champion "
        f"(logistic regression) reviews {study.reviews_per_day:.1f} and declines "
        f"{study.declines_per_day:.1f} payments a day"
    )
    table = Table(title="offline evaluation of a candidate (LightGBM) on the operation period")
    table.add_column("labels read as")
    table.add_column("AP", justify="right")
    table.add_column("AP bias", justify="right")
    table.add_column("cost/day", justify="right")
    table.add_column("cost bias", justify="right")
    truth = study.estimates[0]
    for e in study.estimates:
        table.add_row(
            e.name,
            f"{e.average_precision:.3f}",
            f"{e.average_precision - truth.average_precision:+.3f}",
            f"{e.cost_per_day:,.0f}",
            f"{e.cost_per_day - truth.cost_per_day:+,.0f}",
        )
    console.print(table)
    table = Table(title="LightGBM retrained on the operation period, judged on the test truth")
    table.add_column("labels")
    table.add_column("rows", justify="right")
    table.add_column("AP", justify="right")
    table.add_column("minus censored, 90% paired bootstrap interval")
    table.add_column("cost/day", justify="right")
    for r in study.retrained:
        table.add_row(
            r.name,
            f"{r.rows:,}",
            f"{r.average_precision:.3f}",
            gate_interval(r.versus_censored),
            f"{r.cost_per_day:,.0f}",
        )
    console.print(table)
    sources = ", ".join(f"{k} {v:,}" for k, v in sorted(study.label_sources.items()))
    console.print(
        f"exploration {study.exploration:.0%}: {study.explored_per_day:.1f} payments a day "
        f"decided differently, costing {study.exploration_cost_per_day:+,.0f} a day on the "
        f"truth; label events with it: {sources}"
    )
