"""Prequential (rolling) validation: how a model does week after week, not on one split.

One time split answers "how good was the model trained on day 100 on days 72 to 86?",
one number from one stretch of weather. A fraud team retrains on a schedule, so the
question is how a model trained *the way we train* does on the week after it is
trained, over and over. Each fold stands at a training day T:

    train (labels as known at T) | gap | validation | label delay | test week from T

Training sees only what was known at T: payments of the last `label_maturity_days`
before T are left out (most of their frauds are not reported yet), and the test week
starts at T, so the model meets the traffic it would have scored. Its labels are those
known at the settings' cutoff, the same as the single split's test period. The folds'
mean and spread are what the docs quote; the spread is how much one split can mislead.

`History` (one point-in-time frame over every day, built with one Feast join) and
`fit_at` are shared with the staleness curve (pipelines/staleness.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from data.calendar import Calendar
from data.labels import labels_known_at, read_label_feed
from features.store import feature_service, open_store, service_features
from fraudlab.errors import ConfigError
from fraudlab.settings import Settings
from pipelines.evaluate import card_precision_top_k_per_day
from pipelines.models import ModelKind, feature_matrix, score
from pipelines.rules import rules_score
from pipelines.train import fit_model, load_inputs
from pipelines.training_set import point_in_time_frame

Progress = Callable[[str], None]
Scorer = Callable[[pd.DataFrame], np.ndarray]
BASELINE = "rules"  # the first column of every comparison: what a fraud team writes first
FOLD_DAYS = 7  # a test week, and each fold's validation week
MIN_TRAIN_DAYS = 7


def earliest_training_day(settings: Settings) -> int:
    """The first day a model can be trained on: the warm-up, MIN_TRAIN_DAYS of
    training, the gap, a validation week and the label delay must come before it."""
    t = settings.training
    return t.warmup_days + MIN_TRAIN_DAYS + t.gap_days + FOLD_DAYS + t.label_maturity_days


@dataclass(frozen=True)
class History:
    """Every payment from `first_day` to `end_day` with its point-in-time features."""

    frame: pd.DataFrame  # sorted by event time
    features: list[str]
    calendar: Calendar
    label_events: pd.DataFrame | None

    def days(self, first: int, end: int) -> pd.DataFrame:
        """The rows of days [first, end)."""
        ts = self.frame["event_timestamp"]
        return self.frame[(ts >= self.calendar.start(first)) & (ts < self.calendar.start(end))]

    def labelled(self, rows: pd.DataFrame, known_at_day: int) -> pd.DataFrame:
        """`rows` with `label` as known at the start of `known_at_day`."""
        known = labels_known_at(rows, self.calendar.start(known_at_day), self.label_events)
        return rows.assign(label=known.to_numpy())


def load_history(
    settings: Settings, service_name: str, first_day: int, end_day: int, progress: Progress
) -> History:
    tx = load_inputs(settings)
    calendar = Calendar.of(tx["event_timestamp"])
    store = open_store(settings)
    service = feature_service(store, service_name)
    entity_features, request_features = service_features(service)
    span = calendar.days_between(first_day, end_day - first_day, tx["event_timestamp"])
    progress(f"point-in-time features for days {first_day}..{end_day - 1} ({span.sum():,} rows)")
    frame = point_in_time_frame(store, tx[span].reset_index(drop=True), service)
    frame = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    return History(
        frame,
        entity_features + request_features,
        calendar,
        read_label_feed(settings.label_feed_path, tx),
    )


def fit_at(history: History, kind: str, trained_day: int, settings: Settings) -> tuple[Scorer, int]:
    """A model of `kind` ("rules", "logreg", "lightgbm") as trained on the morning of
    `trained_day`, and how many training payments it saw. Rules are not fitted."""
    if kind == BASELINE:
        return rules_score, 0
    t = settings.training
    validation_end = trained_day - t.label_maturity_days
    validation_start = validation_end - FOLD_DAYS
    train_end = validation_start - t.gap_days
    if trained_day < earliest_training_day(settings):
        raise ConfigError(
            f"a model trained on day {trained_day} would have under {MIN_TRAIN_DAYS} "
            f"training days after the {t.warmup_days}-day warm-up"
        )
    parts = {
        "train": history.labelled(history.days(t.warmup_days, train_end), trained_day),
        "validation": history.labelled(history.days(validation_start, validation_end), trained_day),
    }
    model = fit_model(cast("ModelKind", kind), parts, history.features, settings.simulation.seed)
    return (lambda rows: score(model, feature_matrix(rows, history.features))), len(parts["train"])


@dataclass(frozen=True)
class FoldResult:
    trained_day: int
    test_days: tuple[int, int]  # [first, end)
    frauds: int
    average_precision: dict[str, float]  # model kind -> AP
    card_precision: dict[str, float]  # model kind -> card precision at capacity


@dataclass(frozen=True)
class Prequential:
    kinds: list[str]  # rules first
    folds: list[FoldResult]

    def mean_sd(self, kind: str, measure: str = "average_precision") -> tuple[float, float]:
        values = [getattr(f, measure)[kind] for f in self.folds]
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return math.nan, math.nan
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def fold_days(settings: Settings, cutoff_day: int, folds: int) -> list[int]:
    """The training days of up to `folds` folds, oldest first: test weeks back to back,
    the last one ending where the single split's test period ends."""
    t = settings.training
    test_end = cutoff_day - t.label_maturity_days
    days = [test_end - FOLD_DAYS * (i + 1) for i in range(folds)]
    return sorted(d for d in days if d >= earliest_training_day(settings))


def run_prequential(
    settings: Settings,
    service_name: str,
    kinds: list[str],
    cutoff_day: int,
    folds: int,
    progress: Progress = lambda _: None,
) -> Prequential:
    trained_days = fold_days(settings, cutoff_day, folds)
    if not trained_days:
        raise ConfigError(
            f"no prequential fold fits before day {cutoff_day}: each needs "
            f"{MIN_TRAIN_DAYS} training days after the warm-up, a validation week, the "
            "label delay and a test week"
        )
    t = settings.training
    history = load_history(
        settings, service_name, t.warmup_days, trained_days[-1] + FOLD_DAYS, progress
    )
    kinds = [BASELINE, *(k for k in kinds if k != BASELINE)]
    results = []
    for day in trained_days:
        test = history.labelled(history.days(day, day + FOLD_DAYS), cutoff_day)
        y = test["label"].to_numpy()
        aps, cards = {}, {}
        for kind in kinds:
            progress(f"fold trained on day {day}: {kind}")
            scorer, _ = fit_at(history, kind, day, settings)
            s = scorer(test)
            aps[kind] = float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else math.nan
            cards[kind] = card_precision_top_k_per_day(test, s, t.analyst_capacity_per_day)
        results.append(FoldResult(day, (day, day + FOLD_DAYS), int(y.sum()), aps, cards))
    return Prequential(kinds, results)
