"""Day numbers of a transactions table: day 0 is the UTC midnight that opens the day of
its first payment, and day n starts n days later. The training cutoff, the replayed
"future", a scenario's days and a retrain's cutoff are all counted this way, whether the
table came from the simulator or from a user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraudlab.errors import MissingInput

DAY = pd.Timedelta(days=1)
EVENT_TIME = "event_timestamp"


@dataclass(frozen=True)
class Calendar:
    day0: pd.Timestamp  # UTC midnight of the first payment's day
    last_day: int  # the day of the last payment

    @classmethod
    def of(cls, event_timestamps: pd.Series) -> Calendar:
        return cls.spanning(event_timestamps.min(), event_timestamps.max())

    @classmethod
    def spanning(cls, first: pd.Timestamp, last: pd.Timestamp) -> Calendar:
        day0 = pd.Timestamp(first).floor("D")
        return cls(day0, int((pd.Timestamp(last) - day0) // DAY))

    @classmethod
    def of_file(cls, path: Path) -> Calendar:
        """From a Parquet file's event times, reading that one column only."""
        if not path.exists():
            raise MissingInput(f"no transactions at {path}: run `fraudlab data generate` first")
        column = pq.read_table(path, columns=[EVENT_TIME]).column(EVENT_TIME)
        bounds = pc.min_max(column)
        return cls.spanning(bounds["min"].as_py(), bounds["max"].as_py())

    def start(self, day: float) -> pd.Timestamp:
        """The midnight that opens day `day`."""
        return self.day0 + pd.Timedelta(days=day)

    def day_of(self, when: pd.Timestamp) -> int:
        """The day `when` falls in (a midnight opens its own day)."""
        return int((pd.Timestamp(when) - self.day0) // DAY)

    def days_between(self, first: int, days: int, events: pd.Series) -> pd.Series:
        """Mask of the events in days [first, first + days)."""
        return (events >= self.start(first)) & (events < self.start(first + days))
