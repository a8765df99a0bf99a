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


def card_precision_top_k_per_day(
    frame: pd.DataFrame, scores: FloatArray, k: int, label: str = "label"
) -> float:
    """Mean over days of the fraud share among that day's k highest-scored cards.

    Analysts review cards, not payments: a stolen card's ten payments in a day are one
    case, and a card found fraudulent is blocked, so it is no case on later days. Per
    day, a card scores its highest payment; the cards caught on earlier days (reviewed
    then, with a fraud) are left out; the k best of the rest are that day's reviews."""
    per_card_day = (
        pd.DataFrame(
            {
                "day": frame["event_timestamp"].dt.floor("D").to_numpy(),
                "card": frame["customer_id"].to_numpy(),
                "score": scores,
                "fraud": frame[label].to_numpy(),
            }
        )
        .groupby(["day", "card"], sort=False)
        .max()
        .reset_index()
    )
    caught: set[int] = set()
    shares = []
    for _, cards in per_card_day.groupby("day", sort=True):
        reviewed = cards[~cards["card"].isin(caught)].nlargest(k, "score")
        shares.append(float(reviewed["fraud"].mean()))
        caught.update(reviewed.loc[reviewed["fraud"] == 1, "card"].tolist())
    return float(np.mean(shares)) if shares else math.nan


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
        "card_precision_at_capacity": card_precision_top_k_per_day(
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
    resampled: str = "rows"  # what the bootstrap drew: "rows", or "days x cards"
    se_candidate: float = math.nan  # the candidate's own AP's standard deviation

    @property
    def candidate_wins(self) -> bool:
        # The whole 90% interval above zero: better, and not by the luck of the sample.
        return self.ci_low > 0.0


IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Clusters:
    """The day and the card of each row, for a bootstrap that respects how fraud comes.

    Frauds are not independent draws: a leaked card is used until it is blocked (up to
    14 days in the simulator), a compromised terminal for 28, and a day's traffic shares
    its attacks. Resampling payments one by one treats the twenty payments of one stolen
    card as twenty pieces of evidence, and its interval comes out too narrow. This
    resamples days and cards together (the two-way "pigeonhole" bootstrap): each round
    draws days with replacement and cards with replacement, and a row counts (times its
    day was drawn) x (times its card was drawn)."""

    day: IntArray
    card: IntArray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Clusters:
        """From a frame's `event_timestamp` (UTC days) and `customer_id` (the card)."""
        day = pd.factorize(frame["event_timestamp"].dt.floor("D"))[0]
        card = pd.factorize(frame["customer_id"])[0]
        return cls(day.astype(np.int64), card.astype(np.int64))

    def weights(self, rng: np.random.Generator) -> FloatArray:
        drawn = [
            np.bincount(rng.integers(0, n, n), minlength=n)
            for n in (int(self.day.max()) + 1, int(self.card.max()) + 1)
        ]
        return (drawn[0][self.day] * drawn[1][self.card]).astype(np.float64)


def _row_weights(n: int, rng: np.random.Generator) -> FloatArray:
    return np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)


def bootstrap_ap_difference(
    labels: npt.ArrayLike,
    candidate: FloatArray,
    champion: FloatArray,
    rounds: int,
    seed: int = 0,
    clusters: Clusters | None = None,
) -> GateComparison:
    """Paired bootstrap: both models are scored on the same resample. With `clusters`,
    days and cards are resampled (Clusters); without, rows, as if payments were
    independent: the narrower interval, kept to show how much narrower."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    deltas, own = [], []
    for _ in range(rounds):
        w = _row_weights(len(y), rng) if clusters is None else clusters.weights(rng)
        drawn = w > 0
        if not (w * y).sum():
            continue
        yw, ww = y[drawn], w[drawn]
        own.append(average_precision_score(yw, candidate[drawn], sample_weight=ww))
        deltas.append(own[-1] - average_precision_score(yw, champion[drawn], sample_weight=ww))
    observed = average_precision_score(y, candidate) - average_precision_score(y, champion)
    low, high = np.percentile(deltas, [5, 95]) if deltas else (math.nan, math.nan)
    return GateComparison(
        float(observed),
        float(low),
        float(high),
        len(deltas),
        float(np.std(deltas)) if deltas else math.nan,
        "rows" if clusters is None else "days x cards",
        float(np.std(own)) if own else math.nan,
    )
