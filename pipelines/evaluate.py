"""Metrics that mean something at a fraud rate under 1%, cost-based thresholds, and the
offline gate's bootstrap comparison.

Accuracy looks excellent for any model when 99.5% of payments are legitimate (always
saying "legitimate" scores 0.995). ROC AUC does not flatter a random model (0.5), but it
averages over every false-positive rate, most of which no fraud team operates at: at
0.4% fraud, a 5% false-positive rate already means a dozen false alarms per fraud caught.
Average precision, recall at a fixed low false-positive rate, the precision of the alerts
an analyst can actually review per day, and money are what separate models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

FloatArray = npt.NDArray[np.float64]
FIXED_FPR = 0.01  # recall is reported at a 1% false-positive rate
DECLINE_PRECISION = 0.8  # decline outright only where 4 in 5 validation alerts were fraud


class TrainingCosts(Protocol):
    """What thresholds read from the training settings (fraudlab/settings.py)."""

    review_cost: float
    analyst_capacity_per_day: int


@dataclass(frozen=True)
class Thresholds:
    """review: cost-optimal within the analysts' capacity; decline: where validation
    precision reaches the target."""

    review: float
    decline: float


@dataclass(frozen=True)
class Calibration:
    """Platt scaling in logit space: p = sigmoid(slope * logit(score) + intercept),
    fitted on the held-out periods' labels as known at the cutoff. The identity (1, 0)
    is what a version registered without one gets. It maps scores to probabilities for
    the monitor's label-free estimate; decisions keep the raw score and its thresholds.

    The labels it is fitted on are those known at the cutoff: only a share `coverage` of
    the period's frauds had been reported by then (data/labels.py ReportingDelays), so
    the fitted odds are low by that factor, and the intercept takes it back. The result
    is the probability of fraud, reported or not."""

    slope: float = 1.0
    intercept: float = 0.0

    @classmethod
    def fit(cls, labels: npt.ArrayLike, scores: FloatArray, coverage: float = 1.0) -> Calibration:
        y = np.asarray(labels)
        if not 0 < y.sum() < len(y) or not 0 < coverage <= 1:
            return cls()  # one class only, or no report yet: nothing to fit
        logit = _logit(scores).reshape(-1, 1)
        fitted = LogisticRegression(C=1e6).fit(logit, y)  # C large: no shrinkage
        return cls(float(fitted.coef_[0, 0]), float(fitted.intercept_[0] - math.log(coverage)))

    def __call__(self, scores: npt.ArrayLike) -> FloatArray:
        z = self.slope * _logit(np.asarray(scores, np.float64)) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def missed_fraud_rate(
    labels: npt.ArrayLike, scores: FloatArray, review_threshold: float, reported: FloatArray
) -> float:
    """Frauds per payment among those the model approves (the false omission rate), from
    labels as known: each approved payment's fraud is known with chance `reported` (its
    age's share of frauds reported by now, data/labels.py), so the rate is the known
    frauds over the sum of those chances. Approved payments are the one part of the
    traffic whose labels no decision censors: their frauds surface as chargebacks
    whatever the model flagged elsewhere, which is why the monitor watches this rate
    (monitoring/performance.py) instead of a recall that censored declines bias low.

    One fraud is added to the count: a reference period with no missed fraud at all
    (a handful is usual at the small scale) must not make every later one an excess."""
    y, approved = np.asarray(labels), np.asarray(scores) < review_threshold
    exposure = float(np.asarray(reported, np.float64)[approved].sum())
    return (float(y[approved].sum()) + 1.0) / exposure if exposure > 0 else float("nan")


def _logit(scores: FloatArray) -> FloatArray:
    p = np.clip(np.asarray(scores, np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def decisions_of(scores: FloatArray, thresholds: Thresholds) -> npt.NDArray[np.str_]:
    """The model's decision per score: the rule serving applies to one payment
    (serving/scoring.py `decide`), over many."""
    return np.select(
        [scores >= thresholds.decline, scores >= thresholds.review],
        ["decline", "review"],
        "approve",
    ).astype(str)


def capacity_thresholds(
    labels: npt.ArrayLike,
    scores: FloatArray,
    amounts: npt.ArrayLike,
    costs: TrainingCosts,
    days: int,
) -> Thresholds:
    """Validation thresholds: review at the cost optimum unless that sends the analysts
    more than `costs.analyst_capacity_per_day` a day (over `days` validation days), then
    higher, where it sends them exactly that many; decline where precision reaches
    DECLINE_PRECISION (never below the review threshold)."""
    review = cost_optimal_threshold(labels, scores, amounts, costs.review_cost)
    decline = precision_threshold(labels, scores, DECLINE_PRECISION, floor=review)
    below_decline = np.sort(scores[scores < decline])[::-1]
    capacity = costs.analyst_capacity_per_day * days
    if np.count_nonzero(below_decline >= review) > capacity and capacity < len(below_decline):
        # The capacity-th highest score below the decline threshold, and the next one
        # lower, so the threshold sits between distinct scores: at most `capacity` pass.
        review = float(np.nextafter(below_decline[capacity], np.inf))
    return Thresholds(review, decline)


def expected_cost(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    amounts: npt.ArrayLike,
    threshold: float,
    review_cost: float,
) -> float:
    """Missed fraud costs its amount; each payment at or above threshold costs a review."""
    y, s, a = np.asarray(labels), np.asarray(scores), np.asarray(amounts)
    flagged = s >= threshold
    return float(a[(y == 1) & ~flagged].sum() + review_cost * flagged.sum())


def cost_optimal_threshold(
    labels: npt.ArrayLike, scores: npt.ArrayLike, amounts: npt.ArrayLike, review_cost: float
) -> float:
    """The score threshold that minimises expected cost, searched over every score."""
    y, s, a = np.asarray(labels), np.asarray(scores), np.asarray(amounts)
    order = np.argsort(-s, kind="stable")
    s_sorted, fraud_amount = s[order], np.where(y[order] == 1, a[order], 0.0)
    # Flagging the top i payments: reviews cost i * fee, missed fraud is the rest.
    missed = fraud_amount.sum() - np.concatenate([[0.0], np.cumsum(fraud_amount)])
    cost = missed + review_cost * np.arange(len(s_sorted) + 1)
    # Only cut between distinct scores, so a threshold flags exactly the top i.
    valid = np.concatenate([[True], s_sorted[:-1] > s_sorted[1:], [True]])
    best = int(np.argmin(np.where(valid, cost, np.inf)))
    return float(np.inf if best == 0 else s_sorted[best - 1])


def precision_threshold(
    labels: npt.ArrayLike, scores: npt.ArrayLike, target: float, floor: float
) -> float:
    """Lowest threshold >= floor whose precision reaches target (1.0 if none does)."""
    y, s = np.asarray(labels), np.asarray(scores)
    order = np.argsort(-s, kind="stable")
    hits = np.cumsum(y[order] == 1)
    precision = hits / np.arange(1, len(s) + 1)
    ok = (precision >= target) & (s[order] >= floor)
    return float(s[order][np.nonzero(ok)[0][-1]]) if ok.any() else 1.0


def recall_at_fpr(labels: npt.ArrayLike, scores: npt.ArrayLike, fpr: float = FIXED_FPR) -> float:
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(np.interp(fpr, fprs, tprs))


def precision_top_k_per_day(
    frame: pd.DataFrame, scores: FloatArray, k: int, label: str = "label"
) -> float:
    """Mean over days of the fraud share among that day's k highest scores: with k the
    analysts' daily capacity, the share of their work that finds fraud."""
    ranked = pd.DataFrame(
        {
            "day": frame["event_timestamp"].dt.floor("D").to_numpy(),
            "score": scores,
            "label": frame[label].to_numpy(),
        }
    )
    top = ranked.sort_values("score", ascending=False).groupby("day").head(k)
    return float(top.groupby("day")["label"].mean().mean())


