"""Reading the prediction log (serving/prediction_log.py) for a window of event time.

Time here is the payments' own event time, so the same code works on live traffic and
on a simulated month replayed in minutes: "now" is the end of the window.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fraudlab.errors import MissingInput


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


def read_predictions(log_path: Path, window: Window) -> pd.DataFrame:
    """Answered requests in the window, one row each, with the logged feature vector
    expanded into one float column per feature (NaN = missing at serving time).

    The request's own amount is `request_amount`, so that the column `amount` is the
    feature serving computed and scored (they differ when serving converts it wrongly).
    """
    if not log_path.exists():
        raise MissingInput(f"no prediction log at {log_path}: serve some traffic first")
    with sqlite3.connect(log_path, timeout=30) as conn:
        frame = pd.read_sql_query(
            "SELECT * FROM predictions WHERE event_timestamp >= ? AND event_timestamp < ?",
            conn,
            params=(window.since.isoformat(), window.until.isoformat()),
        )
    frame["event_timestamp"] = pd.to_datetime(
        frame["event_timestamp"], utc=True, format="ISO8601"
    ).dt.as_unit("us")
    frame = frame.rename(columns={"amount": "request_amount"})
    if frame.empty:
        return frame.drop(columns="features")
    features = pd.DataFrame.from_records(
        [json.loads(text) for text in frame["features"]], index=frame.index
    )
    features = features.astype(np.float64)  # JSON null -> NaN
    return pd.concat([frame.drop(columns="features"), features], axis=1)


def read_shadow_scores(log_path: Path, request_ids: pd.Series) -> pd.DataFrame:
    """Shadow (challenger) scores logged for the given requests."""
    with sqlite3.connect(log_path, timeout=30) as conn:
        shadow = pd.read_sql_query("SELECT * FROM shadow_scores", conn)
    return shadow[shadow["request_id"].isin(set(request_ids))].reset_index(drop=True)
