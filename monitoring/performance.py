"""Performance: the logged predictions joined to the labels that have arrived by `now`.

Labels arrive late. A reported fraud's label is known when its chargeback arrives (days
to weeks); a fraud that is never reported never gets one. So every figure here is "as
known at `now`", and each is shown next to its label coverage: the share of the
window's frauds expected to have been reported by now, from the reporting delays the
transactions show (data/labels.py). Unreported fraud counts as legitimate, as it does
in training (`labels_known_at`), which makes precision pessimistic; recall is measured
on the frauds reported so far, a small and noisy sample while coverage is low, and
biased if what a model misses is reported at another pace than what it catches (in this
simulator delays do not depend on the fraud, so early recall is noisy, not biased).

Recall has a second bias once labels come from decisions (monitoring/label_feed.py): a
declined fraud never becomes a chargeback, so the frauds the model catches outright drop
out of both sides of the ratio and recall reads low (docs/scenarios/feedback-loop.md).
The part of the traffic no decision censors is what the model approves: its frauds are
charged back whatever was flagged elsewhere. So the retraining signal is the missed
frauds there, against what the version's own held-out periods predict (its
`missed_fraud_rate` tag times each approved payment's chance of being reported by now):
`missed_fraud_p` is the chance of seeing that many if the version missed `missed_fraud_factor`
times its reference rate (Poisson), small when it misses more than that.

Beside them, a label-free estimate that needs no label at all (confidence-based
performance estimation): each score is mapped to a probability of fraud by its version's
calibration (pipelines/evaluate.py `Calibration`, fitted on the held-out periods); the
window's frauds are then expected to number the sum of the probabilities, its recall to
be the flagged share of that sum, its precision the mean probability of what was
flagged. It is as good as the calibration, so it is checked where labels are:
`expected_known_frauds` (each probability times the share of frauds of its age reported
by now) against the frauds actually known.

Slices: the champion's recall within each fraud pattern (a bank reads it off the
chargeback's reason code; here the transactions' `fraud_pattern`) and each amount band
(pipelines/slices.py), over its recall as a whole. The worst ratio among slices with
`min_slice_frauds` known frauds is `worst_slice_recall_ratio`: an attack the model does
not know can collapse one slice while the total still holds. Censoring lowers every
slice's recall alike, so the ratio survives it where the recall would not.

Age: `model_age_days`, the champion's days since its labels' cutoff (its `labels_as_of`
tag); the policy's schedule retrains at the age `fraudlab staleness` measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import poisson
from sklearn.metrics import average_precision_score

from data.labels import ReportingDelays, labels_known_at
from monitoring.findings import JOB_METRICS, Finding
from monitoring.policy import PerformanceConfig
from pipelines.calibration import Calibration
from pipelines.evaluate import expected_cost
from pipelines.slices import AMOUNT_BANDS, band_name
from serving.exploration import explored
from serving.prediction_log import COLUMNS, table_ids

# The request, not its feature vector or the ages of its features.
LOG_COLUMNS = [c for c in COLUMNS if c not in ("features", "feature_age")]

GROUP = ["model_version", "route"]


@dataclass(frozen=True)
class VersionReference:
    """What a registered version's tags say the monitor should expect of it: its
    calibration (scores to probabilities) and the frauds per approved payment of its
    held-out periods (NaN: a version registered without it, no missed-fraud verdict)."""

    calibration: Calibration = field(default_factory=Calibration)
    missed_fraud_rate: float = math.nan
    labels_as_of: pd.Timestamp | None = None  # the training cutoff (None: unknown)


def join_labels(
    predictions: pd.DataFrame,
    transactions: pd.DataFrame,
    now: pd.Timestamp,
    label_events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The predictions with `label` (1 = fraud known by `now`, from `label_events`:
    default the transactions file's own) and `flagged` (sent to review or declined)."""
    # The logged request, not its feature vector; losses are the request's amount.
    request = predictions.drop(columns="amount", errors="ignore")  # `amount` is the feature
    logged = request.rename(columns={"request_amount": "amount"})[LOG_COLUMNS]
    ids = table_ids(logged["transaction_id"])
    served = transactions[transactions["transaction_id"].isin(ids.dropna())]
    known = labels_known_at(served, now, label_events)
    known.index = served["transaction_id"].to_numpy()
    joined = logged.assign(label=known.reindex(ids).fillna(0).astype(np.int8).to_numpy())
    joined["flagged"] = joined["decision"] != "approve"  # the model's own review threshold
    return joined


