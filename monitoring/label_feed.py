"""The label feed of served traffic: the simulated world's answer to what the service
decided (data/feedback.py), written where training and the monitor read labels.

In production the labels come from the card scheme's chargebacks, the analysts' case
tool and customer calls; here the world answers the prediction log. Each payment the log
answered is settled by the decision its caller got (exploration included), every other
payment keeps the transactions file's own labels. The feed holds each event with the
time it becomes known, future ones too: every reader asks for what was known at its own
`now` (data/labels.py `known_labels`), so writing it again as the log grows changes
nothing already known.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from data.feedback import label_feed
from data.labels import write_label_feed
from data.validate import load_transactions
from fraudlab.errors import MissingInput
from fraudlab.settings import Settings
from serving.exploration import explored
from serving.prediction_log import read_predictions, table_ids

ANSWER = ["transaction_id", "decision", "served_at", "score"]


@dataclass(frozen=True)
class FeedSummary:
    served: int  # distinct payments of the file that the log answered
    unmatched: int  # answers naming no payment of the file: not settled
    decisions: dict[str, int]  # served decision -> payments
    outcomes: dict[str, int]  # approved / blocked / declined -> payments
    events: dict[str, int]  # label source -> events in the whole feed
    explored: int  # approvals the model did not make (serving.exploration_share)


def settle_served(settings: Settings, transactions: pd.DataFrame | None = None) -> FeedSummary:
    """Settle every payment the prediction log answered and write the feed."""
    tx = load_transactions(settings) if transactions is None else transactions
    path = settings.prediction_log_path
    if not path.exists():
        raise MissingInput(f"no prediction log at {path}: serve and replay payments first")
    span = tx["event_timestamp"]
    log = read_predictions(
        path, span.min(), span.max() + pd.Timedelta(seconds=1), with_features=False
    )
    ids = table_ids(log["transaction_id"])
    matched = ids.isin(tx["transaction_id"]).to_numpy()
    answers = log.loc[matched, ANSWER].assign(transaction_id=ids[matched].astype("int64"))
    answers["served_at"] = pd.to_datetime(answers["served_at"], utc=True, format="ISO8601")
    t = settings.training
    events, settled = label_feed(
        tx, answers, t.analyst_capacity_per_day, settings.feedback, settings.simulation.seed
    )
    write_label_feed(settings.label_feed_path, events)
    approved_by_exploration = explored(log["decision"], log["model_decision"])
    return FeedSummary(
        served=len(settled.payments),
        unmatched=int((~matched).sum()),
        decisions=settled.payments["decision"].value_counts().to_dict(),
        outcomes=settled.payments["outcome"].value_counts().to_dict(),
        events=events["source"].value_counts().to_dict(),
        explored=int(approved_by_exploration[matched].sum()),
    )
