"""The checks that need no traffic: store parity (the online store holds what the
offline tables say) and the materialization watermark (freshness), each on a private
online store materialized from the shared world's tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from data.calendar import Calendar
from features.definitions import feature_table_path
from features.store import materialize, open_store
from fraudlab.settings import Settings
from monitoring.freshness import materialized_ages, run_freshness
from monitoring.parity import SnapshotViews, run_parity
from monitoring.policy import load_policy
from tests.conftest import World

POLICY = load_policy()
DAY = 60  # the online store holds the snapshot of this day's midnight


@pytest.fixture(scope="module")
def private(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, pd.Timestamp]:
    settings = _own_copy(world.settings, tmp_path_factory.mktemp("store_checks"))
    midnight = Calendar.of(world.transactions["event_timestamp"]).start(DAY)
    materialize(settings, end=midnight.to_pydatetime())
    return settings, midnight


def test_a_materialized_store_matches_its_offline_tables(
    private: tuple[Settings, pd.Timestamp],
) -> None:
    settings, _ = private
    views = SnapshotViews(open_store(settings))
    finding = run_parity(views, settings.feature_data_dir, POLICY.jobs.parity, 1e-6)
    assert finding.status == "ok"
    assert finding.metrics["mismatched_feature_count"] == 0
    # A home whose offline tables are not built (yet): nothing to compare, no crash
    # that would stop the monitor's schedule.
    unbuilt = run_parity(views, settings.home / "no_tables", POLICY.jobs.parity, 1e-6)
    assert unbuilt.status == "insufficient_data"


def test_an_online_job_computing_another_window_is_named(
    private: tuple[Settings, pd.Timestamp], tmp_path: Path
) -> None:
    settings, midnight = private
    settings = _own_copy(settings, tmp_path)
    table = pd.read_parquet(feature_table_path(settings.feature_data_dir, "customer_spending"))
    snapshot = table[table["event_timestamp"] == midnight].copy()
    snapshot["customer_mean_amount_7d"] = snapshot["customer_mean_amount_30d"]  # 30 days, not 7
    open_store(settings).write_to_online_store("customer_spending", snapshot)

    views = SnapshotViews(open_store(settings))
    finding = run_parity(views, settings.feature_data_dir, POLICY.jobs.parity, 1e-6)
    assert finding.details["mismatched"] == ["customer_spending:customer_mean_amount_7d"]


def test_a_write_between_two_runs_is_seen_by_the_second(
    private: tuple[Settings, pd.Timestamp], tmp_path: Path
) -> None:
    """Parity reuses its last comparison while the online rows read the same
    (monitoring/parity.py `_compared`); a write in between must not hide behind it."""
    settings, midnight = private
    copy = _own_copy(settings, tmp_path)
    views = SnapshotViews(open_store(copy))
    first = run_parity(views, copy.feature_data_dir, POLICY.jobs.parity, 1e-6)
    again = run_parity(views, copy.feature_data_dir, POLICY.jobs.parity, 1e-6)
    assert first.metrics["mismatched_feature_count"] == 0
    assert again.summary == first.summary and again.details == first.details
    table = pd.read_parquet(feature_table_path(copy.feature_data_dir, "customer_spending"))
    snapshot = table[table["event_timestamp"] == midnight].copy()
    snapshot["customer_tx_count_1d"] += 1.0
    open_store(copy).write_to_online_store("customer_spending", snapshot)
    after = run_parity(views, copy.feature_data_dir, POLICY.jobs.parity, 1e-6)
    assert after.details["mismatched"] == ["customer_spending:customer_tx_count_1d"]


def _own_copy(settings: Settings, parent: Path) -> Settings:
    """A home of its own under `parent`, sharing the offline tables, with a registry and
    online store of its own: for a module or a test that writes the online store."""
    copy = parent / "home"
    copy.mkdir()
    for sub in ("data", "feature_data"):
        (copy / sub).symlink_to(settings.home / sub)
    shutil.copytree(settings.feast_dir, copy / "feast")
    return settings.model_copy(update={"home": copy})


def test_a_materialization_that_did_not_run_is_stale_with_no_traffic(
    private: tuple[Settings, pd.Timestamp],
) -> None:
    settings, midnight = private
    views = SnapshotViews(open_store(settings)).views()
    objective = POLICY.jobs.freshness.objectives_seconds["customer_spending"]
    no_traffic = pd.DataFrame()
    on_time = materialized_ages(views, midnight + pd.Timedelta(hours=23))
    assert run_freshness(no_traffic, POLICY.jobs.freshness, None, on_time).status != "alert"
    assert (
        run_freshness(no_traffic, POLICY.jobs.freshness, None, on_time).metrics.get(
            "stale_view_count", 0.0
        )
        == 0.0
    )
    late = materialized_ages(views, midnight + pd.Timedelta(seconds=objective + 300))
    stale = run_freshness(no_traffic, POLICY.jobs.freshness, None, late)
    assert stale.metrics["stale_view_count"] == len(views)
    assert set(stale.details["stale_views"]) == set(views)
