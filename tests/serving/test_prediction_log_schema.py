"""The prediction log's schema across fraudlab versions: a log written before a column
was appended is brought up to date at startup, its rows kept with the column's value for
them; a log with other columns is refused with a message that says what to do."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fraudlab.errors import ConfigError
from serving.prediction_log import COLUMNS, create_log, read_predictions, write_records
from serving.prediction_log.record import APPENDED, PREDICTIONS
from tests.serving.test_prediction_log_faults import record

WINDOW = (pd.Timestamp("2026-02-01", tz="UTC"), pd.Timestamp("2026-04-01", tz="UTC"))


def _table(path: Path, columns: dict[str, str]) -> None:
    conn = sqlite3.connect(path)
    spec = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    conn.execute(f"CREATE TABLE {PREDICTIONS} ({spec})")
    conn.commit()
    conn.close()


def test_a_log_from_before_the_propensity_column_gets_it_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old = {name: kind for name, kind in COLUMNS.items() if name not in APPENDED}
    _table(path, old)
    conn = sqlite3.connect(path)
    row = record(1).row()[: len(old)]  # what the older writer inserted
    conn.execute(f"INSERT INTO {PREDICTIONS} VALUES ({', '.join('?' * len(old))})", row)
    conn.commit()
    conn.close()

    write_records(path, [record(2)])  # creates (upgrades) the log, then appends
    create_log(path)  # a second start changes nothing
    got = read_predictions(path, *WINDOW, with_features=False).set_index("request_id")
    assert list(got.index) == ["r00001", "r00002"]
    assert got["propensity"].tolist() == [1.0, 1.0]  # no exploration before it existed


def test_a_log_with_other_columns_is_refused_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "foreign.sqlite"
    _table(path, {"request_id": "TEXT PRIMARY KEY", "verdict": "TEXT"})
    with pytest.raises(ConfigError, match=r"another fraudlab version.*move it away"):
        create_log(path)


def test_a_window_across_a_swap_of_feature_service_has_every_feature_once(
    tmp_path: Path,
) -> None:
    """Rows scored before and after a swap to another feature service carry other
    features: each feature is one column, NaN on the rows that did not have it."""
    path = tmp_path / "log.sqlite"
    before = replace(
        record(1),
        features={"amount": 10.0, "customer_mean_amount_7d": math.nan},
        feature_age={"customer": 60.0},
    )
    after = replace(
        record(2),
        features={"customer_tx_count_10m": 3.0, "amount": 12.0},
        feature_age={"velocity": None},
    )
    write_records(path, [before, after])
    got = read_predictions(path, *WINDOW).set_index("request_id")
    features = ["amount", "customer_mean_amount_7d", "customer_tx_count_10m"]
    assert list(got.columns[-5:]) == [*features, "age__customer", "age__velocity"]
    assert got.loc["r00001", features].tolist() == pytest.approx(
        [10.0, math.nan, math.nan], nan_ok=True
    )
    assert got.loc["r00002", features].tolist() == pytest.approx([12.0, math.nan, 3.0], nan_ok=True)
    assert got["age__customer"].tolist() == pytest.approx([60.0, math.nan], nan_ok=True)
    assert got["age__velocity"].isna().all() and got["amount"].dtype == "float64"
