"""Check a user's transactions file (Parquet or CSV) against the contract in data/schema.py.

Every problem is collected before failing, so one run names every bad column, the
reason, and the first few bad rows (0-based positions among the data rows of the file).

Timestamps: values with a timezone or UTC offset are converted to UTC. Naive values
(no timezone, e.g. "2026-01-05 14:03:00" in a CSV) are read as UTC, the schema's
timezone: that is what the simulator writes and what every export in UTC looks like.
Numbers are not accepted as timestamps, because their unit (s, ms, us) is a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.schema import MAX_AMOUNT, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, TRANSACTIONS_SCHEMA
from fraudlab.errors import DataValidationError, MissingInput
from fraudlab.settings import Settings

SHOWN_BAD_ROWS = 5  # enough to see the pattern, short enough to read in a terminal
PANDAS_TIMESTAMP = "datetime64[us, UTC]"
ID_COLUMNS = ("transaction_id", "customer_id", "terminal_id")


@dataclass(frozen=True)
class ValidationReport:
    """What a valid transactions file holds."""

    path: Path
    rows: int
    frauds: int
    unreported_frauds: int  # frauds whose label_available_at is null
    first_event: pd.Timestamp | None
    last_event: pd.Timestamp | None
    ignored_columns: tuple[str, ...] = ()  # columns the schema does not know; dropped

    @property
    def fraud_rate(self) -> float:
        return self.frauds / self.rows if self.rows else 0.0


@dataclass
class _Problems:
    lines: list[str] = field(default_factory=list)
    bad_columns: set[str] = field(default_factory=set)

    def add(
        self,
        column: str,
        reason: str,
        bad: pd.Series | None = None,
        values: pd.Series | None = None,
    ) -> None:
        self.bad_columns.add(column)
        if bad is None or values is None:
            self.lines.append(f"{column}: {reason}")
            return
        rows = np.flatnonzero(bad.to_numpy())
        shown = ", ".join(f"row {i} = {_shown(values.iloc[i])}" for i in rows[:SHOWN_BAD_ROWS])
        more = ", ..." if len(rows) > SHOWN_BAD_ROWS else ""
        self.lines.append(f"{column}: {len(rows)} row(s) {reason} ({shown}{more})")


def _shown(value: object) -> str:
    """A bad value as the user would write it: 2.5, 'eight', 2025-12-31T00:00:00+00:00."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def validate_transactions_file(path: Path) -> ValidationReport:
    """Raise DataValidationError naming every problem, or describe the valid file."""
    return _load(path)[1]


def read_transactions(path: Path) -> pd.DataFrame:
    """Validate the file and return it cast to the schema types, in file order."""
    return _load(path)[0]


def load_transactions(settings: Settings) -> pd.DataFrame:
    """The home's transactions table, validated and typed; a clear error before there is one."""
    if not settings.transactions_path.exists():
        raise MissingInput(
            f"no transactions at {settings.transactions_path}: run `fraudlab data generate` first"
        )
    return read_transactions(settings.transactions_path)


def _load(path: Path) -> tuple[pd.DataFrame, ValidationReport]:
    raw = _read_raw(Path(path))
    problems = _Problems()
    for column in REQUIRED_COLUMNS:
        if column not in raw.columns:
            problems.add(column, "missing required column")
    cast: dict[str, pd.Series] = {}
    for column in [c for c in raw.columns if c in TRANSACTIONS_SCHEMA.names]:
        cast[column] = _cast_column(column, raw[column], problems)
    for column in [c for c in raw.columns if c in OPTIONAL_COLUMNS]:
        cast[column] = raw[column].fillna("").astype(str)  # the only optional one is text
    _check_across_columns(cast, problems)
    if len(raw) == 0:
        problems.add("(file)", "has no rows")
    if problems.lines:
        listed = "\n".join(f"  - {line}" for line in problems.lines)
        raise DataValidationError(
            f"{path} does not match the transactions schema (see data/schema.py): "
            f"{len(problems.lines)} problem(s) in column(s) "
            f"{', '.join(sorted(problems.bad_columns))}:\n{listed}"
        )
    frame = pd.DataFrame(cast, index=pd.RangeIndex(len(raw)))
    ignored = tuple(c for c in raw.columns if c not in frame.columns)
    return frame, _report(Path(path), frame, ignored)