def average_precision(labels: pd.Series, scores: pd.Series) -> float:
    """NaN unless both classes are present: AP is undefined without a known fraud."""
    if not 0 < labels.sum() < len(labels):
        return float("nan")
    return float(average_precision_score(labels, scores))


def group_metrics(
    rows: pd.DataFrame,
    review_cost: float,
    delays: ReportingDelays | None,
    now: pd.Timestamp,
    reference: VersionReference,
    missed_fraud_factor: float,
) -> dict[str, float]:
    """One group's figures: decisions as logged, labels as known at `now`, the
    label-free ones from the scores through the version's calibration, and the missed
    frauds on what the model approved against its `reference`."""
    y, flagged = rows["label"].to_numpy(), rows["flagged"].to_numpy()
    frauds, n_flagged = int(y.sum()), int(flagged.sum())
    p = reference.calibration(rows["score"].to_numpy(np.float64))  # label-free figures
    reported = (
        np.full(len(rows), np.nan)
        if delays is None
        else delays.reported_by(rows["event_timestamp"], now)
    )
    # Flagging is already decided, so score = flagged and threshold 1 reuse the cost rule.
    cost = expected_cost(y, flagged.astype(float), rows["amount"].to_numpy(), 1.0, review_cost)
    model_flagged = (rows["model_decision"] != "approve").to_numpy()
    by_exploration = explored(rows["decision"], rows["model_decision"]).to_numpy()
    weights = observation_weights(rows, reported)
    weighted_frauds = float((weights * y).sum())
    model_approved = ~model_flagged
    missed = float((y.astype(bool) & model_approved).sum())
    exposure = float(np.nan_to_num(reported, nan=1.0)[model_approved].sum())
    expected_missed = reference.missed_fraud_rate * exposure  # NaN without a reference
    return {
        "rows": float(len(rows)),
        "known_frauds": float(frauds),
        "average_precision": average_precision(rows["label"], rows["score"]),
        "recall": float((y & flagged).sum() / frauds) if frauds else float("nan"),
        "precision": float((y & flagged).sum() / n_flagged) if n_flagged else float("nan"),
        "review_rate": float(flagged.mean()) if len(rows) else float("nan"),
        "decline_rate": float((rows["decision"] == "decline").mean()) if len(rows) else np.nan,
        "expected_cost": cost,
        "cost_per_1k": 1000.0 * cost / len(rows) if len(rows) else float("nan"),
        # ReportingDelays.coverage: the mean of the reported shares just computed.
        "label_coverage": float(reported.mean()) if delays is not None and len(rows) else np.nan,
        "expected_frauds": float(p.sum()),
        "expected_recall": float(p[flagged].sum() / p.sum()) if p.sum() > 0 else np.nan,
        "expected_precision": float(p[flagged].mean()) if n_flagged else np.nan,
        "expected_known_frauds": float((p * reported).sum()),
        # The model's own recall, each known fraud weighted by one over the chance its
        # label is known by now: the declines exploration let through stand in for the
        # declined frauds no label will ever name, and a chargeback for those still due.
        "ipw_recall": float((weights * y * model_flagged).sum() / weighted_frauds)
        if weighted_frauds
        else np.nan,
        "explored_frauds": float((y & by_exploration).sum()),
        "missed_frauds": missed,
        "expected_missed_frauds": expected_missed,
        "missed_fraud_ratio": missed / expected_missed if expected_missed > 0 else np.nan,
        "missed_fraud_p": float(poisson.sf(missed - 1, missed_fraud_factor * expected_missed))
        if expected_missed > 0
        else np.nan,
    }


