"""The feedback loop, measured: the labels a model is retrained and judged on are chosen
by the model before it, and what exploration with logged propensities buys back.

One point-in-time frame of the home's payments (the champion's feature service) and
three periods, in time order:

    history (M0 learns) | operation (M0 decides, the world labels) | test (truth)

1. M0, the champion (the unweighted logistic regression: its score reads as a
   probability), learns from the history as `fraudlab train` would, and its thresholds
   come from the history's last validation days (review: cost-optimal within the
   analysts' daily capacity; decline: where 4 in 5 alerts were fraud).
2. Over the operation period M0 decides every payment. With exploration, a share of the
   payments it would review or decline are approved instead, at random, and each
   decision's probability (its propensity) is logged. The world (data/feedback.py)
   answers each decision: chargebacks for what went through, analysts' verdicts for
   reviews, nothing for declines but good customers who call.
3. What a naive reading of those labels gets wrong, against the simulator's truth:
   - offline evaluation of a candidate (LightGBM on the same history): its average
     precision and its cost per day on the operation period, read naively (labels as
     the pipeline reads them: unknown = legitimate), by inverse-propensity weighting
     (the payments whose truth the logging policy let through, each weighted by one
     over the chance it was let through), and doubly robust (M0's calibrated probability as the
     outcome model, corrected by the weighted residuals; cost only: AP is not a mean
     of per-payment terms);
   - retraining: LightGBM retrained on the operation period's labels, censored (no
     exploration) against with exploration (IPW), and on the truth (the ceiling), each
     judged on the test period's truth: AP with the gate's paired interval, and cost.
4. What exploration costs per day: the logging policy's cost with exploration minus
   without, on the truth.

Printed by `fraudlab feedback-loop`. Registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score

from data.calendar import Calendar
from data.feedback import DecisionCosts, settle
from data.labels import known_labels
from features.store import feature_service, open_store, service_features
from fraudlab.errors import ConfigError, MissingInput
from fraudlab.settings import Settings
from pipelines.calibration import Calibration
from pipelines.evaluate import (
    Clusters,
    GateComparison,
    Thresholds,
    bootstrap_ap_difference,
    capacity_thresholds,
    decisions_of,
)
from pipelines.models import feature_matrix, score, train_lightgbm
from pipelines.train import fit_model, load_inputs, reported_shares
from pipelines.training_set import point_in_time_frame

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Periods:
    """Day numbers (data/calendar.py): [start, end) of each part."""

    history: tuple[int, int]
    history_validation: tuple[int, int]
    operation: tuple[int, int]
    operation_validation: tuple[int, int]
    test: tuple[int, int]

    @classmethod
    def of(
        cls, settings: Settings, calendar: Calendar, operation_days: int, end_day: int | None
    ) -> Periods:
        t = settings.training
        end = calendar.last_day + 1 if end_day is None else end_day
        test = (end - t.test_days, end)
        operation = (test[0] - t.gap_days - operation_days, test[0] - t.gap_days)
        validation_days = max(1, min(t.validation_days, operation_days // 3))
        history_end = operation[0] - t.gap_days
        history = (t.warmup_days, history_end - t.gap_days - t.validation_days)
        if history[1] - history[0] < t.validation_days or end > calendar.last_day + 1:
            raise ConfigError(
                f"days {t.warmup_days}..{end} hold no room for a history, a "
                f"{operation_days}-day operation period and a {t.test_days}-day test: "
                "shorten --operation-days or generate more days"
            )
        return cls(
            history,
            (history_end - t.validation_days, history_end),
            operation,
            (operation[1] - validation_days, operation[1]),
            test,
        )


@dataclass(frozen=True)
class Estimate:
    """One way of reading the operation period's labels, against the truth."""

    name: str
    average_precision: float
    cost_per_day: float
    rows_used: int


