"""Validation of a user's transactions file: good files load typed, bad ones name every problem."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.schema import REQUIRED_COLUMNS
from data.simulator import SimulationConfig, generate
from data.validate import read_transactions, validate_transactions_file
from fraudlab.errors import DataValidationError

CONFIG = SimulationConfig(
    customers=100, terminals=200, days=20, seed=5, start_date=date(2026, 3, 1)
)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(CONFIG, tmp_path_factory.mktemp("sim") / "transactions.parquet").path


def _good_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [0, 1, 2, 3],
            "event_timestamp": ["2026-01-01 10:00:00"] * 2 + ["2026-01-02T09:00:00+02:00"] * 2,
            "customer_id": [1, 2, 3, 4],
            "terminal_id": [7, 8, 9, 10],
            "amount": [12.5, 40.0, 300.0, 5.0],
            "is_fraud": [0, 0, 1, 1],
            "label_available_at": ["2026-03-02 10:00:00", "2026-03-02", "2026-01-09", None],
        }
    )


def test_simulated_file_passes_and_reads_typed(simulated: Path) -> None:
    report = validate_transactions_file(simulated)
    frame = read_transactions(simulated)
    assert report.rows == len(frame) > 0
    assert report.frauds == int(frame["is_fraud"].sum())
    assert report.first_event == frame["event_timestamp"].min()
    assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(frame["label_available_at"].dtype) == "datetime64[us, UTC]"
    assert str(frame["is_fraud"].dtype) == "int8"
    assert list(frame.columns) == [*REQUIRED_COLUMNS, "fraud_pattern"]


def test_csv_with_naive_and_offset_timestamps_reads_as_utc(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    _good_rows().assign(merchant_name="x").to_csv(path, index=False)
    report = validate_transactions_file(path)
    frame = read_transactions(path)
    assert report.rows == 4
    assert report.unreported_frauds == 1
    assert report.ignored_columns == ("merchant_name",)
    assert frame["event_timestamp"].iloc[0] == pd.Timestamp("2026-01-01 10:00", tz="UTC")
    assert frame["event_timestamp"].iloc[2] == pd.Timestamp("2026-01-02 07:00", tz="UTC")
    assert frame["label_available_at"].isna().tolist() == [False, False, False, True]


def test_parquet_with_naive_timestamps_reads_as_utc(tmp_path: Path) -> None:
    rows = _good_rows().iloc[:2]
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], format="ISO8601")
    rows["label_available_at"] = pd.to_datetime(rows["label_available_at"], format="ISO8601")
    rows.to_parquet(tmp_path / "naive.parquet")
    frame = read_transactions(tmp_path / "naive.parquet")
    assert frame["event_timestamp"].iloc[0] == pd.Timestamp("2026-01-01 10:00", tz="UTC")


def test_malformed_file_names_every_problem(tmp_path: Path) -> None:
    rows = _good_rows().drop(columns=["customer_id"])
    rows["amount"] = [12.5, -3.0, 2e6, 5.0]
    rows["is_fraud"] = [0, 2, 1, 1]
    rows["transaction_id"] = [0, 1, 1, 3]
    rows["label_available_at"] = ["2025-12-31", "2026-03-02", "2026-01-09", None]
    path = tmp_path / "bad.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as caught:
        validate_transactions_file(path)
    message = str(caught.value)
    assert "customer_id: missing required column" in message
    assert "amount: 2 row(s) are <= 0 or >= 1,000,000 (row 1 = -3.0, row 2 = 2000000.0)" in message
    assert "is_fraud: 1 row(s) are not 0 or 1 (row 1 = 2)" in message
    assert "transaction_id: 2 row(s) are duplicated (row 1 = 1, row 2 = 1)" in message
    early = "label_available_at: 1 row(s) are earlier than event_timestamp (row 0 = 2025-12-31T"
    assert early in message


def test_nulls_and_uncastable_values_are_named(tmp_path: Path) -> None:
    rows = _good_rows()
    rows["terminal_id"] = ["7", "eight", None, "10"]
    rows["event_timestamp"] = ["2026-01-01", "yesterday", "2026-01-02", "2026-01-02"]
    rows["customer_id"] = [1.0, 2.5, 3.0, 4.0]
    path = tmp_path / "bad.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as caught:
        read_transactions(path)
    message = str(caught.value)
    assert "terminal_id: 1 row(s) are null" in message
    assert "terminal_id: 1 row(s) are not numbers (row 1 = 'eight')" in message
    assert "event_timestamp: 1 row(s) are not timestamps (row 1 = 'yesterday')" in message
    assert "customer_id: 1 row(s) are not whole numbers (row 1 = 2.5)" in message


def test_numbers_are_not_accepted_as_timestamps(tmp_path: Path) -> None:
    rows = _good_rows().assign(event_timestamp=[1, 2, 3, 4])
    rows.to_parquet(tmp_path / "epoch.parquet")
    with pytest.raises(DataValidationError, match="event_timestamp: holds numbers"):
        validate_transactions_file(tmp_path / "epoch.parquet")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("absent.parquet", None, "does not exist"),
        ("notes.txt", b"hello", "unsupported file type"),
        ("broken.parquet", b"not parquet", "cannot read"),
        ("empty.csv", ",".join(REQUIRED_COLUMNS).encode() + b"\n", "has no rows"),
    ],
)
def test_unreadable_files_are_data_errors(
    tmp_path: Path, name: str, content: bytes | None, reason: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataValidationError, match=reason):
        validate_transactions_file(path)


def _parquet(tmp_path: Path, name: str, **columns: object) -> Path:
    """The good rows with some columns replaced, written with exact Arrow types."""
    table = pa.Table.from_pandas(_good_rows(), preserve_index=False)
    for column, values in columns.items():
        array = values if isinstance(values, pa.Array) else pa.array(values)
        table = table.set_column(table.schema.get_field_index(column), column, array)
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def test_ids_that_would_lose_precision_or_overflow_are_refused(tmp_path: Path) -> None:
    """Issue 11, finding 10: ids went through float64, so 2**53 and 2**53 + 1 merged into
    one customer, and 99999999999999999999 or uint64 2**64 - 1 became -2**63."""
    big = [2**53, 2**53 + 1, 3, 4]
    path = _parquet(
        tmp_path,
        "ids.parquet",
        customer_id=pa.array(big, pa.int64()),
        terminal_id=pa.array([2**64 - 1, 8, 9, 10], pa.uint64()),
    )
    with pytest.raises(DataValidationError) as caught:
        validate_transactions_file(path)
    message = str(caught.value)
    assert (
        "customer_id: 2 row(s) are above 9007199254740991, the largest id JSON and the "
        "scoring API carry exactly (row 0 = 9007199254740992, row 1 = 9007199254740993)"
    ) in message
    assert "terminal_id: 1 row(s) are above 9007199254740991" in message
    assert "(row 0 = 18446744073709551615)" in message
    csv = tmp_path / "ids.csv"
    _good_rows().assign(transaction_id=["99999999999999999999", "1", "2", "3"]).to_csv(
        csv, index=False
    )
    with pytest.raises(DataValidationError, match=r"transaction_id: 1 row\(s\) are above"):
        validate_transactions_file(csv)


def test_an_id_just_inside_the_exact_range_is_kept_exactly(tmp_path: Path) -> None:
    top = 2**53 - 1
    path = _parquet(tmp_path, "top.parquet", customer_id=pa.array([top, top - 1, 3, 4]))
    frame = read_transactions(path)
    assert frame["customer_id"].tolist() == [top, top - 1, 3, 4]


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("amount", pa.array([True, False, True, True]), "are true or false, not numbers"),
        ("is_fraud", pa.array([False, False, True, True]), "are true or false, not numbers"),
        ("amount", pa.array(["12.5", "40", "300", "5"]), "are text, not numbers"),
        ("customer_id", pa.array(["1", "2", "3", "4"]), "are text, not numbers"),
    ],
)
def test_booleans_and_text_are_not_numbers(
    tmp_path: Path, column: str, values: pa.Array, reason: str
) -> None:
    path = _parquet(tmp_path, "typed.parquet", **{column: values})
    with pytest.raises(DataValidationError, match=f"{column}: 4 row\\(s\\) {reason}"):
        validate_transactions_file(path)


def test_a_csv_true_false_label_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    _good_rows().assign(is_fraud=[False, False, True, True]).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"is_fraud: 4 row\(s\) are true or false"):
        validate_transactions_file(path)


def _big_file(path: Path, rows: int, bad_last_amount: bool = False) -> Path:
    """`rows` valid payments (plus, optionally, a bad amount in the last row), written
    in row groups the way a large export would be."""
    rng = np.random.default_rng(1)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    events = start + pd.to_timedelta(np.sort(rng.integers(0, 86_400 * 60, rows)), unit="s")
    amount = rng.uniform(1, 500, rows)
    if bad_last_amount:
        amount[-1] = -1.0
    table = pa.table(
        {
            "transaction_id": np.arange(rows, dtype=np.int64),
            "event_timestamp": pa.array(events.to_numpy(), pa.timestamp("us", tz="UTC")),
            "customer_id": rng.integers(0, 10_000, rows),
            "terminal_id": rng.integers(0, 20_000, rows),
            "amount": amount,
            "is_fraud": np.zeros(rows, dtype=np.int8),
            "label_available_at": pa.array(
                (events + pd.Timedelta(days=30)).to_numpy(), pa.timestamp("us", tz="UTC")
            ),
        }
    )
    pq.write_table(table, path, row_group_size=100_000)
    return path


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking pytest.
PEAK_MEMORY = """
import sys
from pathlib import Path
from data.validate import validate_transactions_file
report = validate_transactions_file(Path(sys.argv[1]))
status = Path("/proc/self/status").read_text().splitlines()
print(report.rows, next(l.split()[1] for l in status if l.startswith("VmHWM:")))
"""


def _validate_in_child(path: Path) -> tuple[int, float]:
    """(rows, peak resident MiB) of `validate_transactions_file` in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return int(out[0]), int(out[1]) / 1024


def test_a_large_file_is_validated_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 11, finding 10: the whole file was read into memory, ~250 bytes a row at
    the peak. Now one chunk at a time, plus the ids for the duplicate check."""
    small = _big_file(tmp_path / "small.parquet", 200_000)
    large = _big_file(tmp_path / "large.parquet", 1_200_000)
    (small_rows, small_mib), (large_rows, large_mib) = map(_validate_in_child, (small, large))
    per_row = (large_mib - small_mib) * 2**20 / (large_rows - small_rows)
    print(
        f"validate peak RSS: {small_rows:,} rows {small_mib:.0f} MiB, "
        f"{large_rows:,} rows {large_mib:.0f} MiB: {per_row:.0f} bytes per extra row"
    )
    assert (small_rows, large_rows) == (200_000, 1_200_000)
    assert per_row < 100  # was ~250 (the whole table); the ids and their sorted copy are 16


def test_a_problem_in_a_later_chunk_names_its_row_in_the_file(tmp_path: Path) -> None:
    path = _big_file(tmp_path / "late.parquet", 250_000, bad_last_amount=True)
    with pytest.raises(DataValidationError, match=r"amount: 1 row\(s\) .* \(row 249999 = -1.0\)"):
        validate_transactions_file(path)