def observation_weights(rows: pd.DataFrame, reported: np.ndarray) -> np.ndarray:
    """One over the chance that each payment's fraud label is known by now, given the
    model's decision, the exploration share `s` and the share `r` of frauds of its age
    reported by now (`reported`; NaN reads as 1):
    - the model approved it: its chargeback, r;
    - the model reviewed it: the analyst's verdict (1 - s), or, explored, the
      chargeback (s r);
    - the model declined it: only an explored one ever gets a label, s r.
    A decline that stood never does: a declined fraud never becomes a chargeback. So
    without exploration the declines have no weight to carry them, and the recall is
    the model's on the labels the system let through. The chance is floored at
    `MIN_OBSERVED` so that one fresh chargeback cannot stand for a hundred."""
    model = rows["model_decision"].to_numpy()
    by_exploration = explored(rows["decision"], rows["model_decision"]).to_numpy()
    propensity = rows["propensity"].to_numpy(np.float64)
    flagged = model != "approve"
    share = np.where(by_exploration, propensity, np.where(flagged, 1.0 - propensity, 0.0))
    r = np.nan_to_num(np.asarray(reported, np.float64), nan=1.0)
    observed = np.select(
        [model == "approve", model == "review"], [r, (1.0 - share) + share * r], share * r
    )
    return 1.0 / np.maximum(observed, MIN_OBSERVED)


MIN_OBSERVED = 0.1


def run_performance(
    predictions: pd.DataFrame,
    transactions: pd.DataFrame,
    now: pd.Timestamp,
    config: PerformanceConfig,
    *,
    review_cost: float,
    label_events: pd.DataFrame | None = None,
    references: Mapping[str, VersionReference] | None = None,
) -> Finding:
    """Per model version and route, and for the champion route as a whole (the figures
    the policy's rules refer to). Labels that arrive after `now` are not used;
    `label_events`: the label feed of served traffic, when there is one;
    `references`: each version's (a version without one reads its scores as they are
    and has no missed-fraud verdict)."""
    references = references or {}

    def metrics_of(rows: pd.DataFrame, version: str) -> dict[str, float]:
        reference = references.get(version, VersionReference())
        factor = config.missed_fraud_factor
        return group_metrics(rows, review_cost, delays, now, reference, factor)

    joined = join_labels(predictions, transactions, now, label_events)
    delays = ReportingDelays.observed(transactions, now)
    table = [
        {"model_version": version, "route": route, **metrics_of(rows, str(version))}
        for (version, route), rows in joined.groupby(GROUP, sort=True)
    ]
    # The policy judges the champion that decides now: a version promoted yesterday must
    # not be retrained for the misses of the one it replaced (drift-new-fraud-pattern).
    champion_rows = joined[joined["route"] == "champion"]
    current = champion_rows["model_version"].iloc[-1] if len(champion_rows) else None
    champion = metrics_of(champion_rows[champion_rows["model_version"] == current], str(current))
    reference = references.get(str(current), VersionReference())
    current_rows = champion_rows[champion_rows["model_version"] == current]
    slices = slice_recalls(current_rows, transactions, champion["recall"])
    eligible = [r.recall_ratio for r in slices if r.known_frauds >= config.min_slice_frauds]
    champion["worst_slice_recall_ratio"] = min(eligible, default=math.nan)
    champion["model_age_days"] = (
        math.nan
        if reference.labels_as_of is None
        else (now - reference.labels_as_of) / pd.Timedelta(days=1)
    )
    metrics = {key: champion[key] for key in JOB_METRICS["performance"]}
    enough = champion["known_frauds"] >= config.min_known_frauds
    details = {
        "now": now.isoformat(),
        "champion_version": current,
        "review_cost": review_cost,
        "by_version_route": table,
        "champion_slices": [asdict(r) for r in slices],
        "reporting_delays": None
        if delays is None
        else {
            "chargeback_window_days": delays.window / pd.Timedelta(days=1),
            "cohort_frauds": delays.cohort,
            "median_delay_days": float(np.median(delays.delays_days))
            if len(delays.delays_days)
            else None,
            "never_reported_share": 1 - len(delays.delays_days) / delays.cohort,
        },
        "unmatched_predictions": int(
            (~table_ids(joined["transaction_id"]).isin(transactions["transaction_id"])).sum()
        ),
        "note": (
            "labels as known at `now`: unreported fraud counts as legitimate (precision "
            "pessimistic); recall is over the frauds reported so far; label_coverage = the "
            "share of the payments' frauds expected to be reported by now, from the "
            "reporting delays of frauds whose chargeback window has closed"
        ),
    }
    return Finding(
        job="performance",
        status="ok" if enough else "insufficient_data",
        summary=_summary(champion, table, config.min_known_frauds, enough),
        metrics=metrics,
        details=details,
    )


