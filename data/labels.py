"""How fraud labels arrive, as the transactions themselves show it.

A fraud's label arrives with its chargeback, days to weeks after the payment, or never;
a legitimate payment's label is final when its chargeback window closes
(`label_available_at`, data/schema.py). So the window and the reporting delays are
facts of the data, not constants of the simulator: a user's own file gives its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class ReportingDelays:
    """Reporting delays of the frauds whose reports are all in by `now`.

    The cohort is every fraud old enough that its chargeback window has closed: each has
    been reported or never will be, so its delays are not cut short by `now`.
    """

    window: pd.Timedelta  # chargeback window: legitimate labels are final after it
    delays_days: npt.NDArray[np.float64]  # sorted, the cohort's reported frauds
    cohort: int  # frauds in the cohort, reported or not

    @classmethod
    def observed(cls, transactions: pd.DataFrame, now: pd.Timestamp) -> ReportingDelays | None:
        """None when no fraud is old enough yet (or the table has no legitimate label)."""
        fraud = transactions["is_fraud"] == 1
        event, label = transactions["event_timestamp"], transactions["label_available_at"]
        legit_final = (label - event)[~fraud].dropna()
        if legit_final.empty:
            return None
        window = legit_final.median()
        cohort = fraud & (event <= now - window)
        if not cohort.any():
            return None
        reported = cohort & label.notna() & (label <= now)
        delays = ((label - event)[reported] / DAY).to_numpy(np.float64)
        return cls(window, np.sort(delays), int(cohort.sum()))

    def reported_share(self, age_days: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Share of frauds reported within each age: the delay distribution's CDF, with
        the never-reported frauds in the denominator."""
        counts = np.searchsorted(self.delays_days, np.asarray(age_days, np.float64), "right")
        return counts / self.cohort

    def coverage(self, events: pd.Series, now: pd.Timestamp) -> float:
        """Expected share of these payments' frauds whose report has arrived by `now`:
        the mean, over the payments, of the reported share at their age."""
        if events.empty:
            return float("nan")
        return float(self.reported_share(((now - events) / DAY).to_numpy(np.float64)).mean())
