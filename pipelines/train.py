"""The training pipeline: training set, models, test-period metrics, MLflow, the gate.

`run_training` is what `fraudlab train` and the demo call. One training set is built per
call and every requested model trains on it, so their metrics compare like for like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from data.calendar import Calendar
from data.labels import ReportingDelays, read_label_feed
from data.validate import load_transactions
from features.definitions import VIEWS, feature_table_path
from features.store import feature_service, open_store, service_features
from fraudlab.errors import ConfigError, MissingInput
from fraudlab.settings import Settings
from pipelines import plots
from pipelines.calibration import Calibration, CalibrationChoice, compare_calibrations
from pipelines.evaluate import (
    GateComparison,
    Thresholds,
    TrainingCosts,
    capacity_thresholds,
    classification_metrics,
    missed_fraud_rate,
)
from pipelines.gate import leak_signature, offline_gate
from pipelines.models import (
    Model,
    ModelKind,
    feature_importance,
    feature_matrix,
    score,
    train_lightgbm,
    train_logreg,
)
from pipelines.reference import log_reference_sample
from pipelines.registry import VersionTags, code_version, connect, log_model_version
from pipelines.rules import rules_score, rules_threshold
from pipelines.slices import SliceRow, slice_metrics
from pipelines.training_set import JoinKind, TimeSplit, build_training_frame

if TYPE_CHECKING:
    from feast import FeatureStore

Progress = Callable[[str], None]


@dataclass
class TrainingOutcome:
    kind: ModelKind
    version: str
    run_id: str
    metrics: dict[str, float]
    thresholds: Thresholds
    alias: str | None = None
    gate: GateComparison | None = None
    notes: list[str] = field(default_factory=list)
    point_in_time_metrics: dict[str, float] | None = None  # naive runs: the honest test
    gate_by_rows: GateComparison | None = None  # the gate's comparison resampling payments
    calibration: CalibrationChoice | None = None  # raw, Platt, isotonic on the test period
    slices: list[SliceRow] = field(default_factory=list)  # test period, at the review threshold
    rules_metrics: dict[str, float] | None = None  # the rules baseline on the same test rows


# The rules baseline's decisions: review when a rule breaks, decline when three do.
RULES_THRESHOLDS = Thresholds(review=rules_threshold(1), decline=rules_threshold(3))


def rules_metrics(test: pd.DataFrame, costs: TrainingCosts) -> dict[str, float]:
    """pipelines/rules.py on the test period, measured like a model; no Brier score:
    its score is a rank, not a probability."""
    measured = classification_metrics(test, rules_score(test), RULES_THRESHOLDS, costs)
    return measured | {"brier": float("nan")}


def load_inputs(settings: Settings, transactions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The transactions (read unless given), once the feature tables training joins
    against exist too."""
    tx = load_transactions(settings) if transactions is None else transactions
    for view in VIEWS:
        if not feature_table_path(settings.feature_data_dir, view).exists():
            raise MissingInput(f"no feature table for {view}: run `fraudlab features build`")
    return tx


def make_split(settings: Settings, tx: pd.DataFrame, cutoff_day: int) -> TimeSplit:
    calendar = Calendar.of(tx["event_timestamp"])
    last_day = calendar.last_day + 1  # a cutoff at the end of the last day
    if not 0 < cutoff_day <= last_day:
        raise ConfigError(f"cutoff day {cutoff_day} is outside the data (days 1..{last_day})")
    t = settings.training
    try:
        return TimeSplit.ending_at(
            calendar.start(cutoff_day),
            calendar.start(t.warmup_days),
            t.validation_days,
            t.test_days,
            t.gap_days,
            t.label_maturity_days,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def fit_model(
    kind: ModelKind, parts: dict[str, pd.DataFrame], features: list[str], seed: int
) -> Model:
    train, valid = parts["train"], parts["validation"]
    if kind == "logreg":
        return train_logreg(feature_matrix(train, features), train["label"].to_numpy(), seed)
    return train_lightgbm(
        feature_matrix(train, features),
        train["label"].to_numpy(),
        feature_matrix(valid, features),
        valid["label"].to_numpy(),
        features,
        seed,
    )


def _log_figures(
    kind: str, test: pd.DataFrame, scores: np.ndarray, model: Model, features: list[str]
) -> None:
    figures = {
        "pr_curve.png": plots.pr_curve(test["label"], scores, f"{kind}: test PR curve"),
        "calibration.png": plots.calibration(test["label"], scores, f"{kind}: calibration"),
        "feature_importance.png": plots.importance(
            feature_importance(model, features), f"{kind}: feature importance"
        ),
    }
    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}")
        plt.close(fig)


