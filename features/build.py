"""The batch feature pipeline: raw transactions in, feature tables out.

For each entity and each midnight d (day 0 to the day after the last payment) it writes
one row, stamped at d, summarising the payments of days [d - w, d) for each window w.
Terminal fraud rates count a fraud only when its chargeback arrived by d. Everything is
dense NumPy over (entity x day) so a million payments take about a second. The velocity
tables (one row per payment) and the payment-state snapshots come from DuckDB
(features/velocity_offline.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.calendar import Calendar
from data.labels import ReportingDelays, fraud_reported_at
from features.definitions import (
    LONG_WINDOW_DAYS,
    MATURED_WINDOWS_DAYS,
    VIEWS,
    WINDOWS_DAYS,
    feature_table_path,
)
from features.velocity import STATE_VIEWS
from features.velocity_offline import (
    customer_velocity_table,
    payment_state_table,
    terminal_velocity_table,
)

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


def _lagged_window_sums(
    daily: npt.NDArray[np.float64], window: int, lag: int
) -> npt.NDArray[np.float64]:
    """Sum of days [d - lag - window, d - lag) for every snapshot d."""
    if lag == 0:
        return _window_sums(daily, window)
    return _window_sums(daily, window + lag) - _window_sums(daily, lag)


@dataclass(frozen=True)
class KnownFrauds:
    """An entity kind's frauds: whose (index into the entity ids), on which day, and the
    first snapshot that may see each label (never, past n_days, when unreported)."""

    entity: npt.NDArray[np.int64]
    event_day: npt.NDArray[np.int64]
    label_snapshot: npt.NDArray[np.int64]
    n_entities: int
    n_days: int

    @classmethod
    def of(
        cls,
        tx: pd.DataFrame,
        grid: DayGrid,
        entity: npt.NDArray[np.int64],
        n_entities: int,
        reported_at: pd.Series,
    ) -> KnownFrauds:
        """`reported_at`: when each payment was first known as a fraud (NaT: never;
        data/labels.py `fraud_reported_at`)."""
        fraud = reported_at.notna().to_numpy()
        return cls(
            entity[fraud],
            grid.day_index(tx.loc[fraud, "event_timestamp"]),
            grid.first_snapshot_at_or_after(reported_at[fraud]),
            n_entities,
            grid.n_days,
        )


def _known_fraud_counts(frauds: KnownFrauds, window: int, lag: int = 0) -> npt.NDArray[np.float64]:
    """Frauds of days [d - lag - window, d - lag) whose chargeback had arrived by
    snapshot d.

    A fraud on day e with its label first visible at snapshot L counts for the
    snapshots max(e + lag + 1, L) .. e + lag + window: a difference array per entity.
    """
    entity, n_entities, n_days = frauds.entity, frauds.n_entities, frauds.n_days
    start = np.maximum(frauds.event_day + lag + 1, frauds.label_snapshot)
    end = frauds.event_day + lag + window  # inclusive
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


def terminal_risk(tx: pd.DataFrame, grid: DayGrid, reported_at: pd.Series) -> pd.DataFrame:
    ids, entity = np.unique(tx["terminal_id"].to_numpy(), return_inverse=True)
    day = grid.day_index(tx["event_timestamp"])
    counts = _per_day(entity, day, len(ids), grid.n_days)
    frauds = KnownFrauds.of(tx, grid, entity, len(ids), reported_at)
    columns: dict[str, npt.NDArray[np.float64]] = {}
    for w in WINDOWS_DAYS:
        columns[f"terminal_tx_count_{w}d"] = np.rint(_window_sums(counts, w))
    for w in WINDOWS_DAYS:
        known = _known_fraud_counts(frauds, w)
        count = columns[f"terminal_tx_count_{w}d"]
        with np.errstate(invalid="ignore", divide="ignore"):
            columns[f"terminal_fraud_rate_{w}d"] = np.where(count > 0, known / count, np.nan)
    return _snapshot_frame("terminal_id", ids, grid, columns)


def _days_since_known_fraud(frauds: KnownFrauds) -> npt.NDArray[np.float64]:
    """Snapshot d minus the day of the entity's latest fraud known by d (its day before
    d, its chargeback arrived by d); NaN when none is known yet."""
    n_days, event_day = frauds.n_days, frauds.event_day
    known_from = np.maximum(event_day + 1, frauds.label_snapshot)
    live = known_from <= n_days
    latest = np.full((frauds.n_entities, n_days + 1), -1, dtype=np.int64)
    np.maximum.at(latest, (frauds.entity[live], known_from[live]), event_day[live])
    np.maximum.accumulate(latest, axis=1, out=latest)
    snapshot = np.arange(n_days + 1)[None, :]
    return np.where(latest >= 0, snapshot - latest, np.nan)


def matured_fraud_history(
    tx: pd.DataFrame, grid: DayGrid, key: str, label_delay_days: int, reported_at: pd.Series
) -> pd.DataFrame:
    """Known-fraud features of one entity kind (terminal or customer) built for late
    labels: rates over windows that end `label_delay_days` before the snapshot (whose
    labels have mostly arrived), a long-window count and the time since the latest
    known fraud. Every fraud still counts only once its chargeback has arrived."""
    prefix = key.removesuffix("_id")
    ids, entity = np.unique(tx[key].to_numpy(), return_inverse=True)
    day = grid.day_index(tx["event_timestamp"])
    counts = _per_day(entity, day, len(ids), grid.n_days)
    frauds = KnownFrauds.of(tx, grid, entity, len(ids), reported_at)
    columns: dict[str, npt.NDArray[np.float64]] = {}
    for w in MATURED_WINDOWS_DAYS:
        payments = np.rint(_lagged_window_sums(counts, w, label_delay_days))
        known = _known_fraud_counts(frauds, w, label_delay_days)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns[f"{prefix}_matured_fraud_rate_{w}d"] = np.where(
                payments > 0, known / payments, np.nan
            )
    columns[f"{prefix}_known_fraud_count_{LONG_WINDOW_DAYS}d"] = _known_fraud_counts(
        frauds, LONG_WINDOW_DAYS
    )
    columns[f"{prefix}_days_since_known_fraud"] = _days_since_known_fraud(frauds)
    return _snapshot_frame(key, ids, grid, columns)


def observed_label_delay_days(tx: pd.DataFrame) -> int:
    """The median delay from a fraud to its chargeback, in whole days (rounded up), as
    the data shows it at its end (data/labels.py: frauds whose window has closed, so no
    delay is cut short); 0 when no fraud is that old."""
    delays = ReportingDelays.observed(tx, tx["event_timestamp"].max())
    if delays is None or not len(delays.delays_days):
        return 0
    return int(np.ceil(np.median(delays.delays_days)))


def write_parquet_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write next to the target and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, row_group_size=1_000_000)
    tmp.replace(path)


def _state_builder(kind: str) -> Callable[[pd.DataFrame, DayGrid], pd.DataFrame]:
    return lambda tx, grid: payment_state_table(tx, kind, grid.day0, grid.n_days)


def build_feature_tables(
    tx: pd.DataFrame,
    out_dir: Path,
    label_delay_days: int | None = None,
    label_events: pd.DataFrame | None = None,
) -> dict[str, int]:
    """Compute and write every feature view's table; returns rows written per view.
    `label_delay_days` shifts the matured-risk windows (None: the data's median
    chargeback delay, observed_label_delay_days); `label_events`: the label feed of
    served traffic, when written (None: the file's chargebacks), for the known-fraud
    features."""
    grid = DayGrid.covering(tx["event_timestamp"])
    delay = observed_label_delay_days(tx) if label_delay_days is None else label_delay_days
    reported = fraud_reported_at(tx, label_events)
    builders = {
        "customer_spending": customer_spending,
        "terminal_risk": lambda t, g: terminal_risk(t, g, reported),
        "terminal_matured_risk": lambda t, g: matured_fraud_history(
            t, g, "terminal_id", delay, reported
        ),
        "customer_fraud_history": lambda t, g: matured_fraud_history(
            t, g, "customer_id", delay, reported
        ),
        "customer_velocity": lambda t, g: customer_velocity_table(t),
        "terminal_velocity": lambda t, g: terminal_velocity_table(t),
        **{view: _state_builder(kind) for kind, view in STATE_VIEWS.items()},
    }
    assert set(builders) == set(VIEWS), "every view in features/definitions.py has a builder"
    tables = {name: build(tx, grid) for name, build in builders.items()}
    for name, frame in tables.items():
        write_parquet_atomically(frame, feature_table_path(out_dir, name))
    return {name: len(frame) for name, frame in tables.items()}
