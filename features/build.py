"""The batch feature pipeline: raw transactions in, daily feature snapshots out.

For each entity and each midnight d (day 0 to the day after the last payment) it writes
one row, stamped at d, summarising the payments of days [d - w, d) for each window w.
Terminal fraud rates count a fraud only when its chargeback arrived by d. Everything is
dense NumPy over (entity x day) so a million payments take about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.calendar import Calendar
from features.definitions import VIEWS, WINDOWS_DAYS, feature_table_path

DAY = pd.Timedelta(days=1)
IntMatrix = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DayGrid:
    """Midnights 0..n_days; snapshot d covers payments of days before d."""

    day0: pd.Timestamp
    n_days: int

    @classmethod
    def covering(cls, event_timestamps: pd.Series) -> DayGrid:
        day0 = Calendar.of(event_timestamps).day0
        n_days = int(np.ceil((event_timestamps.max() - day0) / DAY)) + 1
        return cls(day0=day0, n_days=n_days)

    @property
    def snapshot_times(self) -> pd.DatetimeIndex:
        return pd.date_range(self.day0, periods=self.n_days + 1, freq="D")

    def day_index(self, timestamps: pd.Series) -> npt.NDArray[np.int64]:
        """Day of each timestamp (floor); day i runs from midnight i to midnight i + 1."""
        return ((timestamps - self.day0) // DAY).to_numpy(dtype=np.int64)

    def first_snapshot_at_or_after(self, timestamps: pd.Series) -> npt.NDArray[np.int64]:
        """Earliest snapshot that may see an event at `timestamps` (NaT -> never)."""
        never = self.n_days + 1
        delta = (timestamps - self.day0) / DAY
        index = np.ceil(delta.to_numpy(dtype=np.float64, na_value=np.nan))
        return np.where(np.isnan(index), never, index).astype(np.int64)


def _per_day(
    entity: npt.NDArray[np.int64],
    day: npt.NDArray[np.int64],
    n_entities: int,
    n_days: int,
    weights: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    flat = np.bincount(entity * n_days + day, weights=weights, minlength=n_entities * n_days)
    return flat.reshape(n_entities, n_days).astype(np.float64)  # counts are exact as floats


def _window_sums(daily: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    """Sum of days [d - window, d) for every snapshot d = 0..n_days."""
    cum = np.zeros((daily.shape[0], daily.shape[1] + 1))
    np.cumsum(daily, axis=1, out=cum[:, 1:])
    lagged = np.zeros_like(cum)
    lagged[:, window:] = cum[:, :-window] if window <= daily.shape[1] else 0
    return cum - lagged


def _known_fraud_counts(
    entity: npt.NDArray[np.int64],
    event_day: npt.NDArray[np.int64],
    label_snapshot: npt.NDArray[np.int64],
    n_entities: int,
    n_days: int,
    window: int,
) -> npt.NDArray[np.float64]:
    """Frauds of days [d - window, d) whose chargeback had arrived by snapshot d.

    A fraud on day e with its label first visible at snapshot L counts for the
    snapshots max(e + 1, L) .. e + window: a difference array per entity.
    """
    start = np.maximum(event_day + 1, label_snapshot)
    end = event_day + window  # inclusive
    live = start <= np.minimum(end, n_days)
    width = n_days + 2
    diff = np.zeros(n_entities * width)
    np.add.at(diff, entity[live] * width + start[live], 1.0)
    np.add.at(diff, entity[live] * width + np.minimum(end[live], n_days) + 1, -1.0)
    return np.cumsum(diff.reshape(n_entities, width), axis=1)[:, : n_days + 1]


def _snapshot_frame(
    key: str, ids: npt.NDArray[np.int64], grid: DayGrid, columns: dict[str, npt.NDArray[np.float64]]
) -> pd.DataFrame:
    n_snapshots = grid.n_days + 1
    # Microsecond timestamps, as in the transactions: joins need one precision both sides.
    stamps = pd.DatetimeIndex(np.tile(grid.snapshot_times, len(ids))).as_unit("us")
    frame = pd.DataFrame({key: np.repeat(ids, n_snapshots), "event_timestamp": stamps})
    for name, matrix in columns.items():
        values = matrix.reshape(-1)
        frame[name] = values.astype(np.int64) if "_count_" in name else values
    return frame


def customer_spending(tx: pd.DataFrame, grid: DayGrid) -> pd.DataFrame:
    ids, entity = np.unique(tx["customer_id"].to_numpy(), return_inverse=True)
    day = grid.day_index(tx["event_timestamp"])
    counts = _per_day(entity, day, len(ids), grid.n_days)
    sums = _per_day(entity, day, len(ids), grid.n_days, tx["amount"].to_numpy())
    columns: dict[str, npt.NDArray[np.float64]] = {}
    for w in WINDOWS_DAYS:
        columns[f"customer_tx_count_{w}d"] = np.rint(_window_sums(counts, w))
    for w in WINDOWS_DAYS:
        count, total = columns[f"customer_tx_count_{w}d"], _window_sums(sums, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns[f"customer_mean_amount_{w}d"] = np.where(count > 0, total / count, np.nan)
    return _snapshot_frame("customer_id", ids, grid, columns)


def terminal_risk(tx: pd.DataFrame, grid: DayGrid) -> pd.DataFrame:
    ids, entity = np.unique(tx["terminal_id"].to_numpy(), return_inverse=True)
    day = grid.day_index(tx["event_timestamp"])
    counts = _per_day(entity, day, len(ids), grid.n_days)
    fraud = tx["is_fraud"].to_numpy() == 1
    label_snapshot = grid.first_snapshot_at_or_after(tx.loc[fraud, "label_available_at"])
    columns: dict[str, npt.NDArray[np.float64]] = {}
    for w in WINDOWS_DAYS:
        columns[f"terminal_tx_count_{w}d"] = np.rint(_window_sums(counts, w))
    for w in WINDOWS_DAYS:
        known = _known_fraud_counts(
            entity[fraud], day[fraud], label_snapshot, len(ids), grid.n_days, w
        )
        count = columns[f"terminal_tx_count_{w}d"]
        with np.errstate(invalid="ignore", divide="ignore"):
            columns[f"terminal_fraud_rate_{w}d"] = np.where(count > 0, known / count, np.nan)
    return _snapshot_frame("terminal_id", ids, grid, columns)


def write_parquet_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write next to the target and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, row_group_size=1_000_000)
    tmp.replace(path)


def build_feature_tables(tx: pd.DataFrame, out_dir: Path) -> dict[str, int]:
    """Compute and write every feature view's table; returns rows written per view."""
    grid = DayGrid.covering(tx["event_timestamp"])
    builders = {"customer_spending": customer_spending, "terminal_risk": terminal_risk}
    assert set(builders) == set(VIEWS), "every view in features/definitions.py has a builder"
    tables = {name: build(tx, grid) for name, build in builders.items()}
    for name, frame in tables.items():
        write_parquet_atomically(frame, feature_table_path(out_dir, name))
    return {name: len(frame) for name, frame in tables.items()}
