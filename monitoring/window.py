"""A window of event time: what one monitor run looks at.

Time here is the payments' own event time, so the same code works on live traffic and
on a simulated month replayed in minutes: "now" is the end of the window. The log itself
is read through serving.prediction_log, its one owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd


@dataclass(frozen=True)
class Window:
    since: pd.Timestamp  # inclusive, UTC
    until: pd.Timestamp  # exclusive, UTC; also "now" for labels and the decision log

    @classmethod
    def of(cls, since: datetime | str, until: datetime | str) -> Window:
        start, end = pd.Timestamp(since), pd.Timestamp(until)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        if end <= start:
            raise ValueError(f"window end {end} is not after its start {start}")
        return cls(start, end)