@dataclass(frozen=True)
class SliceRecall:
    cut: str  # "fraud pattern" or "amount"
    slice: str
    known_frauds: int
    recall: float
    recall_ratio: float  # over the champion's recall as a whole


def slice_recalls(
    rows: pd.DataFrame, transactions: pd.DataFrame, recall: float
) -> list[SliceRecall]:
    """The champion's recall per fraud pattern and amount band, and over its total."""
    y, flagged = rows["label"].to_numpy().astype(bool), rows["flagged"].to_numpy()
    cuts: list[tuple[str, str, np.ndarray]] = []
    if "fraud_pattern" in transactions:
        patterns = transactions.set_index("transaction_id")["fraud_pattern"]
        pattern = patterns.reindex(table_ids(rows["transaction_id"])).fillna("").to_numpy()
        cuts += [("fraud pattern", p, pattern == p) for p in sorted(set(pattern[y]) - {""})]
    amount = rows["amount"].to_numpy()
    for low, high in AMOUNT_BANDS:
        cuts.append(("amount", band_name(low, high), (amount >= low) & (amount < high)))
    found = []
    for cut, name, mask in cuts:
        frauds = int((y & mask).sum())
        caught = float((y & mask & flagged).sum() / frauds) if frauds else math.nan
        ratio = caught / recall if frauds and recall > 0 else math.nan
        found.append(SliceRecall(cut, name, frauds, caught, ratio))
    return found


def _summary(
    champion: dict[str, float], table: list[dict], min_known_frauds: int, enough: bool
) -> str:
    def line(m: dict) -> str:
        return (
            f"AP {m['average_precision']:.3f}, recall {m['recall']:.2f}, "
            f"precision {m['precision']:.2f} at its review threshold, "
            f"{m['cost_per_1k']:.0f} per 1k payments "
            f"[{m['known_frauds']:.0f} known frauds in {m['rows']:.0f} payments, "
            f"{m['label_coverage']:.0%} of their frauds expected reported by now; "
            f"label-free, from the scores: recall {m['expected_recall']:.2f}, precision "
            f"{m['expected_precision']:.2f}, {m['expected_known_frauds']:.0f} known frauds "
            "expected]"
        )

    head = f"champion route: {line(champion)}."
    if not enough:
        head = (
            f"insufficient data: {champion['known_frauds']:.0f} known frauds on the champion "
            f"route, {min_known_frauds} needed. " + head
        )
    groups = "; ".join(f"{g['route']} v{g['model_version']}: {line(g)}" for g in table)
    caveat = (
        "Recall counts only the frauds reported so far (few and noisy while coverage is "
        "low), and precision is pessimistic (unreported fraud counts as legitimate)."
    )
    return f"{head} By version and route: {groups}. {caveat}"
