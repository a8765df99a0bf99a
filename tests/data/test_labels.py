"""Reporting delays are read off the data: the chargeback window from the legitimate
labels, the delay distribution from the frauds whose window has closed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.labels import ReportingDelays

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