def _read_raw(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataValidationError(f"transactions file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path).to_pandas(ignore_metadata=True)
        if suffix == ".csv":
            return pd.read_csv(path, low_memory=False)
    except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataValidationError(f"cannot read {path} as {suffix[1:]}: {exc}") from exc
    raise DataValidationError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")


def _cast_column(column: str, raw: pd.Series, problems: _Problems) -> pd.Series:
    nullable = TRANSACTIONS_SCHEMA.field(column).nullable
    if not nullable and raw.isna().any():
        problems.add(column, "are null, which is not allowed", raw.isna(), raw)
    arrow_type = TRANSACTIONS_SCHEMA.field(column).type
    try:
        if pa.types.is_timestamp(arrow_type):
            return _cast_timestamps(column, raw, problems)
        return _cast_number(column, raw, problems, integer=pa.types.is_integer(arrow_type))
    except (TypeError, ValueError) as exc:
        problems.add(column, f"has type {raw.dtype} that cannot be cast to {arrow_type} ({exc})")
        return raw


def _cast_number(column: str, raw: pd.Series, problems: _Problems, *, integer: bool) -> pd.Series:
    numeric = pd.to_numeric(raw, errors="coerce").astype("float64")
    unparsed = raw.notna() & numeric.isna()
    if unparsed.any():
        problems.add(column, "are not numbers", unparsed, raw)
    valid = numeric.notna()
    if integer:
        fractional = valid & (numeric % 1 != 0)
        if fractional.any():
            problems.add(column, "are not whole numbers", fractional, raw)
    _check_range(column, numeric, valid, problems, raw)
    if not integer:
        return numeric
    dtype = TRANSACTIONS_SCHEMA.field(column).type.to_pandas_dtype()
    return numeric.fillna(0).round().astype(dtype)


def _check_range(
    column: str, numeric: pd.Series, valid: pd.Series, problems: _Problems, raw: pd.Series
) -> None:
    if column in ID_COLUMNS:
        bad, reason = valid & (numeric < 0), "are negative ids"
    elif column == "amount":
        inside = (numeric > 0) & (numeric < MAX_AMOUNT)
        bad, reason = valid & ~inside, f"are <= 0 or >= {MAX_AMOUNT:,.0f}"
    elif column == "is_fraud":
        bad, reason = valid & ~numeric.isin([0, 1]), "are not 0 or 1"
    else:
        return
    if bad.any():
        problems.add(column, reason, bad, raw)


def _cast_timestamps(column: str, raw: pd.Series, problems: _Problems) -> pd.Series:
    if pd.api.types.is_numeric_dtype(raw) and not raw.isna().all():
        problems.add(
            column, "holds numbers; expected timestamps (ISO 8601 text or a timestamp type)"
        )
        return raw
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(raw):
        parsed = raw.dt.tz_localize("UTC")  # naive: read as UTC (see module docstring)
    else:
        parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    unparsed = raw.notna() & parsed.isna()
    if unparsed.any():
        problems.add(column, "are not timestamps", unparsed, raw)
    return parsed.astype(PANDAS_TIMESTAMP)


def _check_across_columns(cast: dict[str, pd.Series], problems: _Problems) -> None:
    if "transaction_id" in cast and "transaction_id" not in problems.bad_columns:
        ids = cast["transaction_id"]
        duplicated = ids.duplicated(keep=False)
        if duplicated.any():
            problems.add("transaction_id", "are duplicated", duplicated, ids)
    pair = ("event_timestamp", "label_available_at")
    if all(c in cast and c not in problems.bad_columns for c in pair):
        event, label = cast[pair[0]], cast[pair[1]]
        early = label.notna() & (label < event)
        if early.any():
            problems.add("label_available_at", "are earlier than event_timestamp", early, label)


def _report(path: Path, frame: pd.DataFrame, ignored: tuple[str, ...]) -> ValidationReport:
    fraud = frame["is_fraud"] == 1
    events = frame["event_timestamp"]
    return ValidationReport(
        path=path,
        rows=len(frame),
        frauds=int(fraud.sum()),
        unreported_frauds=int((fraud & frame["label_available_at"].isna()).sum()),
        first_event=events.min() if len(frame) else None,
        last_event=events.max() if len(frame) else None,
        ignored_columns=ignored,
    )
