"""Validation of a user's transactions file: good files load typed, bad ones name every problem."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
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