def reported_shares(tx: pd.DataFrame, period: pd.DataFrame, cutoff: pd.Timestamp) -> np.ndarray:
    """Per payment of `period`, the share of frauds of its age reported by the cutoff,
    from the reporting delays the data shows (1 when no fraud is old enough to tell)."""
    delays = ReportingDelays.observed(tx, cutoff)
    if delays is None:
        return np.ones(len(period))
    return delays.reported_by(period["event_timestamp"], cutoff)


def run_training(
    settings: Settings,
    kinds: list[ModelKind],
    service_name: str,
    join: JoinKind = "pit",
    cutoff_day: int | None = None,
    progress: Progress = lambda _: None,
    transactions: pd.DataFrame | None = None,
    gate_by_rows: bool = False,
) -> list[TrainingOutcome]:
    """Train each kind on one training set; `transactions`: the home's table when the
    caller already holds it (read from the home otherwise); `gate_by_rows`: the gate
    also resamples payments, beside its verdict (what `fraudlab train` prints)."""
    tx = load_inputs(settings, transactions)
    store = open_store(settings)
    service = feature_service(store, service_name)
    entity_features, request_features = service_features(service)
    features = entity_features + request_features
    split = make_split(settings, tx, cutoff_day or settings.training.cutoff_day)
    progress(f"building the {join} training set ({split.describe()})")
    # Served traffic's labels come from what was decided, when a feed was written.
    label_events = read_label_feed(settings.label_feed_path, tx)
    frame = build_training_frame(store, tx, split, service_name, join, label_events)
    parts = {p: frame[frame["period"] == p] for p in ("train", "validation", "test")}
    for period, part in parts.items():
        if part["label"].sum() == 0:
            raise MissingInput(f"the {period} period has no known fraud: generate more data")
    fingerprint = str(pd.util.hash_pandas_object(frame[["transaction_id", "label"]]).sum())
    honest_test = None
    if join == "naive":  # what the leaky model will really meet: point-in-time features
        pit = build_training_frame(store, tx, split, service_name, "pit", label_events)
        honest_test = pit[pit["period"] == "test"]
    job = TrainingJob(
        settings,
        connect(settings),
        parts,
        features,
        service_name,
        join,
        split,
        fingerprint,
        honest_test,
        store,
        tx,
        label_events,
        reported_shares(tx, pd.concat([parts["validation"], parts["test"]]), split.cutoff),
        rules_metrics(parts["test"], settings.training),
        gate_by_rows,
    )
    outcomes = []
    for kind in kinds:
        progress(f"training {kind} on {len(parts['train']):,} payments")
        outcomes.append(_train_one(job, kind))
    return outcomes


@dataclass(frozen=True)
class TrainingJob:
    """What every model of one `run_training` call shares."""

    settings: Settings
    client: MlflowClient
    parts: dict[str, pd.DataFrame]  # train, validation, test
    features: list[str]  # the feature service's order: the model's column order
    service_name: str
    join: JoinKind
    split: TimeSplit
    fingerprint: str
    honest_test: pd.DataFrame | None  # naive runs: the test period on PIT features
    store: FeatureStore
    transactions: pd.DataFrame
    label_events: pd.DataFrame | None  # the label feed of served traffic, when written
    # Per held-out payment (validation, then test), the share of frauds of its age
    # reported by the cutoff: how much of their labels is known.
    held_out_reported: np.ndarray
    rules_metrics: dict[str, float]  # the rules baseline on the test period, for every model
    by_rows: bool = False  # the gate also resamples payments, to print beside its verdict
    _test_by_service: dict[str, pd.DataFrame] = field(default_factory=dict)

    def test_period(self, service_name: str) -> pd.DataFrame:
        """The test period's payments with another service's features (the champion's,
        for the gate), built once; the rows are this job's test rows."""
        if service_name == self.service_name:
            return self.parts["test"]
        if service_name not in self._test_by_service:
            frame = build_training_frame(
                self.store, self.transactions, self.split, service_name, "pit", self.label_events
            )
            self._test_by_service[service_name] = frame[frame["period"] == "test"]
        return self._test_by_service[service_name]


