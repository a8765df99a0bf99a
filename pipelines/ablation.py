"""What each feature group buys: one point-in-time training set, LightGBM (and the
logistic regression) fitted on all of a service's features and then with one group
left out at a time, each scored on the same test rows. A group's contribution is the
full model's average precision minus the model's without it, with the gate's paired
bootstrap interval (pipelines/evaluate.py), so "it helps" means what the gate means:
the whole 90% interval above zero. Printed by `fraudlab ablation`.

`run_weighting_ablation` does the same for the baseline's class weighting: the
logistic regression with `class_weight="balanced"` and without, on one training set,
compared on ranking (AP, with the interval) and on its probabilities (Brier score
against the base rate's, and calibration: mean score against the fraud rate, and the
gap between them over score deciles). Printed by `fraudlab ablation --weighting`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss

from features.definitions import SERVICES, VIEWS
from features.store import feature_service, open_store, service_features
from fraudlab.errors import ConfigError, MissingInput
from fraudlab.settings import Settings
from pipelines.evaluate import Clusters, GateComparison, bootstrap_ap_difference
from pipelines.models import (
    ClassWeighting,
    ModelKind,
    feature_matrix,
    score,
    train_logreg,
)
from pipelines.train import fit_model, load_inputs, make_split
from pipelines.training_set import build_training_frame

if TYPE_CHECKING:
    from feast import FeatureStore

REQUEST_GROUP = "request-time"


@dataclass(frozen=True)
class AblationRow:
    model: ModelKind
    variant: str  # "all", "without <group>", or another service's name
    features: int
    average_precision: float
    versus_all: GateComparison | None  # all minus this variant, paired bootstrap


def feature_groups(service_name: str) -> dict[str, list[str]]:
    """A service's features by view, and its request-time features as one group."""
    spec = SERVICES[service_name]
    groups = {
        view: list(VIEWS[view].features if chosen is None else chosen)
        for view, chosen in spec.views.items()
    }
    groups[REQUEST_GROUP] = list(spec.request_features)
    return groups


Parts = dict[str, pd.DataFrame]  # period -> its rows of the training set


def _all_features(store: FeatureStore, service_name: str) -> list[str]:
    entity_features, request_features = service_features(feature_service(store, service_name))
    return entity_features + request_features


def _periods(
    settings: Settings,
    store: FeatureStore,
    service_name: str,
    cutoff_day: int | None,
    progress: Callable[[str], None],
    with_fraud: tuple[str, ...],
) -> Parts:
    """The service's point-in-time training set by period, as `fraudlab train` builds
    it; each period in `with_fraud` must hold a known fraud."""
    tx = load_inputs(settings)
    split = make_split(settings, tx, cutoff_day or settings.training.cutoff_day)
    progress(f"building the point-in-time training set of {service_name} ({split.describe()})")
    frame = build_training_frame(store, tx, split, service_name)
    parts = {p: frame[frame["period"] == p] for p in ("train", "validation", "test")}
    if any(parts[period]["label"].sum() == 0 for period in with_fraud):
        raise MissingInput("a period has no known fraud: generate more data")
    return parts


