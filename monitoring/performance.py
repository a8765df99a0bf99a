"""Performance: the logged predictions joined to the labels that have arrived by `now`.

Labels arrive late. A reported fraud's label is known when its chargeback arrives (days
to weeks); a legitimate payment's label is final only when its chargeback window closes
(label_available_at); a fraud that is never reported never gets one. So every figure
here is "as known at `now`", and each is shown next to its label maturity: the share of
the window's payments whose label is final. Unreported fraud counts as legitimate, as
it does in training (`labels_known_at`), which makes precision pessimistic; recall is
measured on the frauds reported so far, which makes it optimistic while labels are
immature (the quickly reported frauds are the noticeable ones).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from monitoring.findings import Finding
from pipelines.evaluate import expected_cost
from pipelines.training_set import labels_known_at
from serving.prediction_log import COLUMNS

LOG_COLUMNS = [c for c in COLUMNS if c != "features"]  # the request, not its feature vector

GROUP = ["model_version", "route"]


def join_labels(
    predictions: pd.DataFrame, transactions: pd.DataFrame, now: pd.Timestamp
) -> pd.DataFrame:
    """The predictions with `label` (1 = fraud reported by `now`) and `label_final`
    (the payment's label can no longer change: chargeback arrived or window closed)."""
    # The logged request, not its feature vector; losses are the request's amount.
    request = predictions.drop(columns="amount", errors="ignore")  # `amount` is the feature
    logged = request.rename(columns={"request_amount": "amount"})[LOG_COLUMNS]
    tx = transactions[["transaction_id", "is_fraud", "label_available_at"]]
    tx = tx.assign(transaction_id=tx["transaction_id"].astype(str))  # the log keeps ids as text
    joined = logged.merge(tx, on="transaction_id", how="left", validate="many_to_one")
    arrived = joined["label_available_at"].notna() & (joined["label_available_at"] <= now)
    joined["label"] = labels_known_at(joined.fillna({"is_fraud": 0}), now)
    joined["label_final"] = arrived
    joined["flagged"] = joined["decision"] != "approve"  # the model's own review threshold
    return joined.drop(columns=["is_fraud", "label_available_at"])


def average_precision(labels: pd.Series, scores: pd.Series) -> float:
    """NaN unless both classes are present: AP is undefined without a known fraud."""
    if not 0 < labels.sum() < len(labels):
        return float("nan")
    return float(average_precision_score(labels, scores))


def group_metrics(rows: pd.DataFrame, review_cost: float) -> dict[str, float]:
    """One group's figures: decisions as logged, labels as known at `now`."""
    y, flagged = rows["label"].to_numpy(), rows["flagged"].to_numpy()
    frauds, n_flagged = int(y.sum()), int(flagged.sum())
    # Flagging is already decided, so score = flagged and threshold 1 reuse the cost rule.
    cost = expected_cost(y, flagged.astype(float), rows["amount"].to_numpy(), 1.0, review_cost)
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
        "label_maturity": float(rows["label_final"].mean()) if len(rows) else float("nan"),
    }


def run_performance(
    predictions: pd.DataFrame,
    transactions: pd.DataFrame,
    now: pd.Timestamp,
    *,
    review_cost: float,
    min_known_frauds: int = 30,  # recall on 10 frauds is +-0.15: too noisy to act on
) -> Finding:
    """Per model version and route, and for the champion route as a whole (the figures
    the policy thresholds refer to). Labels that arrive after `now` are not used."""
    joined = join_labels(predictions, transactions, now)
    table = [
        {"model_version": version, "route": route, **group_metrics(rows, review_cost)}
        for (version, route), rows in joined.groupby(GROUP, sort=True)
    ]
    # The policy judges the champion that decides now: a version promoted yesterday must
    # not be retrained for the misses of the one it replaced (drift-new-fraud-pattern).
    champion_rows = joined[joined["route"] == "champion"]
    current = champion_rows["model_version"].iloc[-1] if len(champion_rows) else None
    champion = group_metrics(champion_rows[champion_rows["model_version"] == current], review_cost)
    keys = ("average_precision", "recall", "precision", "cost_per_1k", "label_maturity")
    metrics = {key: champion[key] for key in keys}
    metrics["known_frauds"] = champion["known_frauds"]
    metrics["rows"] = champion["rows"]
    enough = champion["known_frauds"] >= min_known_frauds
    details = {
        "now": now.isoformat(),
        "champion_version": current,
        "review_cost": review_cost,
        "by_version_route": table,
        "unmatched_predictions": int(
            (~joined["transaction_id"].isin(transactions["transaction_id"].astype(str))).sum()
        ),
        "note": (
            "labels as known at `now`: unreported fraud counts as legitimate (precision "
            "pessimistic); recall is over frauds reported so far (optimistic while labels "
            "are immature); label_maturity = share of payments whose label is final"
        ),
    }
    return Finding(
        job="performance",
        status="ok" if enough else "insufficient_data",
        summary=_summary(champion, table, min_known_frauds, enough),
        metrics=metrics,
        details=details,
    )


def _summary(
    champion: dict[str, float], table: list[dict], min_known_frauds: int, enough: bool
) -> str:
    def line(m: dict) -> str:
        return (
            f"AP {m['average_precision']:.3f}, recall {m['recall']:.2f}, "
            f"precision {m['precision']:.2f} at its review threshold, "
            f"{m['cost_per_1k']:.0f} per 1k payments "
            f"[{m['known_frauds']:.0f} known frauds in {m['rows']:.0f} payments, "
            f"labels {m['label_maturity']:.0%} final]"
        )

    head = f"champion route: {line(champion)}."
    if not enough:
        head = (
            f"insufficient data: {champion['known_frauds']:.0f} known frauds on the champion "
            f"route, {min_known_frauds} needed. " + head
        )
    groups = "; ".join(f"{g['route']} v{g['model_version']}: {line(g)}" for g in table)
    caveat = (
        "Recall over known labels is optimistic while labels are immature (only frauds "
        "reported so far count), and precision pessimistic (unreported fraud counts as "
        "legitimate)."
    )
    return f"{head} By version and route: {groups}. {caveat}"
