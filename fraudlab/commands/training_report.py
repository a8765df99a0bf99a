"""What `fraudlab train` prints after its main table: the evaluation a design round
asks about. The gate's interval resampling days and cards beside the row bootstrap's,
the calibration comparison, the slices, the power of the comparison and what a canary
would need, and the prequential folds."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.table import Table

from fraudlab.console import console

if TYPE_CHECKING:
    from fraudlab.settings import Settings
    from pipelines.evaluate import GateComparison
    from pipelines.prequential import Prequential
    from pipelines.train import TrainingOutcome

POWER_DELTAS = (0.01, 0.02, 0.05)  # AP differences worth finding
CANARY_DELTA = 0.02


def gate_interval(comparison: GateComparison | None, missing: str = "") -> str:
    """A paired bootstrap comparison as "+0.012 [-0.003, +0.027]"."""
    if comparison is None:
        return missing
    c = comparison
    return f"{c.delta_ap:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}]"


def print_gate_intervals(outcomes: list[TrainingOutcome]) -> None:
    for o in outcomes:
        if o.gate is None or o.gate_by_rows is None:
            continue
        clustered, rows = o.gate, o.gate_by_rows
        narrower = (
            f": the row bootstrap's standard error is x{rows.se / clustered.se:.2f} the "
            "clustered one"
            if clustered.se > 0
            else ""
        )
        console.print(
            f"  {o.kind} v{o.version} gate ΔAP, 90% interval resampling days x cards "
            f"{gate_interval(clustered)} (decides); resampling payments "
            f"{gate_interval(rows)}{narrower}"
        )


def print_calibration(outcomes: list[TrainingOutcome]) -> None:
    table = Table(title="calibration: fitted on validation, judged on the test period")
    for column in ("model", "method", "Brier score", "calibration error (ECE)", "mean p"):
        table.add_column(column, justify="left" if column in ("model", "method") else "right")
    for o in outcomes:
        if o.calibration is None:
            continue
        chosen = o.calibration.chosen
        for row in o.calibration.rows:
            name = "raw score" if row.method == "none" else row.method
            mark = " (chosen)" if row.method == chosen else ""
            table.add_row(
                f"{o.kind} v{o.version}",
                name + mark,
                f"{row.brier:.5f}",
                f"{row.calibration_error:.5f}",
                f"{row.mean_probability:.4f}",
            )
    rate = next((o.calibration.fraud_rate for o in outcomes if o.calibration), math.nan)
    table.caption = (
        f"known fraud rate {rate:.4f}; the chosen method is refitted on both held-out "
        "periods and registered (tags calibration_*); the monitor's label-free estimate "
        "reads scores through it"
    )
    console.print(table)


def print_slices(outcomes: list[TrainingOutcome]) -> None:
    if not outcomes or not outcomes[0].slices:
        return
    table = Table(title="slices of the test period: recall at the review threshold / AP")
    table.add_column("cut")
    table.add_column("slice")
    table.add_column("payments", justify="right")
    table.add_column("known frauds", justify="right")
    for o in outcomes:
        table.add_column(f"{o.kind} v{o.version}", justify="right")
    for i, piece in enumerate(outcomes[0].slices):
        cells = []
        for o in outcomes:
            s = o.slices[i]
            cells.append(f"{_pct(s.recall)} / {s.average_precision:.3f}")
        payments = "-" if piece.cut == "fraud pattern" else f"{piece.payments:,}"
        table.add_row(piece.cut, piece.name, payments, str(piece.frauds), *cells)
    console.print(table)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def print_power(settings: Settings, outcomes: list[TrainingOutcome]) -> None:
    from pipelines.power import canary_plans, frauds_needed

    judged = [o for o in outcomes if o.gate is not None]
    if not judged:
        return
    o = judged[-1]
    assert o.gate is not None
    frauds = int(o.metrics["frauds_known"])
    days = settings.training.test_days
    needed = ", ".join(
        f"ΔAP {d:.2f}: {frauds_needed(o.gate.se, frauds, d):,.0f}" for d in POWER_DELTAS
    )
    console.print(
        f"  power of {o.kind} v{o.version}'s gate (this pair of models; {frauds} known "
        f"frauds, clustered standard error {o.gate.se:.4f}): frauds needed for 80% power "
        f"at the gate's 5% one-sided test, {needed}"
    )
    plans = canary_plans(
        o.gate.se,
        o.gate.se_candidate,
        frauds,
        CANARY_DELTA,
        frauds / days,
        o.metrics["rows"] / days,
    )
    table = Table(
        title=f"canary: days of traffic to find ΔAP {CANARY_DELTA} with 80% power "
        f"({frauds / days:.1f} known frauds and {o.metrics['rows'] / days:,.0f} payments a day)"
    )
    for column in ("canary share", "days, paired (shadow)", "days, by arms", "payments exposed"):
        table.add_column(column, justify="right")
    for p in plans:
        table.add_row(
            f"{p.share:.0%}",
            f"{p.days_paired:,.1f}",
            f"{p.days_by_arms:,.1f}",
            f"{p.payments_exposed:,.0f}",
        )
    table.caption = (
        "paired: the challenger shadow-scores every champion payment, whatever the share; "
        "by arms: the canary's own payments against the champion's. Labels mature after."
    )
    console.print(table)


def print_prequential(result: Prequential, capacity: int) -> None:
    table = Table(
        title="prequential validation: trained on day T (labels as known then), "
        "tested on the week from T"
    )
    table.add_column("trained on day")
    table.add_column("test days")
    table.add_column("frauds", justify="right")
    for kind in result.kinds:
        table.add_column(f"{kind} AP", justify="right")
    for kind in result.kinds:
        table.add_column(f"{kind} card prec.", justify="right")
    for f in result.folds:
        table.add_row(
            str(f.trained_day),
            f"{f.test_days[0]}..{f.test_days[1] - 1}",
            str(f.frauds),
            *(f"{f.average_precision[k]:.3f}" for k in result.kinds),
            *(f"{f.card_precision[k]:.3f}" for k in result.kinds),
        )
    cells = []
    for measure in ("average_precision", "card_precision"):
        for k in result.kinds:
            mean, sd = result.mean_sd(k, measure)
            cells.append(f"{mean:.3f} ± {sd:.3f}")
    table.add_row("mean ± sd", "", "", *cells)
    table.caption = f"card precision: the share of the {capacity} cards reviewed a day with fraud"
    console.print(table)