@dataclass(frozen=True)
class Retrained:
    name: str
    rows: int
    average_precision: float  # on the test period's truth
    cost_per_day: float
    versus_censored: GateComparison | None  # this minus the censored model's AP


@dataclass(frozen=True)
class FeedbackStudy:
    periods: Periods
    exploration: float
    thresholds: Thresholds  # M0's
    estimates: list[Estimate]  # truth first
    retrained: list[Retrained]
    exploration_cost_per_day: float
    explored_per_day: float
    label_sources: dict[str, int]  # label events by source, with exploration
    declines_per_day: float
    reviews_per_day: float


def row_costs(
    decisions: npt.NDArray[np.str_], fraud: FloatArray, amount: FloatArray, costs: DecisionCosts
) -> FloatArray:
    """Each payment's cost given its decision and a fraud probability (or label): linear
    in `fraud`, which is what lets a doubly robust estimate plug a model's probability in.
    approve: the amount if fraud; review: an analyst's time; decline: a good customer
    turned away."""
    false_decline = costs.false_decline_share * amount + costs.false_decline_fixed
    return np.select(
        [decisions == "approve", decisions == "review"],
        [fraud * amount, np.full(len(amount), costs.review_cost)],
        (1.0 - fraud) * false_decline,
    )


def logged_policy(
    model_decisions: npt.NDArray[np.str_], exploration: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.str_], FloatArray]:
    """The decisions served and each one's propensity: a share `exploration` of the
    reviews and declines is approved instead, at random."""
    flagged = model_decisions != "approve"
    explored = flagged & (rng.random(len(model_decisions)) < exploration)
    served = np.where(explored, "approve", model_decisions)
    propensity = np.where(flagged, np.where(explored, exploration, 1.0 - exploration), 1.0)
    return served, propensity


