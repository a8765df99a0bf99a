"""The simulator: deterministic, rare fraud from every named pattern, labels that arrive late."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from data.patterns import PATTERN_NAMES
from data.schema import REQUIRED_COLUMNS, TRANSACTIONS_SCHEMA
from data.simulator import (
    CHARGEBACK_WINDOW_DAYS,
    GenerationSummary,
    SimulationConfig,
    generate,
)
from fraudlab.errors import ConfigError
from fraudlab.settings import SimulationSettings

SMALL = SimulationConfig(customers=200, terminals=400, days=30, seed=3, start_date=date(2026, 1, 1))
# Big enough that every pattern fires and the fraud rate is not noise (~125k rows, < 1 s).
MEDIUM = SimulationConfig(
    customers=1_000,
    terminals=2_000,
    days=60,
    seed=11,
    start_date=date(2026, 1, 1),
    new_pattern_start_day=30,
)


def _generate(config: SimulationConfig, folder: Path) -> tuple[pd.DataFrame, GenerationSummary]:
    summary = generate(config, folder / "transactions.parquet")
    return pd.read_parquet(summary.path), summary


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, GenerationSummary]:
    return _generate(MEDIUM, tmp_path_factory.mktemp("medium"))


def test_same_config_gives_byte_identical_file(tmp_path: Path) -> None:
    first = generate(SMALL, tmp_path / "a.parquet")
    second = generate(SMALL, tmp_path / "b.parquet")
    assert first.rows == second.rows
    assert first.path.read_bytes() == second.path.read_bytes()


def test_different_seed_gives_different_payments(tmp_path: Path) -> None:
    frame, _ = _generate(SMALL, tmp_path / "a")
    other, _ = _generate(replace(SMALL, seed=SMALL.seed + 1), tmp_path / "b")
    assert not frame.equals(other)


def test_file_has_the_schema_columns_types_and_order(tmp_path: Path) -> None:
    frame, summary = _generate(SMALL, tmp_path)
    schema = pq.read_schema(summary.path)
    assert schema.names == [*REQUIRED_COLUMNS, "fraud_pattern"]
    for column in TRANSACTIONS_SCHEMA:
        assert schema.field(column.name).type == column.type
    assert frame["event_timestamp"].is_monotonic_increasing
    assert frame["transaction_id"].tolist() == list(range(len(frame)))
    assert frame["event_timestamp"].min() >= pd.Timestamp("2026-01-01", tz="UTC")
    assert frame["event_timestamp"].max() < pd.Timestamp("2026-01-31", tz="UTC")
    assert (frame["amount"] > 0).all()


def test_fraud_is_rare_but_present(medium: tuple[pd.DataFrame, GenerationSummary]) -> None:
    frame, summary = medium
    assert 0.002 < summary.fraud_rate < 0.01
    assert summary.frauds == int(frame["is_fraud"].sum())
    assert summary.rows == len(frame)


def test_every_pattern_produces_fraud(medium: tuple[pd.DataFrame, GenerationSummary]) -> None:
    frame, summary = medium
    for name in PATTERN_NAMES[1:]:
        assert summary.pattern_counts[name] > 0, name
    assert ((frame["fraud_pattern"] != "") == (frame["is_fraud"] == 1)).all()


def test_pattern_signatures(medium: tuple[pd.DataFrame, GenerationSummary]) -> None:
    frame, _ = medium
    by_pattern = frame.groupby("fraud_pattern")
    assert by_pattern["amount"].min()["large_amount"] > 220
    testing = frame[frame["fraud_pattern"] == "card_testing"]
    assert testing["amount"].between(1, 5).all()
    first_testing_day = testing["event_timestamp"].min().normalize()
    assert first_testing_day >= pd.Timestamp(MEDIUM.start_date, tz="UTC") + timedelta(days=30)


def test_card_testing_is_off_by_default_and_changes_nothing_else(tmp_path: Path) -> None:
    base, summary = _generate(replace(MEDIUM, new_pattern_start_day=None), tmp_path)
    assert summary.pattern_counts["card_testing"] == 0
    with_testing, _ = _generate(MEDIUM, tmp_path / "with")
    kept = with_testing[with_testing["fraud_pattern"] != "card_testing"]
    columns = ["event_timestamp", "customer_id", "amount", "is_fraud", "label_available_at"]
    pd.testing.assert_frame_equal(
        kept[columns].reset_index(drop=True), base[columns].reset_index(drop=True)
    )


def test_labels_arrive_late_or_never(medium: tuple[pd.DataFrame, GenerationSummary]) -> None:
    frame, summary = medium
    delay = frame["label_available_at"] - frame["event_timestamp"]
    fraud = frame["is_fraud"] == 1
    reported = fraud & frame["label_available_at"].notna()
    window = pd.Timedelta(days=CHARGEBACK_WINDOW_DAYS)
    assert (delay[reported] > pd.Timedelta(0)).all()
    assert (delay[reported] <= window).all()
    assert pd.Timedelta(days=3) < delay[reported].median() < pd.Timedelta(days=14)
    assert (delay[~fraud] == window).all()
    assert frame.loc[~fraud, "label_available_at"].notna().all()
    assert 0.8 < summary.reported_share < 0.97
    assert summary.reported_share == pytest.approx(reported.sum() / fraud.sum())


def test_row_count_scales_with_customers_and_days(tmp_path: Path) -> None:
    small = generate(SMALL, tmp_path / "small.parquet").rows
    double = generate(replace(SMALL, customers=400, days=60), tmp_path / "big.parquet").rows
    assert 3.4 < double / small < 4.6


def test_failed_generation_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "transactions.parquet"

    def interrupt(day: int) -> None:
        if day == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(SMALL, out, on_day=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_failed_generation_keeps_the_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "transactions.parquet"
    out.write_bytes(b"previous")

    def fail(day: int) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        generate(SMALL, out, on_day=fail)
    assert out.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize(
    "changes",
    [{"days": 0}, {"customers": 0}, {"terminals": -1}, {"seed": -1}, {"new_pattern_start_day": 30}],
)
def test_bad_config_is_a_config_error(changes: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        replace(SMALL, **changes)


def test_config_from_settings() -> None:
    config = SimulationConfig.from_settings(SimulationSettings(start_date="2025-06-30"))
    assert config.start_date == date(2025, 6, 30)
    assert config.new_pattern_start_day is None
    with pytest.raises(ConfigError, match="start date"):
        SimulationConfig.from_settings(SimulationSettings(start_date="June"))
