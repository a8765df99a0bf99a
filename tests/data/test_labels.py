"""Reporting delays are read off the data: the chargeback window from the legitimate
labels, the delay distribution from the frauds whose window has closed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.labels import (
    EVENT_COLUMNS,
    ReportingDelays,
    history_label_events,
    known_labels,
    labels_known_at,
    read_label_feed,
    write_label_feed,
)
from fraudlab.errors import DataValidationError

T0 = pd.Timestamp("2026-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def table() -> pd.DataFrame:
    """Four old frauds (reported after 1, 2 and 4 days, one never), one recent fraud, and
    legitimate payments whose labels are final 30 days after them."""
    rows = [
        (0, 1, 1.0),
        (0, 1, 2.0),
        (1, 1, 4.0),
        (1, 1, None),
        (35, 1, 1.0),  # too recent at day 40: its window is still open
        (0, 0, 30.0),
        (10, 0, 30.0),
    ]
    events = [T0 + day * DAY for day, _, _ in rows]
    return pd.DataFrame(
        {
            "event_timestamp": events,
            "is_fraud": [fraud for _, fraud, _ in rows],
            "label_available_at": [
                pd.NaT if delay is None else e + delay * DAY
                for e, (_, _, delay) in zip(events, rows, strict=True)
            ],
        }
    )


def test_reporting_delays_come_from_frauds_whose_window_has_closed() -> None:
    delays = ReportingDelays.observed(table(), T0 + 40 * DAY)
    assert delays is not None
    assert delays.window == 30 * DAY
    assert delays.cohort == 4  # the never-reported one counts; the recent one does not
    np.testing.assert_allclose(delays.delays_days, [1.0, 2.0, 4.0])
    np.testing.assert_allclose(delays.reported_share([0.5, 1, 3, 100]), [0, 0.25, 0.5, 0.75])


def test_coverage_is_the_reported_share_at_each_payments_age() -> None:
    assert ReportingDelays.observed(table(), T0 + 5 * DAY) is None  # no cohort yet
    delays = ReportingDelays.observed(table(), T0 + 40 * DAY)
    assert delays is not None
    events = pd.Series([T0 + 2 * DAY, T0 + 38 * DAY])  # 38 and 2 days old
    assert delays.coverage(events, T0 + 40 * DAY) == (0.75 + 0.5) / 2


def with_ids(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(transaction_id=range(len(frame)), amount=10.0)


def test_the_files_labels_are_chargebacks_and_closed_windows_known_when_they_arrive() -> None:
    tx = with_ids(table())
    events = history_label_events(tx)
    assert set(events["source"]) == {"chargeback", "window_closed"}
    assert len(events) == len(tx) - 1  # the never-reported fraud has none
    early = known_labels(tx, T0 + 3 * DAY)
    # By day 3 the first two frauds' chargebacks (1 and 2 days) are in, nothing else.
    assert early["label"].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert early["labelled"].tolist() == [True, True, False, False, False, False, False]
    assert labels_known_at(tx, T0 + 3 * DAY).tolist() == early["label"].tolist()


def test_the_latest_event_wins_so_a_chargeback_overrides_an_analysts_verdict() -> None:
    tx = with_ids(table())
    analyst = pd.DataFrame(
        {
            "transaction_id": [2, 5],
            "source": "analyst",
            "known_at": [T0 + DAY + pd.Timedelta(hours=3), T0 + pd.Timedelta(hours=5)],
            "value": [0, 1],  # wrong both times
        }
    )
    events = pd.concat([history_label_events(tx), analyst], ignore_index=True)
    at_day_2 = known_labels(tx, T0 + 2 * DAY, events)
    assert at_day_2.loc[2, "label"] == 0 and at_day_2.loc[2, "source"] == "analyst"
    assert at_day_2.loc[5, "label"] == 1  # a good payment taken for fraud, for now
    later = known_labels(tx, T0 + 31 * DAY, events)
    assert later.loc[2, "label"] == 1 and later.loc[2, "source"] == "chargeback"
    assert later.loc[5, "label"] == 0 and later.loc[5, "source"] == "window_closed"


def test_the_label_feed_round_trips_and_a_missing_one_means_the_files_labels(tmp_path) -> None:
    tx = table().assign(transaction_id=range(7))
    path = tmp_path / "labels" / "events.parquet"
    assert read_label_feed(path, tx) is None
    events = history_label_events(tx)
    write_label_feed(path, events)
    read = read_label_feed(path, tx)
    assert read is not None
    pd.testing.assert_frame_equal(read, events[EVENT_COLUMNS])
    assert not path.with_suffix(".partial").exists()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda e: e.assign(transaction_id=e["transaction_id"] + 1_000), "does not have"),
        (lambda e: e.assign(source="rumour"), "unknown sources"),
        (lambda e: e.assign(value=2), "other than 0 or 1"),
        (lambda e: e.assign(known_at=e["known_at"].dt.tz_localize(None)), "UTC"),
        (lambda e: e.drop(columns="source"), "columns"),
    ],
)
def test_a_feed_of_other_data_is_refused_with_what_to_do(tmp_path, spoil, message) -> None:
    tx = table().assign(transaction_id=range(7))
    path = tmp_path / "events.parquet"
    spoil(history_label_events(tx)).to_parquet(path)
    with pytest.raises(DataValidationError, match=message) as refused:
        read_label_feed(path, tx)
    assert "fraudlab labels settle" in str(refused.value)


def test_an_unreadable_feed_is_refused(tmp_path) -> None:
    path = tmp_path / "events.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(DataValidationError, match="unreadable"):
        read_label_feed(path, table().assign(transaction_id=range(7)))
