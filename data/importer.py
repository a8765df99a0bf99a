"""Bring a transactions table with its own column names into the home (`fraudlab data
import`): their columns renamed to ours (`--map THEIRS=OURS`), `label_available_at`
derived from a stated delay when the table has none, the result checked against the
contract (data/schema.py) and written as the home's Parquet table in its exact types.

Nothing is written unless the whole table is valid: the file goes to a temporary name
beside the destination and is renamed over it only at the end.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, TRANSACTIONS_SCHEMA
from data.validate import ValidationReport, read_raw_table, validated_frame
from fraudlab.errors import DataValidationError

OUR_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
LABEL_TIME = "label_available_at"
MAX_LABEL_DELAY_DAYS = 365  # chargeback windows are months, not years


@dataclass(frozen=True)
class ImportReport:
    source: Path
    report: ValidationReport  # of the table as written (its path: the destination)
    renamed: dict[str, str]  # their column -> ours
    label_delay_days: float | None  # label times derived from this delay, or None: theirs
    left_out: tuple[str, ...]  # their columns that are not ours, not imported


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """`THEIRS=OURS` strings as {theirs: ours}; every way to get one wrong is refused."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        theirs, sep, ours = (part.strip() for part in pair.partition("="))
        if not sep or not theirs or not ours:
            raise DataValidationError(f"--map {pair!r}: write THEIRS=OURS, e.g. TX_AMOUNT=amount")
        if ours not in OUR_COLUMNS:
            raise DataValidationError(
                f"--map {pair!r}: {ours!r} is not a column of ours; "
                f"ours are {', '.join(OUR_COLUMNS)}"
            )
        if theirs in mapping:
            raise DataValidationError(f"--map names their column {theirs!r} twice")
        if ours in mapping.values():
            raise DataValidationError(f"--map maps two columns to {ours!r}")
        mapping[theirs] = ours
    return mapping


def import_transactions(
    source: Path,
    destination: Path,
    mapping: dict[str, str],
    label_delay_days: float | None = None,
) -> ImportReport:
    """Read `source`, rename, derive label times, validate, write `destination`."""
    if label_delay_days is not None and not 0 <= label_delay_days <= MAX_LABEL_DELAY_DAYS:
        raise DataValidationError(
            f"--label-delay-days {label_delay_days}: a delay of 0 to at most "
            f"{MAX_LABEL_DELAY_DAYS} days"
        )
    raw = read_raw_table(source)
    renamed = _renamed(raw, mapping, source)
    has_labels = LABEL_TIME in renamed.columns
    if has_labels and label_delay_days is not None:
        raise DataValidationError(
            f"{source} already has {LABEL_TIME}; leave out --label-delay-days (it is "
            "for a table that has no label times)"
        )
    if not has_labels and label_delay_days is None:
        raise DataValidationError(
            f"{source} has no {LABEL_TIME} (when each label became known): map the column "
            "that holds it with --map THEIRS=label_available_at, or state the delay with "
            "--label-delay-days N (each label known N days after its payment)"
        )
    if label_delay_days is not None:
        # Null (a fraud never reported) is valid: the delay is filled in once the event
        # times are checked and typed.
        renamed[LABEL_TIME] = pd.NaT
    frame, report = validated_frame(renamed, source)  # messages name the user's file
    if label_delay_days is not None:
        # Checked event times plus a delay of at least 0: every label is known, and none
        # before its payment, so nothing is left to check, only the count to correct.
        frame[LABEL_TIME] = frame["event_timestamp"] + pd.Timedelta(days=label_delay_days)
        report = replace(report, unreported_frauds=0)
    _write(frame, destination)
    left_out = tuple(c for c in raw.columns if c not in mapping and c not in OUR_COLUMNS)
    return ImportReport(
        source, replace(report, path=destination), mapping, label_delay_days, left_out
    )


def _renamed(raw: pd.DataFrame, mapping: dict[str, str], source: Path) -> pd.DataFrame:
    missing = [theirs for theirs in mapping if theirs not in raw.columns]
    if missing:
        raise DataValidationError(
            f"--map names {', '.join(map(repr, missing))}, not a column of {source}; "
            f"its columns are {', '.join(map(str, raw.columns))}"
        )
    clashes = [ours for theirs, ours in mapping.items() if ours in raw.columns and ours != theirs]
    if clashes:
        raise DataValidationError(
            f"{source} already has a column named {', '.join(map(repr, clashes))}, and --map "
            "maps another one onto it: which one is meant?"
        )
    renamed = raw.rename(columns=mapping)
    return renamed[[c for c in renamed.columns if c in OUR_COLUMNS]]


def _write(frame: pd.DataFrame, destination: Path) -> None:
    """The contract's exact types, to a temporary file renamed over the destination."""
    fields = list(TRANSACTIONS_SCHEMA) + [
        pa.field(name, kind) for name, kind in OPTIONAL_COLUMNS.items() if name in frame
    ]
    table = pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    os.close(handle)
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, destination)
    finally:
        Path(temporary).unlink(missing_ok=True)