def _train_one(job: TrainingJob, kind: ModelKind) -> TrainingOutcome:
    settings, parts, features, split = job.settings, job.parts, job.features, job.split
    service_name, join = job.service_name, job.join
    t = settings.training
    with mlflow.start_run(run_name=f"{kind}-{service_name}-{join}") as run:
        mlflow.set_tags(
            {
                "model_kind": kind,
                "feature_service": service_name,
                "join": join,
                "leaky": str(join == "naive").lower(),
                "code_version": code_version(),
            }
        )
        mlflow.log_params(
            {
                "split": split.describe(),
                "review_cost": t.review_cost,
                "features": ",".join(features),
                "train_rows": len(parts["train"]),
            }
        )
        model = fit_model(kind, parts, features, settings.simulation.seed)
        valid, test = parts["validation"], parts["test"]
        valid_scores = score(model, feature_matrix(valid, features))
        thresholds = capacity_thresholds(
            valid["label"], valid_scores, valid["amount"], t, t.validation_days
        )
        test_scores = score(model, feature_matrix(test, features))
        # Fitted after every choice is made, on both held-out periods: a fraud a day at
        # the small scale, and two parameters need every one of them.
        held_out_labels = np.concatenate([valid["label"], test["label"]])
        held_out_scores = np.concatenate([valid_scores, test_scores])
        choice = compare_calibrations(valid["label"], valid_scores, test["label"], test_scores)
        calibration = Calibration.fit(
            held_out_labels,
            held_out_scores,
            float(job.held_out_reported.mean()),
            choice.chosen,
        )
        metrics = classification_metrics(test, test_scores, thresholds, t)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)})
        _log_figures(kind, test, test_scores, model, features)
        held_out = pd.concat([parts["validation"], parts["test"]])
        log_reference_sample(model, held_out, features, t.reference_sample_rows)
        tags = VersionTags(
            flavor="lightgbm" if kind == "lightgbm" else "sklearn",
            features=features,
            feature_service=service_name,
            threshold_review=thresholds.review,
            threshold_decline=thresholds.decline,
            calibration_slope=calibration.slope,
            calibration_intercept=calibration.intercept,
            calibration_points=calibration.points_tag(),
            missed_fraud_rate=missed_fraud_rate(
                held_out_labels, held_out_scores, thresholds.review, job.held_out_reported
            ),
            train_period=split.train_period(),
            labels_as_of=f"{split.cutoff:%Y-%m-%d}",
            data_fingerprint=job.fingerprint,
            join=join,
            leaky=join == "naive",
            code_version=code_version(),
        )
        example = test[features].head(5).astype("float64")  # serving sends floats, NaN = missing
        version = log_model_version(model, example, t.model_name, tags)
        outcome = TrainingOutcome(kind, version, run.info.run_id, metrics, thresholds)
        outcome.calibration = choice
        outcome.slices = slice_metrics(test, test_scores, thresholds.review)
        outcome.rules_metrics = job.rules_metrics
        mlflow.log_metrics(_evaluation_metrics(outcome))
        if job.honest_test is not None:
            honest = classification_metrics(
                job.honest_test,
                score(model, feature_matrix(job.honest_test, features)),
                thresholds,
                t,
            )
            outcome.point_in_time_metrics = honest
            mlflow.log_metrics({f"pit_test_{k}": v for k, v in honest.items() if np.isfinite(v)})
            outcome.notes.append(
                f"on point-in-time features, as serving will see them: average precision "
                f"{honest['average_precision']:.3f} (leaky test set: "
                f"{metrics['average_precision']:.3f})"
            )
        _gate(job, test, test_scores, outcome)
        if outcome.gate is not None:
            mlflow.log_metrics(
                {
                    "gate_delta_ap": outcome.gate.delta_ap,
                    "gate_delta_ap_ci_low": outcome.gate.ci_low,
                    "gate_delta_ap_ci_high": outcome.gate.ci_high,
                }
            )
        mlflow.set_tag("alias", outcome.alias or "none")
    return outcome


def _gate(
    job: TrainingJob, test: pd.DataFrame, scores: np.ndarray, outcome: TrainingOutcome
) -> None:
    honest = outcome.point_in_time_metrics
    own_ap = outcome.metrics["average_precision"]
    pit_ap = honest["average_precision"] if honest else None
    if leak := leak_signature(job.settings.training, outcome.version, own_ap, pit_ap):
        outcome.notes.append(leak)  # no alias: it never serves
        return
    decision = offline_gate(
        job.client, job.settings, test, scores, outcome.version, job.test_period, job.by_rows
    )
    outcome.alias, outcome.gate = decision.alias, decision.comparison
    outcome.gate_by_rows = decision.by_rows
    outcome.notes.append(decision.note)


def _evaluation_metrics(outcome: TrainingOutcome) -> dict[str, float]:
    """Calibration, slices and the rules baseline as MLflow metrics (finite ones)."""
    found: dict[str, float] = {}
    if outcome.calibration is not None:
        for row in outcome.calibration.rows:
            found[f"test_ece_{row.method}"] = row.calibration_error
            found[f"test_brier_{row.method}"] = row.brier
    for piece in outcome.slices:
        found[f"slice_{piece.key}_recall"] = piece.recall
        found[f"slice_{piece.key}_ap"] = piece.average_precision
    for key, value in (outcome.rules_metrics or {}).items():
        found[f"rules_test_{key}"] = value
    return {k: v for k, v in found.items() if np.isfinite(v)}
