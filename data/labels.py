"""How fraud labels arrive, and the one place training and monitoring read them.

A fraud's label arrives with its chargeback, days to weeks after the payment, or never;
a legitimate payment's label is final when its chargeback window closes
(`label_available_at`, data/schema.py). So the window and the reporting delays are
facts of the data, not constants of the simulator: a user's own file gives its own.

Labels are events: (transaction, source, known_at, value). The transactions file
gives two sources (a chargeback, value 1; the window closing without one, value 0).
Served traffic adds the sources a decision opens (data/feedback.py): an analyst's
verdict on a reviewed payment, a customer confirming a declined one. `known_labels`
is what anyone asks "what did we know about this payment at time t": the latest event
at or before t wins (a chargeback after an analyst's "legitimate" overrides it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudlab.errors import DataValidationError

DAY = pd.Timedelta(days=1)
# Where a label came from: the file's two, and the two a decision opens (data/feedback.py).
SOURCES = ("chargeback", "window_closed", "analyst", "customer")
EVENT_COLUMNS = ["transaction_id", "source", "known_at", "value"]


def history_label_events(tx: pd.DataFrame) -> pd.DataFrame:
    """The transactions file's labels as events: a chargeback (value 1) for each reported
    fraud, the window closing (value 0) for each legitimate payment; an unreported fraud
    has none."""
    known = tx["label_available_at"].notna()
    fraud = tx["is_fraud"] == 1
    return pd.DataFrame(
        {
            "transaction_id": tx.loc[known, "transaction_id"].to_numpy(),
            "source": np.where(fraud[known], "chargeback", "window_closed"),
            # As a datetime array: to_numpy() boxes every tz-aware time as an object,
            # a third of a second on the scenarios' 143k payments, every monitor run.
            "known_at": tx.loc[known, "label_available_at"].array.as_unit("ns"),
            "value": fraud[known].astype(np.int8).to_numpy(),
        }
    )


def known_labels(
    tx: pd.DataFrame, as_of: pd.Timestamp, events: pd.DataFrame | None = None
) -> pd.DataFrame:
    """What was known about each payment of `tx` at `as_of`, aligned with `tx`'s rows:
    `label` (the latest event's value; 0 when nothing is known, the convention training
    has always used), `labelled` (an event had arrived) and `source` ("" when none).
    `events`: the label events to read (default: the file's own, history_label_events)."""
    if events is None:
        events = history_label_events(tx)
    arrived = events[events["known_at"] <= as_of]
    latest = (
        arrived.sort_values("known_at", kind="stable")
        .drop_duplicates("transaction_id", keep="last")
        .set_index("transaction_id")
    )
    found = latest.reindex(tx["transaction_id"].to_numpy())
    labelled = found["value"].notna().to_numpy()
    return pd.DataFrame(
        {
            "label": found["value"].fillna(0).astype(np.int8).to_numpy(),
            "labelled": labelled,
            "source": found["source"].fillna("").to_numpy(),
        },
        index=tx.index,
    )


def labels_known_at(
    tx: pd.DataFrame, cutoff: pd.Timestamp, events: pd.DataFrame | None = None
) -> pd.Series:
    """1 where fraud was known by the cutoff; unknown (an unreported fraud too) is 0."""
    return known_labels(tx, cutoff, events)["label"]


def read_label_feed(path: Path, tx: pd.DataFrame) -> pd.DataFrame | None:
    """The label feed of served traffic (`fraudlab labels settle`, data/feedback.py), or
    None when none was written: then the transactions file's own events are the labels.
    Checked like any data file: a feed of another world is refused, not half-joined."""
    if not path.exists():
        return None
    try:
        events = pd.read_parquet(path)
    except Exception as exc:  # a truncated or foreign file: say which and what to do
        raise DataValidationError(f"label feed {path} is unreadable ({exc}); delete it") from exc
    problem = _feed_problem(events, tx)
    if problem:
        raise DataValidationError(
            f"label feed {path}: {problem}. It belongs to other data or another fraudlab: "
            "delete it, or write it again with `fraudlab labels settle`"
        )
    return events


def _feed_problem(events: pd.DataFrame, tx: pd.DataFrame) -> str | None:
    if list(events.columns) != EVENT_COLUMNS:
        return f"columns {list(events.columns)}, expected {EVENT_COLUMNS}"
    if not isinstance(events["known_at"].dtype, pd.DatetimeTZDtype):
        return "known_at is not a UTC timestamp"
    if not events["value"].isin([0, 1]).all():
        return "a value other than 0 or 1"
    sources = set(events["source"].unique()) - set(SOURCES)
    if sources:
        return f"unknown sources {sorted(sources)}"
    strangers = ~events["transaction_id"].isin(tx["transaction_id"])
    if strangers.any():
        return f"{int(strangers.sum()):,} events of payments the transactions file does not have"
    return None


def write_label_feed(path: Path, events: pd.DataFrame) -> None:
    """Replace the feed at once: a reader sees the old one or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    events[EVENT_COLUMNS].to_parquet(partial, index=False)
    os.replace(partial, path)


def fraud_reported_at(tx: pd.DataFrame, events: pd.DataFrame | None = None) -> pd.Series:
    """When each payment was first known as a fraud (NaT: never), aligned with `tx`'s
    rows: what the known-fraud features may count, and from when. `events`: the label
    events to read (default: the file's own, whose frauds are known at their
    chargeback). From the label feed (data/feedback.py) a declined fraud is never
    known, and a reviewed one from the analyst's verdict. A payment counts from its
    first fraud event even if a later event clears it: counting it until then would
    need the future, counting it after is a belief the system held."""
    if events is None:
        return tx["label_available_at"].where(tx["is_fraud"] == 1)
    first = events[events["value"] == 1].groupby("transaction_id")["known_at"].min()
    return pd.Series(tx["transaction_id"].map(first).to_numpy(), index=tx.index)


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

    def reported_by(self, events: pd.Series, now: pd.Timestamp) -> npt.NDArray[np.float64]:
        """Per payment (its event time), the share of frauds of its age at `now` that
        have been reported by then."""
        return self.reported_share(((now - events) / DAY).to_numpy(np.float64))

    def coverage(self, events: pd.Series, now: pd.Timestamp) -> float:
        """Expected share of these payments' frauds whose report has arrived by `now`:
        the mean, over the payments, of the reported share at their age."""
        if events.empty:
            return float("nan")
        return float(self.reported_by(events, now).mean())
