"""The world answers decisions: approved payments get the file's labels, the day's
reviews up to capacity get an analyst's verdict, declined ones nothing but the good
customers who call; and what each outcome costs."""

from __future__ import annotations

import pandas as pd
import pytest

from data.feedback import DecisionCosts, label_feed, settle
from data.labels import fraud_reported_at, history_label_events
from features.build import DayGrid, matured_fraud_history
from features.definitions import LONG_WINDOW_DAYS
from fraudlab.settings import FeedbackSettings

T0 = pd.Timestamp("2026-01-01 10:00", tz="UTC")
DAY = pd.Timedelta(days=1)


def world() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six payments on one day: (fraud?, decision, score)."""
    rows = [
        (1, "approve", 0.1),  # 0: a fraud let through: its chargeback comes
        (0, "approve", 0.1),  # 1
        (1, "review", 0.5),  # 2: the riskiest review: an analyst gets to it
        (0, "review", 0.4),  # 3: over capacity: goes through unreviewed
        (1, "decline", 0.9),  # 4: a declined fraud: never labelled
        (0, "decline", 0.8),  # 5: a good customer declined: calls
    ]
    events = [T0 + pd.Timedelta(minutes=i) for i in range(len(rows))]
    tx = pd.DataFrame(
        {
            "transaction_id": range(len(rows)),
            "event_timestamp": events,
            "amount": [100.0] * len(rows),
            "is_fraud": [fraud for fraud, _, _ in rows],
            "label_available_at": [
                e + (5 if f else 30) * DAY for e, (f, _, _) in zip(events, rows, strict=True)
            ],
        }
    )
    decisions = pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"],
            "decision": [d for _, d, _ in rows],
            "served_at": events,
            "score": [s for _, _, s in rows],
        }
    )
    return tx, decisions


def test_labels_follow_the_decision_made() -> None:
    tx, decisions = world()
    feedback = FeedbackSettings(analyst_error_rate=0.0, customer_confirm_share=1.0)
    settled = settle(tx, decisions, capacity_per_day=1, feedback=feedback)
    by_id = settled.events.groupby("transaction_id")
    sources = {i: sorted(group["source"]) for i, group in by_id}
    assert sources == {
        0: ["chargeback"],
        1: ["window_closed"],
        2: ["analyst"],  # blocked on the verdict: no chargeback follows
        3: ["window_closed"],  # nobody reached it: it went through
        5: ["customer"],
    }
    assert 4 not in sources  # the declined fraud's truth never shows
    analyst = settled.events[settled.events["source"] == "analyst"].iloc[0]
    assert analyst["value"] == 1 and analyst["known_at"] < T0 + DAY  # hours, not weeks
    assert settled.events.loc[settled.events["source"] == "customer", "value"].tolist() == [0]
    outcomes = settled.payments.set_index("transaction_id")["outcome"].to_dict()
    assert outcomes == {
        0: "approved",
        1: "approved",
        2: "blocked",
        3: "approved",
        4: "declined",
        5: "declined",
    }


def test_every_part_of_the_cost_is_counted() -> None:
    tx, decisions = world()
    settled = settle(tx, decisions, 1, FeedbackSettings(analyst_error_rate=0.0))
    parts = DecisionCosts(review_cost=5.0, false_decline_share=0.1, false_decline_fixed=2.0)
    cost = parts.breakdown(settled.payments)
    assert cost["missed_fraud"] == 100.0  # payment 0
    assert cost["analyst_time"] == 5.0  # one review worked
    assert cost["false_declines"] == 0.1 * 100 + 2.0  # payment 5
    assert cost["total"] == 100.0 + 5.0 + 12.0


def test_a_wrong_analyst_is_overruled_by_the_chargeback() -> None:
    tx, decisions = world()
    always_wrong = FeedbackSettings(analyst_error_rate=0.49)
    wrong = [
        settle(tx, decisions, 1, always_wrong, seed=seed).events.query("transaction_id == 2")
        for seed in range(20)
    ]
    # Payment 2 is a fraud: a verdict of "legitimate" lets it through, and its
    # chargeback follows; a verdict of fraud blocks it.
    for events in wrong:
        if (events["source"] == "analyst").any() and events["value"].iloc[0] == 0:
            assert "chargeback" in set(events["source"])
            break
    else:
        pytest.fail("no seed drew a wrong verdict at a 49% error rate")


def test_unknown_decisions_and_transactions_are_refused() -> None:
    tx, decisions = world()
    with pytest.raises(ValueError, match="unknown decisions"):
        settle(tx, decisions.assign(decision="block"), 1, FeedbackSettings())
    with pytest.raises(ValueError, match="does not have"):
        settle(tx, decisions.assign(transaction_id=99), 1, FeedbackSettings())


def test_the_feed_settles_served_payments_by_their_last_answer_and_keeps_the_rest() -> None:
    tx, decisions = world()
    extra = tx.iloc[[0]].assign(transaction_id=99)  # never served: the file's label
    tx = pd.concat([tx, extra], ignore_index=True)
    retry = decisions.iloc[[4]].assign(  # the declined fraud, answered again later: approved
        decision="approve", served_at=T0 + pd.Timedelta(hours=1)
    )
    answers = pd.concat([decisions, retry], ignore_index=True)
    feedback = FeedbackSettings(analyst_error_rate=0.0, customer_confirm_share=1.0)
    events, settled = label_feed(tx, answers, 1, feedback)
    assert len(settled.payments) == 6  # one row per payment, the retry included once
    sources = {i: sorted(g["source"]) for i, g in events.groupby("transaction_id")}
    assert sources[99] == ["chargeback"]
    assert sources[4] == ["chargeback"]  # its last answer let it through
    assert 5 in sources and sources[5] == ["customer"]
    assert events["known_at"].is_monotonic_increasing


def test_known_fraud_features_read_the_feed_a_declined_fraud_never_counts() -> None:
    """The terminal-risk features count frauds from when they became known. With the
    label feed, the declined fraud (4) is never known, the reviewed one (2) is known from
    the analyst's verdict within hours, the approved one (0) from its chargeback; the
    file's own events give the file's chargeback times, as the file alone does."""
    tx, decisions = world()
    tx = tx.assign(terminal_id=7)  # one terminal: its counts are all the frauds it knows
    feedback = FeedbackSettings(analyst_error_rate=0.0)
    events, _ = label_feed(tx, decisions, 1, feedback)
    reported = fraud_reported_at(tx, events)
    assert reported.isna().tolist() == [False, True, False, True, True, True]
    assert reported[2] - tx.loc[2, "event_timestamp"] < pd.Timedelta(days=1)  # the analyst
    assert reported[0] == tx.loc[0, "label_available_at"]  # the chargeback
    # The file's own events say what the file says.
    from_history = fraud_reported_at(tx, history_label_events(tx))
    pd.testing.assert_series_equal(from_history, fraud_reported_at(tx), check_names=False)

    grid = DayGrid.covering(pd.concat([tx["event_timestamp"], pd.Series([T0 + 40 * DAY])]))
    a_month_on = grid.day0 + 35 * DAY

    def known_frauds(reported_at: pd.Series) -> int:
        risk = matured_fraud_history(tx, grid, "terminal_id", 0, reported_at)
        (row,) = risk.loc[risk["event_timestamp"] == a_month_on].itertuples()
        return int(getattr(row, f"terminal_known_fraud_count_{LONG_WINDOW_DAYS}d"))

    assert known_frauds(fraud_reported_at(tx)) == 3  # the file: every fraud charged back
    assert known_frauds(reported) == 2  # the feed: never the declined one
