"""The simulated world's answer to a decision: which label a payment gets, when, and
what the decision cost.

In card fraud the truth is not revealed whatever the system did. A declined fraud never
becomes a chargeback; a reviewed payment gets an analyst's verdict within hours, if an
analyst gets to it that day, and analysts are sometimes wrong; an approved fraud turns
into a chargeback days or weeks later, or never. So the labels the next model learns
from are chosen by the last one. This module is that world, given the decisions: the
transactions file (data/schema.py) holds the truth and the chargeback each payment
would get if approved; `settle` says what happened instead.

- approve: the file's own label events (chargeback, or the window closing).
- review: the day's reviews, riskiest first, up to the analysts' capacity, get a
  verdict (`analyst`, wrong at the stated rate) a few hours later. A verdict of fraud
  blocks the payment; otherwise, and for the reviews nobody reached that day, the
  payment goes through and its label comes as if approved.
- decline: no label, except the share of good customers who call to confirm it was
  them (`customer`, value 0): a sample chosen by its label, so no estimate may treat it
  as random (pipelines/feedback_loop.py does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data.labels import EVENT_COLUMNS, history_label_events
from fraudlab.settings import FeedbackSettings, TrainingSettings

HOUR = pd.Timedelta(hours=1)
DECISIONS = ("approve", "review", "decline")


@dataclass(frozen=True)
class Settled:
    """Per payment, aligned with the decisions given: what happened and what it cost;
    and the label events the world produced."""

    # transaction_id, is_fraud, amount, decision, reviewed, and outcome: what finally
    # happened ("approved": it went through; "blocked": by an analyst; "declined").
    payments: pd.DataFrame
    events: pd.DataFrame  # EVENT_COLUMNS (data/labels.py)


@dataclass(frozen=True)
class DecisionCosts:
    """The cost model: missed fraud, analysts' time, and good customers turned away."""

    review_cost: float
    false_decline_share: float
    false_decline_fixed: float

    @classmethod
    def of(cls, training: TrainingSettings) -> DecisionCosts:
        return cls(training.review_cost, training.false_decline_share, training.false_decline_fixed)

    def breakdown(self, payments: pd.DataFrame) -> dict[str, float]:
        """Each part of the cost of settled payments, and the total."""
        fraud = payments["is_fraud"].to_numpy() == 1
        amount = payments["amount"].to_numpy(np.float64)
        outcome = payments["outcome"].to_numpy()
        turned_away = ~fraud & (outcome != "approved")
        parts = {
            "missed_fraud": float(amount[fraud & (outcome == "approved")].sum()),
            "analyst_time": self.review_cost * float(payments["reviewed"].sum()),
            "false_declines": float(
                (self.false_decline_share * amount[turned_away] + self.false_decline_fixed).sum()
            ),
        }
        return parts | {"total": sum(parts.values())}


def settle(
    tx: pd.DataFrame,
    decisions: pd.DataFrame,
    capacity_per_day: int,
    feedback: FeedbackSettings,
    seed: int = 0,
) -> Settled:
    """The world's response to `decisions` (transaction_id, decision, served_at, score;
    transaction ids of `tx`). Seeded: the same decisions give the same labels."""
    unknown = set(decisions["decision"].unique()) - set(DECISIONS)
    if unknown:
        raise ValueError(f"unknown decisions {sorted(unknown)}; expected one of {DECISIONS}")
    rng = np.random.default_rng(seed)
    truth = tx.set_index("transaction_id")[["is_fraud", "amount", "label_available_at"]]
    rows = decisions.join(truth, on="transaction_id", how="left", validate="many_to_one")
    if rows["is_fraud"].isna().any():
        raise ValueError("decisions name transactions the table does not have")
    rows["is_fraud"] = rows["is_fraud"].astype(np.int8)
    served = pd.to_datetime(rows["served_at"], utc=True)

    # Analysts work each day's queue riskiest first, as far as their capacity goes.
    review = rows["decision"] == "review"
    rank = (
        rows.loc[review]
        .assign(day=served[review].dt.floor("D"))
        .groupby("day")["score"]
        .rank(method="first", ascending=False)
    )
    reviewed = pd.Series(False, index=rows.index)
    reviewed.loc[rank.index] = rank <= capacity_per_day
    wrong = rng.random(len(rows)) < feedback.analyst_error_rate
    verdict = np.where(wrong, 1 - rows["is_fraud"], rows["is_fraud"]).astype(np.int8)
    analyst_hours = rng.exponential(feedback.analyst_hours, len(rows))
    blocked = reviewed & (verdict == 1)

    decline = rows["decision"] == "decline"
    # A good customer turned away calls or retries ("it was me"); a fraudster does not,
    # and the cardholder never learns of a payment that did not go through.
    legit = rows["is_fraud"] == 0
    confirms = decline & legit & (rng.random(len(rows)) < feedback.customer_confirm_share)
    confirm_hours = rng.uniform(0.0, feedback.customer_confirm_hours, len(rows))

    outcome = np.where(decline, "declined", np.where(blocked, "blocked", "approved"))
    went_through = outcome == "approved"
    file_events = history_label_events(
        rows.loc[went_through, ["transaction_id", "is_fraud", "label_available_at"]]
    )
    analyst = _events(rows, reviewed, "analyst", served + analyst_hours * HOUR, verdict)
    customer = _events(
        rows, confirms, "customer", served + confirm_hours * HOUR, np.zeros(len(rows))
    )
    events = pd.concat([file_events, analyst, customer], ignore_index=True)
    payments = rows[["transaction_id", "is_fraud", "amount", "decision"]].assign(
        outcome=outcome, reviewed=reviewed.to_numpy()
    )
    return Settled(payments, events.sort_values("known_at", kind="stable", ignore_index=True))


def label_feed(
    tx: pd.DataFrame,
    answers: pd.DataFrame,
    capacity_per_day: int,
    feedback: FeedbackSettings,
    seed: int = 0,
) -> tuple[pd.DataFrame, Settled]:
    """Every label event of the file once some of its payments were served: each served
    payment settled by the decision it got (`answers`: transaction_id, decision,
    served_at, score; a payment answered twice, a client's retry, counts by its last
    answer), every other payment as the file has it. Returns the events and the
    settlement of the served ones."""
    last = answers.sort_values("served_at", kind="stable").drop_duplicates(
        "transaction_id", keep="last"
    )
    settled = settle(tx, last.reset_index(drop=True), capacity_per_day, feedback, seed)
    unserved = tx[~tx["transaction_id"].isin(last["transaction_id"])]
    events = pd.concat([history_label_events(unserved), settled.events], ignore_index=True)
    return events.sort_values("known_at", kind="stable", ignore_index=True), settled


def _events(
    rows: pd.DataFrame, which: pd.Series, source: str, known_at: pd.Series, values: np.ndarray
) -> pd.DataFrame:
    mask = which.to_numpy()
    return pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"].to_numpy()[mask],
            "source": source,
            "known_at": known_at.to_numpy()[mask],
            "value": np.asarray(values, np.int8)[mask],
        },
        columns=EVENT_COLUMNS,
    )
