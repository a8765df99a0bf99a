"""Check a user's transactions file (Parquet or CSV) against the contract in data/schema.py.

Every problem is collected before failing, so one run names every bad column, the
reason, and the first few bad rows (0-based positions among the data rows of the file).

Timestamps: values with a timezone or UTC offset are converted to UTC. Naive values
(no timezone, e.g. "2026-01-05 14:03:00" in a CSV) are read as UTC, the schema's
timezone: that is what the simulator writes and what every export in UTC looks like.
Numbers are not accepted as timestamps, because their unit (s, ms, us) is a guess.

Numbers: true/false is not a number (nor a label), text is not a number in a typed
(Parquet) file, and ids stop at 2**53 - 1, the largest integer JSON and the scoring API
carry exactly; larger ones, as floating-point numbers, merged into one another.

`fraudlab data validate` reads the file in chunks of CHUNK_ROWS rows, so its memory
is one chunk plus the transaction ids (for duplicates, ~17 bytes a row at the peak),
not the whole table.
"""

from __future__ import annotations

from collections.abc import Iterator
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
MAX_ID = 2**53 - 1  # the scoring API's limit too (serving/schemas.py)
CHUNK_ROWS = 100_000


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
class _Found:
    count: int = 0
    shown: list[str] = field(default_factory=list)  # "row 3 = 2.5", at most SHOWN_BAD_ROWS


@dataclass
class _Problems:
    """Problems by (column, reason), added chunk by chunk; rows are file positions."""

    found: dict[tuple[str, str], _Found | None] = field(default_factory=dict)
    offset: int = 0  # the current chunk's first row in the file

    @property
    def bad_columns(self) -> set[str]:
        return {column for column, _ in self.found}

    @property
    def lines(self) -> list[str]:
        lines = []
        for (column, reason), rows in self.found.items():
            if rows is None:
                lines.append(f"{column}: {reason}")
                continue
            more = ", ..." if rows.count > len(rows.shown) else ""
            lines.append(f"{column}: {rows.count} row(s) {reason} ({', '.join(rows.shown)}{more})")
        return lines

    def add(
        self,
        column: str,
        reason: str,
        bad: pd.Series | None = None,
        values: pd.Series | None = None,
    ) -> None:
        if bad is None or values is None:
            self.found.setdefault((column, reason), None)
            return
        rows = np.flatnonzero(bad.to_numpy())
        found = self.found.setdefault((column, reason), _Found()) or _Found()
        room = SHOWN_BAD_ROWS - len(found.shown)
        found.shown += [f"row {self.offset + i} = {_shown(values.iloc[i])}" for i in rows[:room]]
        found.count += len(rows)
        self.found[(column, reason)] = found


def _shown(value: object) -> str:
    """A bad value as the user would write it: 2.5, 'eight', 2025-12-31T00:00:00+00:00."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def validate_transactions_file(path: Path) -> ValidationReport:
    """Raise DataValidationError naming every problem, or describe the valid file. Reads
    it CHUNK_ROWS rows at a time: memory is one chunk plus the ids, whatever its size."""
    return _validate(Path(path), _read_chunks(Path(path)), keep=False)[1]


def read_transactions(path: Path) -> pd.DataFrame:
    """Validate the file and return it cast to the schema types, in file order."""
    return validated_frame(read_raw_table(Path(path)), Path(path))[0]


def validated_frame(raw: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, ValidationReport]:
    """A table already in memory (e.g. renamed by data/importer.py), checked as if it were
    the file at `path` (which the messages name), cast to the schema types."""
    frame, report = _validate(path, iter([(0, raw)]), keep=True)
    assert frame is not None
    return frame, report


def load_transactions(settings: Settings) -> pd.DataFrame:
    """The home's transactions table, validated and typed; a clear error before there is one."""
    if not settings.transactions_path.exists():
        raise MissingInput(
            f"no transactions at {settings.transactions_path}: run `fraudlab data generate` first"
        )
    return read_transactions(settings.transactions_path)