def run_feedback_study(
    settings: Settings,
    exploration: float = 0.05,
    operation_days: int = 28,
    end_day: int | None = None,
    progress: Progress = lambda _: None,
) -> FeedbackStudy:
    if not 0.0 < exploration < 1.0:
        raise ConfigError(f"exploration must be a share in (0, 1), got {exploration}")
    tx = load_inputs(settings)
    calendar = Calendar.of(tx["event_timestamp"])
    periods = Periods.of(settings, calendar, operation_days, end_day)
    store = open_store(settings)
    service = feature_service(store, settings.training.feature_service)
    entity_features, request_features = service_features(service)
    features = entity_features + request_features
    day = ((tx["event_timestamp"] - calendar.day0) // pd.Timedelta(days=1)).astype(int)
    used = tx.assign(day=day)[(day >= periods.history[0]) & (day < periods.test[1])]
    progress(f"point-in-time join of {len(used):,} payments ({settings.training.feature_service})")
    frame = point_in_time_frame(store, used, service)  # keeps `day`

    def part(span: tuple[int, int]) -> pd.DataFrame:
        return frame[(frame["day"] >= span[0]) & (frame["day"] < span[1])].reset_index(drop=True)

    history, history_valid = part(periods.history), part(periods.history_validation)
    operation, test = part(periods.operation), part(periods.test)
    if min(history["is_fraud"].sum(), operation["is_fraud"].sum(), test["is_fraud"].sum()) == 0:
        raise MissingInput("a period has no fraud: generate more data")
    seed = settings.simulation.seed
    t = settings.training
    costs = DecisionCosts.of(t)

    # 1. M0 learns the history as the pipeline would: labels known when it ends.
    progress("M0: logistic regression on the history")
    as_of = calendar.start(periods.operation[0])
    learned = {
        "train": history.assign(label=known_labels(history, as_of)["label"]),
        "validation": history_valid.assign(label=known_labels(history_valid, as_of)["label"]),
    }
    y_valid = learned["validation"]["label"].to_numpy()
    m0 = fit_model("logreg", learned, features, seed)
    valid_scores = score(m0, feature_matrix(history_valid, features))
    n_valid_days = periods.history_validation[1] - periods.history_validation[0]
    thresholds = capacity_thresholds(
        y_valid, valid_scores, history_valid["amount"].to_numpy(), t, n_valid_days
    )

    # 2. M0 decides the operation period, with and without exploration.
    m0_scores = score(m0, feature_matrix(operation, features))
    model_decisions = decisions_of(m0_scores, thresholds)
    served, propensity = logged_policy(model_decisions, exploration, np.random.default_rng(seed))
    labels_as_of = calendar.start(periods.operation[1] + t.label_maturity_days)

    def world(decisions: npt.NDArray[np.str_]) -> tuple[pd.DataFrame, pd.DataFrame]:
        logged = pd.DataFrame(
            {
                "transaction_id": operation["transaction_id"],
                "decision": decisions,
                "served_at": operation["event_timestamp"],
                "score": m0_scores,
            }
        )
        settled = settle(tx, logged, t.analyst_capacity_per_day, settings.feedback, seed)
        return known_labels(operation, labels_as_of, settled.events), settled.events

    progress("the world labels M0's decisions (censored, then with exploration)")
    censored, _ = world(model_decisions)
    explored, explored_events = world(served)
    truth = operation["is_fraud"].to_numpy(np.float64)
    amount = operation["amount"].to_numpy(np.float64)
    n_days = periods.operation[1] - periods.operation[0]
    # Whose truth the logging policy let through, and the chance it did, from the log
    # alone: a decline let through was explored, at its logged propensity; a review goes
    # through either way (reviewed or approved), an approval always. A declined
    # payment's truth never shows (a customer's call is no random sample: good customers
    # call, fraudsters do not).
    let_through = served != "decline"
    p_through = np.where(model_decisions == "decline", propensity, 1.0)
    weights = np.where(let_through, 1.0 / p_through, 0.0)

    # 3a. Offline evaluation of a candidate, read four ways.
    progress("candidate: LightGBM on the history")
    candidate = fit_model("lightgbm", learned, features, seed)
    cand_valid = score(candidate, feature_matrix(history_valid, features))
    cand_thresholds = capacity_thresholds(
        y_valid, cand_valid, history_valid["amount"].to_numpy(), t, n_valid_days
    )
    cand_scores = score(candidate, feature_matrix(operation, features))
    cand_decisions = decisions_of(cand_scores, cand_thresholds)
    y_explored = explored["label"].to_numpy(np.float64)
    y_censored = censored["label"].to_numpy(np.float64)
    # The doubly robust estimate's outcome model: M0's probability, its score calibrated
    # on the history's validation labels (as known then, their odds taken back by the
    # share of frauds reported by then: pipelines/calibration.py).
    reported = reported_shares(tx, history_valid, as_of).mean()
    m0_probability = Calibration.fit(y_valid, valid_scores, float(reported))(m0_scores)
    direct = row_costs(cand_decisions, m0_probability, amount, costs)
    observed = row_costs(cand_decisions, y_explored, amount, costs)
    estimates = [
        Estimate(
            "truth (every payment's real label)",
            _ap(truth, cand_scores),
            row_costs(cand_decisions, truth, amount, costs).sum() / n_days,
            len(truth),
        ),
        Estimate(
            "naive: labels as known, unknown = legitimate (no exploration)",
            _ap(y_censored, cand_scores),
            row_costs(cand_decisions, y_censored, amount, costs).sum() / n_days,
            len(truth),
        ),
        Estimate(
            f"inverse propensity (exploration {exploration:.0%})",
            _ap(y_explored, cand_scores, weights=weights),
            float((weights * observed).sum()) / n_days,
            int(let_through.sum()),
        ),
        Estimate(
            f"doubly robust (exploration {exploration:.0%})",
            float("nan"),
            float((direct + weights * (observed - direct)).sum()) / n_days,
            len(truth),
        ),
    ]

    # 3b. Retrained on the operation period's labels, judged on the test period's truth.
    train_part = operation["day"] < periods.operation_validation[0]
    valid_part = ~train_part
    test_truth = test["is_fraud"].to_numpy()
    n_test_days = periods.test[1] - periods.test[0]
    regimes = {
        "censored labels, unknown = legitimate": (y_censored, np.ones(len(truth))),
        f"exploration {exploration:.0%}, inverse-propensity weighted": (y_explored, weights),
        "the truth (every label: the ceiling)": (truth, np.ones(len(truth))),
    }
    test_scores: dict[str, FloatArray] = {}
    rows: dict[str, int] = {}
    for name, (labels, w) in regimes.items():
        progress(f"retraining LightGBM: {name}")
        keep = w > 0
        tr, va = train_part.to_numpy() & keep, valid_part.to_numpy() & keep
        model = train_lightgbm(
            feature_matrix(operation[tr], features),
            labels[tr].astype(np.int8),
            feature_matrix(operation[va], features),
            labels[va].astype(np.int8),
            features,
            seed,
            weights=w[tr],
            valid_weights=w[va],
        )
        test_scores[name] = score(model, feature_matrix(test, features))
        rows[name] = int(tr.sum())
    censored_name = next(iter(regimes))
    retrained = []
    for name, scored in test_scores.items():
        versus = None
        if name != censored_name:
            versus = bootstrap_ap_difference(
                test_truth,
                scored,
                test_scores[censored_name],
                t.bootstrap_rounds,
                seed,
                clusters=Clusters.of(test),
            )
        # Thresholds at the same daily alert volume as M0's, so costs compare decisions
        # of the same reach rather than each model's own validation quirks.
        at_volume = _same_volume_decisions(scored, model_decisions, n_days, n_test_days)
        cost = row_costs(at_volume, test_truth.astype(np.float64), test["amount"].to_numpy(), costs)
        retrained.append(
            Retrained(name, rows[name], _ap(test_truth, scored), cost.sum() / n_test_days, versus)
        )

    # 4. What exploration costs: the logged policy with it minus without, on the truth.
    with_cost = row_costs(served, truth, amount, costs).sum()
    without_cost = row_costs(model_decisions, truth, amount, costs).sum()
    sources = explored_events["source"].value_counts().to_dict()
    return FeedbackStudy(
        periods,
        exploration,
        thresholds,
        estimates,
        retrained,
        float(with_cost - without_cost) / n_days,
        float((served != model_decisions).sum()) / n_days,
        {str(k): int(v) for k, v in sources.items()},
        float((model_decisions == "decline").sum()) / n_days,
        float((model_decisions == "review").sum()) / n_days,
    )


def _ap(
    labels: npt.ArrayLike,
    scores: FloatArray,
    weights: FloatArray | None = None,
) -> float:
    y = np.asarray(labels)
    if weights is not None:
        keep = weights > 0
        y, scores, weights = y[keep], scores[keep], weights[keep]
    if not 0 < y.sum() < len(y):
        return float("nan")
    return float(average_precision_score(y, scores, sample_weight=weights))


def _same_volume_decisions(
    scores: FloatArray,
    reference_decisions: npt.NDArray[np.str_],
    reference_days: int,
    days: int,
) -> npt.NDArray[np.str_]:
    """Decisions that decline and review as many payments a day as the reference did:
    the top of `scores` declined, the next reviewed."""
    order = np.argsort(-scores, kind="stable")
    per_day = {d: (reference_decisions == d).sum() / reference_days for d in ("decline", "review")}
    n_decline = round(per_day["decline"] * days)
    n_review = round(per_day["review"] * days)
    decisions = np.full(len(scores), "approve", dtype=object)
    decisions[order[:n_decline]] = "decline"
    decisions[order[n_decline : n_decline + n_review]] = "review"
    return decisions.astype(str)