def classification_metrics(
    frame: pd.DataFrame, scores: FloatArray, thresholds: Thresholds, costs: TrainingCosts
) -> dict[str, float]:
    y, amounts = frame["label"].to_numpy(), frame["amount"].to_numpy()
    has_both = 0 < y.sum() < len(y)
    cost = expected_cost(y, scores, amounts, thresholds.review, costs.review_cost)
    return {
        "average_precision": float(average_precision_score(y, scores)) if has_both else np.nan,
        "roc_auc": float(roc_auc_score(y, scores)) if has_both else np.nan,
        "recall_at_1pct_fpr": recall_at_fpr(y, scores) if has_both else np.nan,
        "precision_at_capacity": precision_top_k_per_day(
            frame, scores, costs.analyst_capacity_per_day
        ),
        "expected_cost": cost,
        "cost_without_model": float(amounts[y == 1].sum()),
        "brier": float(brier_score_loss(y, scores)),
        "review_rate": float((scores >= thresholds.review).mean()),
        "rows": float(len(y)),
        "frauds_known": float(y.sum()),
    }


@dataclass(frozen=True)
class GateComparison:
    """Candidate minus champion average precision on the same held-out rows."""

    delta_ap: float
    ci_low: float
    ci_high: float
    rounds: int
    se: float = math.nan  # the bootstrap differences' standard deviation

    @property
    def candidate_wins(self) -> bool:
        # The whole 90% interval above zero: better, and not by the luck of the sample.
        return self.ci_low > 0.0


def bootstrap_ap_difference(
    labels: npt.ArrayLike, candidate: FloatArray, champion: FloatArray, rounds: int, seed: int = 0
) -> GateComparison:
    """Paired bootstrap over rows: both models are scored on the same resample."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(rounds):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].sum() == 0:
            continue
        deltas.append(
            average_precision_score(y[idx], candidate[idx])
            - average_precision_score(y[idx], champion[idx])
        )
    observed = average_precision_score(y, candidate) - average_precision_score(y, champion)
    low, high = np.percentile(deltas, [5, 95])
    return GateComparison(
        float(observed), float(low), float(high), len(deltas), float(np.std(deltas))
    )
