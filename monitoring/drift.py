"""Drift: has live traffic moved away from what the champion was trained on?

Each of the model's features is compared with the champion's reference sample
(pipelines/reference.py) by one Evidently `ValueDrift` metric, whose statistical test
is Evidently's own choice by reference size: up to 1,000 reference rows a p-value test
(K-S, chi-square or Z), beyond that a distance (normed Wasserstein, Jensen-Shannon).
The default reference holds 5,000 rows, so production gets distances, whose verdict
does not hinge on how many requests the window holds: with 100k requests a p-value test
calls every negligible wobble "drift". The score is tested by PSI (see `_value_drift`),
with the policy's threshold.

Drift alone is a warning, not a verdict (labels decide whether the model got worse), so
the finding names every drifted column with its test, threshold and statistic; the
policy's rules (drifted share, score drift) decide whether it is an alert. A window
shorter than a week would always "drift" on `is_weekend` (a day is all weekend or
none), so the reference is matched to the window's weekend share first.
tests/monitoring/test_drift.py measures the alerts on the test world's healthy days.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudlab.errors import MissingInput
from monitoring.findings import Finding
from monitoring.policy import DriftConfig

WEEKEND = "is_weekend"  # weekly seasonality: matched, not tested for drift
SCORE = "score"
MAX_CURRENT_ROWS = 20_000  # Evidently's cost grows with rows; 20k pins a share to +-0.7%
SUBSAMPLE_SEED = 0  # fixed, so a rerun over the same window gives the same report


def run_drift(
    predictions: pd.DataFrame,
    reference: pd.DataFrame,
    features: list[str],
    out_dir: Path,
    config: DriftConfig,
    *,
    max_rows: int = MAX_CURRENT_ROWS,
    html: bool = True,
    at: datetime | None = None,
    keep_snapshot: Callable[[Any], None] | None = None,
) -> Finding:
    """Feature drift over `features` and prediction drift of `score`.

    `predictions` are the requests the reference's model scored (the champion route),
    one row each with the logged feature values and `score`, as
    serving.prediction_log.read_predictions reads them. Writes `drift.json` (this
    finding) and, with `html`, `drift.html` (Evidently's report, stamped `at`), whose
    snapshot then goes to `keep_snapshot` (the runner adds it to the home's Evidently
    workspace: monitoring/evidently_workspace.py).
    """
    columns = [*features, SCORE]
    missing = [c for c in columns if c not in reference.columns]
    if missing:
        raise MissingInput(f"the reference sample has no column(s) {', '.join(missing)}")
    min_rows = config.min_requests
    if len(predictions) < min_rows:  # checked first: an empty window has no feature columns
        return Finding(
            job="drift",
            status="insufficient_data",
            summary=f"{len(predictions)} requests in the window; drift needs {min_rows}",
            details={"current_rows": len(predictions), "min_rows": min_rows},
        ).saved(out_dir)
    current = logged_values(predictions, columns)
    started = time.perf_counter()
    compared = current
    if len(current) > max_rows:
        compared = current.sample(n=max_rows, random_state=SUBSAMPLE_SEED)
    reference, seasonality = matched_to_week(reference[columns], compared)
    table, testable = _compare(compared, reference, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = html and bool(testable)
    if html:
        snapshot = evidently_report(compared, reference, testable, config, at)
        snapshot.save_html(str(out_dir / "drift.html"))
        if keep_snapshot is not None:
            keep_snapshot(snapshot)
    finding = _finding(table, features)
    finding.details |= {
        "reference_rows": len(reference),
        "seasonality": seasonality,
        "current_rows": len(current),
        "compared_rows": len(compared),
        "subsample": (
            f"a seeded random {max_rows:,} of the window's {len(current):,} requests "
            f"(seed {SUBSAMPLE_SEED}), to bound Evidently's run time"
            if len(compared) < len(current)
            else "none: every request in the window"
        ),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if html:
        finding.reports.append(str(out_dir / "drift.html"))
    return finding.saved(out_dir)


def matched_to_week(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The reference resampled to the window's share of weekend payments.

    Payments (and so scores) differ between weekdays and weekends; the reference spans
    weeks, a one-day window does not. Without this, every Saturday is "score drift".
    Weekly seasonality is known structure, not drift, so it is matched, not tested.
    """
    if WEEKEND not in reference.columns or WEEKEND not in current.columns:
        return reference, "not matched (no is_weekend column)"
    share = float(current[WEEKEND].mean())
    weekend, weekday = reference[reference[WEEKEND] == 1], reference[reference[WEEKEND] == 0]
    if (share > 0 and weekend.empty) or (share < 1 and weekday.empty):
        return reference, "not matched (the reference lacks weekend or weekday rows)"
    n_weekend = round(len(reference) * share)
    parts = [
        weekend.sample(n=n_weekend, replace=n_weekend > len(weekend), random_state=0)
        if n_weekend
        else weekend.head(0),
        weekday.sample(
            n=len(reference) - n_weekend,
            replace=len(reference) - n_weekend > len(weekday),
            random_state=0,
        ),
    ]
    matched = pd.concat(parts, ignore_index=True)
    return matched, f"reference resampled to the window's weekend share ({share:.0%})"


def logged_values(predictions: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The logged values of `columns`, as floats (NaN = missing at serving)."""
    absent = [c for c in columns if c not in predictions.columns]
    if absent:
        raise MissingInput(f"the prediction log has no logged column(s) {', '.join(absent)}")
    return predictions[columns].astype(np.float64).reset_index(drop=True)


def _value_drift(column: str, score_psi_above: float) -> Any:
    """Evidently's ValueDrift for one column: its default test per feature, PSI for the
    score (the tests `_column_drift` runs, as a report's metric).

    A fraud score is a heavy-tailed probability: Evidently's default for large samples
    (Wasserstein distance over the reference's standard deviation) moves with a handful
    of high scores, and on healthy one-day windows of ~1,200 requests it crossed its 0.1
    threshold about one day in four (scenario `baseline`). PSI over the reference's
    quantile bins measures the bulk of the distribution, and is far above its threshold
    when the scores really move.
    """
    from evidently.metrics import ValueDrift

    if column == SCORE:
        return ValueDrift(column=column, method="psi", threshold=score_psi_above)
    return ValueDrift(column=column)


def _column_drift(
    current: pd.DataFrame, reference: pd.DataFrame, column: str, score_psi_above: float
) -> dict[str, Any]:
    """One column's test, threshold, statistic and verdict, by Evidently's own per-column
    drift calculation: the one its ValueDrift metric runs, without building the report's
    plots (most of a report's time). tests/monitoring/test_drift.py checks both agree."""
    from evidently.legacy.calculations.data_drift import get_one_column_drift
    from evidently.legacy.core import ColumnType
    from evidently.legacy.metric_results import DatasetColumns, DatasetUtilityColumns
    from evidently.legacy.options.data_drift import DataDriftOptions

    score = column == SCORE
    options = DataDriftOptions(
        all_features_stattest="psi" if score else None,
        all_features_threshold=score_psi_above if score else None,
    )
    columns = DatasetColumns(
        utility_columns=DatasetUtilityColumns(date=None, id=None, target=None, prediction=None),
        target_type=None,
        task=None,
        num_feature_names=[column],  # every logged value is a float
        cat_feature_names=[],
        text_feature_names=[],
        datetime_feature_names=[],
        target_names=None,
    )
    drift = get_one_column_drift(
        current_data=current,
        reference_data=reference,
        column_name=column,
        options=options,
        dataset_columns=columns,
        column_type=ColumnType.Numerical,
        agg_data=True,
    )
    method = "psi" if score else str(drift.stattest_name)  # as the report names what it was told
    return {
        "method": method,
        "statistic_kind": "p_value" if "p_value" in method else "distance",
        "threshold": float(drift.stattest_threshold),
        "statistic": float(drift.drift_score),
        "drifted": bool(drift.drift_detected),
    }


def _compare(
    current: pd.DataFrame, reference: pd.DataFrame, config: DriftConfig
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per column: Evidently's test, threshold, statistic and verdict; and the
    columns that could be tested."""
    rows: dict[str, dict[str, Any]] = {}
    testable = []
    for column in reference.columns:
        row = {
            "column": column,
            "missing_share_reference": round(float(reference[column].isna().mean()), 4),
            "missing_share_current": round(float(current[column].isna().mean()), 4),
        }
        rows[column] = row
        values = min(reference[column].notna().sum(), current[column].notna().sum())
        if values < config.min_column_values:
            # Evidently drops missing values; a column that is (almost) all missing on one
            # side has nothing to test, and a feature that vanished at serving is drift.
            gone = row["missing_share_current"] > row["missing_share_reference"] + 0.5
            row |= {"method": "missing values", "threshold": None, "statistic": None}
            row |= {"statistic_kind": None, "drifted": bool(gone)}
        else:
            testable.append(column)
            row |= _column_drift(current, reference, column, config.score_psi_above)
    return list(rows.values()), testable


def evidently_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    columns: list[str],
    config: DriftConfig,
    at: datetime | None = None,
) -> Any:
    """Evidently's report (a snapshot) of the same tests, for its HTML and the workspace;
    with the count of drifted features and the score's mean and 99th percentile, which
    the workspace's dashboard plots over time."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, MeanValue, QuantileValue

    definition = DataDefinition(numerical_columns=columns)
    features = [c for c in columns if c != SCORE]
    # No tests of their own (Evidently's defaults hold the score's mean and quantile to
    # the reference within 10%: a verdict the policy does not make); the drift tests
    # above are the report's tests.
    summaries: list[Any] = [DriftedColumnsCount(columns=features, tests=[])] if features else []
    if SCORE in columns:
        summaries += [
            MeanValue(column=SCORE, tests=[]),
            QuantileValue(column=SCORE, quantile=0.99, tests=[]),
        ]
    drifts = [_value_drift(c, config.score_psi_above) for c in columns]
    report = Report([*drifts, *summaries], include_tests=True)
    return report.run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
        timestamp=at,
    )


def _finding(table: list[dict[str, Any]], features: list[str]) -> Finding:
    by_column = {row["column"]: row for row in table}
    drifted = [f for f in features if by_column[f]["drifted"]]
    share = len(drifted) / len(features) if features else 0.0
    score = by_column[SCORE]
    score_drift = bool(score["drifted"])
    statistic = score["statistic"] if score["statistic"] is not None else float("nan")
    summary = (
        f"{len(drifted)} of {len(features)} features drifted ({share:.0%})"
        + (f": {', '.join(drifted)}" if drifted else "")
        + f"; score {'drifted' if score_drift else 'stable'} "
        f"({score['method']} {statistic:.3g}, threshold {score['threshold']})"
    )
    return Finding(
        job="drift",
        status="ok",
        summary=summary,
        metrics={
            "drift_share": share,
            "drifted_features": float(len(drifted)),
            "score_drift": float(score_drift),
            "score_drift_statistic": float(statistic),
        },
        details={
            "drifted_features": drifted,
            "columns": sorted(table, key=lambda r: (not r["drifted"], r["column"] != SCORE)),
        },
    )