@dataclass
class _Summary:
    """What the report says, gathered chunk by chunk."""

    rows: int = 0
    frauds: int = 0
    unreported: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    ignored: tuple[str, ...] = ()

    def add(self, frame: pd.DataFrame) -> None:
        fraud = frame["is_fraud"] == 1
        self.rows += len(frame)
        self.frauds += int(fraud.sum())
        self.unreported += int((fraud & frame["label_available_at"].isna()).sum())
        if len(frame):
            events = frame["event_timestamp"]
            self.first = min(events.min(), self.first or events.min())
            self.last = max(events.max(), self.last or events.max())

    def report(self, path: Path) -> ValidationReport:
        return ValidationReport(
            path, self.rows, self.frauds, self.unreported, self.first, self.last, self.ignored
        )


def _validate(
    path: Path, chunks: Iterator[tuple[int, pd.DataFrame]], keep: bool
) -> tuple[pd.DataFrame | None, ValidationReport]:
    typed = path.suffix.lower() != ".csv"  # a CSV is text: its numbers are written as text
    problems, summary = _Problems(), _Summary()
    kept: list[pd.DataFrame] = []
    ids: list[np.ndarray] = []
    for offset, raw in chunks:
        problems.offset = offset
        if offset == 0:
            for column in REQUIRED_COLUMNS:
                if column not in raw.columns:
                    problems.add(column, "missing required column")
        cast: dict[str, pd.Series] = {}
        for column in [c for c in raw.columns if c in TRANSACTIONS_SCHEMA.names]:
            cast[column] = _cast_column(column, raw[column], problems, typed)
        for column in [c for c in raw.columns if c in OPTIONAL_COLUMNS]:
            cast[column] = raw[column].fillna("").astype(str)  # the only optional one is text
        _check_label_times(cast, problems)
        if "transaction_id" in cast and "transaction_id" not in problems.bad_columns:
            ids.append(cast["transaction_id"].to_numpy())
        if problems.found:  # keep reading to name every problem, but stop building
            kept = []
            continue
        frame = pd.DataFrame(cast, index=pd.RangeIndex(offset, offset + len(raw)))
        summary.ignored = tuple(c for c in raw.columns if c not in frame.columns)
        summary.add(frame)
        if keep:
            kept.append(frame)
    problems.offset = 0
    if ids and "transaction_id" not in problems.bad_columns:
        every_id = np.concatenate(ids)
        ids.clear()  # one copy of the ids at a time
        _check_duplicates(every_id, problems)
    if summary.rows == 0 and not problems.found:
        problems.add("(file)", "has no rows")
    if problems.found:
        listed = "\n".join(f"  - {line}" for line in problems.lines)
        raise DataValidationError(
            f"{path} does not match the transactions schema (see data/schema.py): "
            f"{len(problems.found)} problem(s) in column(s) "
            f"{', '.join(sorted(problems.bad_columns))}:\n{listed}"
        )
    if not keep:
        return None, summary.report(path)
    return (kept[0] if len(kept) == 1 else pd.concat(kept)), summary.report(path)


READ_ERRORS = (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError, OSError)


def _checked_path(path: Path) -> str:
    if not path.is_file():
        raise DataValidationError(f"transactions file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise DataValidationError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")
    return suffix


def read_raw_table(path: Path) -> pd.DataFrame:
    """The whole file as read, before any check (a .parquet or .csv)."""
    suffix = _checked_path(path)
    try:
        if suffix == ".csv":
            return pd.read_csv(path, low_memory=False)
        return pq.read_table(path).to_pandas(ignore_metadata=True)
    except READ_ERRORS as exc:
        raise DataValidationError(f"cannot read {path} as {suffix[1:]}: {exc}") from exc