def run_ablation(
    settings: Settings,
    service_name: str,
    kinds: tuple[ModelKind, ...] = ("lightgbm",),
    compare_with: tuple[str, ...] = (),
    cutoff_day: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[AblationRow]:
    """The rows of the ablation table, per model kind: all features, each group left
    out, and each service in `compare_with` (its features must be within this one's)."""
    if service_name not in SERVICES:
        raise ConfigError(f"unknown feature service {service_name!r}: {', '.join(SERVICES)}")
    store = open_store(settings)
    everything = _all_features(store, service_name)
    variants: dict[str, list[str]] = {"all": everything}
    for group, names in feature_groups(service_name).items():
        variants[f"without {group}"] = [f for f in everything if f not in names]
    for other in compare_with:
        wanted = _all_features(store, other)
        if not set(wanted) <= set(everything):
            raise ConfigError(f"{other}'s features are not all in {service_name}")
        variants[other] = wanted
    periods = ("train", "validation", "test")
    parts = _periods(settings, store, service_name, cutoff_day, progress, with_fraud=periods)
    labels = parts["test"]["label"].to_numpy()
    rows: list[AblationRow] = []
    for kind in kinds:
        scores: dict[str, np.ndarray] = {}
        for variant, names in variants.items():
            progress(f"{kind}: {variant} ({len(names)} features)")
            model = fit_model(kind, parts, names, settings.simulation.seed)
            scores[variant] = score(model, feature_matrix(parts["test"], names))
        for variant, names in variants.items():
            versus = None
            if variant != "all":
                versus = bootstrap_ap_difference(
                    labels,
                    scores["all"],
                    scores[variant],
                    settings.training.bootstrap_rounds,
                    clusters=Clusters.of(parts["test"]),
                )
            ap = float(average_precision_score(labels, scores[variant]))
            rows.append(AblationRow(kind, variant, len(names), ap, versus))
    return rows


@dataclass(frozen=True)
class WeightingRow:
    weighting: ClassWeighting
    average_precision: float
    versus_balanced: GateComparison | None  # this minus balanced, paired bootstrap
    brier: float
    base_rate_brier: float  # predicting the test fraud rate for every payment
    mean_score: float
    fraud_rate: float
    calibration_gap: float  # mean |mean score - fraud rate| over score deciles, by rows


def calibration_gap(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count score bins: how far the scores are
    from the fraud rate they claim, weighted by rows."""
    order = np.argsort(scores, kind="stable")
    gaps = [
        len(part) * abs(scores[part].mean() - labels[part].mean())
        for part in np.array_split(order, bins)
        if len(part)
    ]
    return float(sum(gaps) / len(scores))


def run_weighting_ablation(
    settings: Settings,
    service_name: str,
    cutoff_day: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[WeightingRow]:
    store = open_store(settings)
    names = _all_features(store, service_name)
    with_fraud = ("train", "test")  # no threshold or early stopping: no validation use
    parts = _periods(settings, store, service_name, cutoff_day, progress, with_fraud)
    train, test = parts["train"], parts["test"]
    labels = test["label"].to_numpy()
    scores: dict[ClassWeighting, np.ndarray] = {}
    for weighting in ("balanced", "none"):
        progress(f"logreg, class weighting {weighting}")
        model = train_logreg(
            feature_matrix(train, names),
            train["label"].to_numpy(),
            settings.simulation.seed,
            weighting,
        )
        scores[weighting] = score(model, feature_matrix(test, names))
    rate = float(labels.mean())
    rows = []
    for weighting, scored in scores.items():
        versus = None
        if weighting != "balanced":
            versus = bootstrap_ap_difference(
                labels,
                scored,
                scores["balanced"],
                settings.training.bootstrap_rounds,
                clusters=Clusters.of(test),
            )
        rows.append(
            WeightingRow(
                weighting,
                float(average_precision_score(labels, scored)),
                versus,
                float(brier_score_loss(labels, scored)),
                float(brier_score_loss(labels, np.full(len(labels), rate))),
                float(scored.mean()),
                rate,
                calibration_gap(labels, scored),
            )
        )
    return rows


def ablation_frame(rows: list[AblationRow]) -> pd.DataFrame:
    """The table as data: one row per (model, variant)."""
    return pd.DataFrame(
        [
            {
                "model": r.model,
                "variant": r.variant,
                "features": r.features,
                "average_precision": r.average_precision,
                "all_minus_this": None if r.versus_all is None else r.versus_all.delta_ap,
                "interval_low": None if r.versus_all is None else r.versus_all.ci_low,
                "interval_high": None if r.versus_all is None else r.versus_all.ci_high,
            }
            for r in rows
        ]
    )
