"""How fast each model caught the card-testing bursts of a run, from the prediction log.

A burst is one card's test payments of one day (data/patterns.py CardTesting). Per
burst and model: was any of its payments flagged (sent to review or declined), after
how many minutes from the burst's first payment, and how many went through before.
The champion's decisions are the answers it gave; the shadow model's are the decisions
it logged for the same payments, which nobody acted on (serving/shadow.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from serving.prediction_log import read_predictions, read_shadow_scores, table_ids

PATTERN = "card_testing"


def burst_catches(
    log_path: Any, transactions: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp
) -> pd.DataFrame:
    """One row per (burst, model): payments, flagged, minutes to the first flag (NaN:
    never), payments approved before it, and whether every payment was scored."""
    requests = read_predictions(log_path, since, until, with_features=False)
    shadow = read_shadow_scores(log_path, requests["request_id"])
    truth = transactions.set_index("transaction_id")[["fraud_pattern", "customer_id"]]
    joined = requests.join(truth, on=table_ids(requests["transaction_id"]), rsuffix="_truth")
    tested = joined[joined["fraud_pattern"] == PATTERN].copy()
    tested["burst"] = (
        tested["customer_id"].astype(str) + "@" + tested["event_timestamp"].dt.date.astype(str)
    )
    decided = {
        "champion": tested.set_index("request_id")["decision"],
        "shadow": shadow.set_index("request_id")["decision"],
    }
    versions = {
        "champion": _only(tested["champion_version"]),
        "shadow": _only(shadow["model_version"]) if len(shadow) else "",
    }
    rows = []
    for model, decisions in decided.items():
        for burst, part in tested.sort_values("event_timestamp").groupby("burst", sort=False):
            decision = part["request_id"].map(decisions)
            flagged = decision.isin(["review", "decline"]).to_numpy()
            declined = (decision == "decline").to_numpy()
            first = _first(flagged)
            rows.append(
                {
                    "model": model,
                    "version": versions[model],
                    "burst": burst,
                    "payments": len(part),
                    "scored": int(decision.notna().sum()),
                    "flagged": int(flagged.sum()),
                    "declined": int(declined.sum()),
                    "approved_before_first_flag": len(part) if first is None else first,
                    "minutes_to_first_flag": _minutes(part["event_timestamp"], first),
                    "minutes_to_first_decline": _minutes(part["event_timestamp"], _first(declined)),
                }
            )
    return pd.DataFrame(rows)


def _first(marks: np.ndarray) -> int | None:
    return int(np.argmax(marks)) if marks.any() else None


def _minutes(times: pd.Series, index: int | None) -> float:
    """From the burst's first payment to its `index`-th (NaN: none)."""
    if index is None:
        return math.nan
    return float((times.iloc[index] - times.iloc[0]) / pd.Timedelta(minutes=1))


def traffic_costs(
    log_path: Any,
    transactions: pd.DataFrame,
    since: pd.Timestamp,
    until: pd.Timestamp,
    review_cost: float,
) -> dict[str, dict[str, float]]:
    """Over every payment, not only the tests: what each model's decisions would cost
    (approved fraud + the review fee per flag) and how many good payments it flagged."""
    requests = read_predictions(log_path, since, until, with_features=False)
    shadow = read_shadow_scores(log_path, requests["request_id"]).set_index("request_id")
    truth = transactions.set_index("transaction_id")[["is_fraud", "amount"]]
    truth = truth.rename(columns={"amount": "amount_recorded"})  # the system of record's
    joined = requests.join(truth, on=table_ids(requests["transaction_id"]))
    fraud = joined["is_fraud"].fillna(0).astype(bool)
    out = {}
    for model, decision in (
        ("champion", joined["decision"]),
        ("shadow", joined["request_id"].map(shadow["decision"])),
    ):
        flagged = decision.isin(["review", "decline"])
        lost = float(joined.loc[fraud & ~flagged, "amount_recorded"].sum())
        out[model] = {
            "payments": float(len(joined)),
            "flagged": float(flagged.sum()),
            "declined": float((decision == "decline").sum()),
            "good_flagged": float((flagged & ~fraud).sum()),
            "fraud_approved": lost,
            "cost": lost + review_cost * float(flagged.sum()),
        }
    return out


def _only(versions: pd.Series) -> str:
    values = sorted(set(versions.dropna().astype(str)) - {""})
    return ",".join(values)


def catch_summary(catches: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per model: bursts, the share caught, minutes to the first flag (median and worst
    over caught bursts), payments let through before it, and shadow coverage."""
    out: dict[str, dict[str, Any]] = {}
    for model, part in catches.groupby("model", sort=False):
        caught = part[part["flagged"] > 0]
        minutes = caught["minutes_to_first_flag"]
        out[str(model)] = {
            "version": str(part["version"].iloc[0]) if len(part) else "",
            "bursts": len(part),
            "caught": len(caught),
            "caught_share": len(caught) / len(part) if len(part) else math.nan,
            "payments": int(part["payments"].sum()),
            "flagged_share": float(part["flagged"].sum() / part["payments"].sum())
            if len(part)
            else math.nan,
            "median_minutes_to_first_flag": float(minutes.median()) if len(caught) else None,
            "worst_minutes_to_first_flag": float(minutes.max()) if len(caught) else None,
            "declined_share": float(part["declined"].sum() / part["payments"].sum())
            if len(part)
            else math.nan,
            "median_minutes_to_first_decline": _median(part["minutes_to_first_decline"]),
            "mean_approved_before_first_flag": float(part["approved_before_first_flag"].mean())
            if len(part)
            else math.nan,
            "scored_share": float(part["scored"].sum() / part["payments"].sum())
            if len(part)
            else math.nan,
        }
    return out


def _median(values: pd.Series) -> float | None:
    known = values.dropna()
    return float(known.median()) if len(known) else None