def _read_chunks(path: Path) -> Iterator[tuple[int, pd.DataFrame]]:
    """(first row, rows) of at most CHUNK_ROWS rows each; one empty chunk for no rows."""
    suffix = _checked_path(path)
    offset = 0
    try:
        if suffix == ".csv":
            chunks: Iterator[pd.DataFrame] = iter(
                pd.read_csv(path, low_memory=False, chunksize=CHUNK_ROWS)
            )
            header = pd.read_csv(path, nrows=0)
        else:
            # pre_buffer (the default) keeps every row group read so far in memory.
            parquet = pq.ParquetFile(path, pre_buffer=False)
            header = parquet.schema_arrow.empty_table().to_pandas(ignore_metadata=True)
            chunks = (
                batch.to_pandas(ignore_metadata=True)
                for batch in parquet.iter_batches(batch_size=CHUNK_ROWS)
            )
        for chunk in chunks:
            yield offset, chunk
            offset += len(chunk)
    except READ_ERRORS as exc:
        raise DataValidationError(f"cannot read {path} as {suffix[1:]}: {exc}") from exc
    if offset == 0:
        yield 0, header


def _cast_column(column: str, raw: pd.Series, problems: _Problems, typed: bool) -> pd.Series:
    nullable = TRANSACTIONS_SCHEMA.field(column).nullable
    if not nullable and raw.isna().any():
        problems.add(column, "are null, which is not allowed", raw.isna(), raw)
    arrow_type = TRANSACTIONS_SCHEMA.field(column).type
    try:
        if pa.types.is_timestamp(arrow_type):
            return _cast_timestamps(column, raw, problems)
        integer = pa.types.is_integer(arrow_type)
        return _cast_number(column, raw, problems, integer=integer, typed=typed)
    except (TypeError, ValueError) as exc:
        problems.add(column, f"has type {raw.dtype} that cannot be cast to {arrow_type} ({exc})")
        return raw


def _not_numbers(column: str, raw: pd.Series, problems: _Problems, typed: bool) -> pd.Series:
    """`raw` without the values that only look like numbers: true/false (pandas reads
    them as 1 and 0), and text in a typed file. Each is named as a problem."""
    if pd.api.types.is_bool_dtype(raw):
        booleans = raw.notna()
    elif raw.dtype == object:
        booleans = raw.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)
    else:
        booleans = pd.Series(False, index=raw.index)
    if booleans.any():
        problems.add(column, "are true or false, not numbers", booleans, raw)
    text = pd.Series(False, index=raw.index)
    if typed and (raw.dtype == object or pd.api.types.is_string_dtype(raw)):
        text = raw.map(lambda v: isinstance(v, str)).astype(bool)
        if text.any():
            problems.add(column, "are text, not numbers", text, raw)
    if booleans.any() or text.any():
        return raw.astype(object).mask(booleans | text)
    return raw


def _cast_number(
    column: str, raw: pd.Series, problems: _Problems, *, integer: bool, typed: bool
) -> pd.Series:
    numbers = _not_numbers(column, raw, problems, typed)
    numeric = pd.to_numeric(numbers, errors="coerce").astype("float64")
    unparsed = numbers.notna() & numeric.isna()
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
    # Out-of-range values are problems already; zero keeps the cast from overflowing.
    return numeric.where(numeric.abs() <= MAX_ID, 0).fillna(0).round().astype(dtype)


def _check_range(
    column: str, numeric: pd.Series, valid: pd.Series, problems: _Problems, raw: pd.Series
) -> None:
    if column in ID_COLUMNS:
        negative = valid & (numeric < 0)
        if negative.any():
            problems.add(column, "are negative ids", negative, raw)
        bad = valid & (numeric > MAX_ID)
        reason = f"are above {MAX_ID}, the largest id JSON and the scoring API carry exactly"
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


def _check_duplicates(ids: np.ndarray, problems: _Problems) -> None:
    """By sorting a copy, not hashing: 17 bytes a row at the peak, where a pandas hash
    table took several times that (the one part of validation that grows with the file)."""
    ordered = np.sort(ids)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if len(repeated):
        duplicated = np.isin(ids, repeated)
        problems.add("transaction_id", "are duplicated", pd.Series(duplicated), pd.Series(ids))


def _check_label_times(cast: dict[str, pd.Series], problems: _Problems) -> None:
    pair = ("event_timestamp", "label_available_at")
    if all(c in cast and c not in problems.bad_columns for c in pair):
        event, label = cast[pair[0]], cast[pair[1]]
        early = label.notna() & (label < event)
        if early.any():
            problems.add("label_available_at", "are earlier than event_timestamp", early, label)
