"""The drift job stays quiet on healthy traffic and alerts on a real shift.

The healthy-traffic checks compare against a steady-state reference (the champion's
scores on days 41..55, after every 30-day window has filled), sized like production's
5,000 rows so Evidently picks the same tests it picks in production. The champion's own
reference sample from MLflow is used as well: in this small test world the model
trained on days 10..20, before the 30-day windows had filled, and the drift job must
say so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fraudlab.errors import MissingInput
from monitoring.drift import _compare, evidently_report, logged_values, run_drift
from monitoring.evidently_workspace import add_drift_snapshot
from monitoring.policy import load_policy
from pipelines.reference import load_reference
from pipelines.training_set import with_request_features
from serving.prediction_log import read_predictions
from serving.process import free_port
from tests.conftest import World, running_ui
from tests.monitoring.conftest import MonitorWorld, served_features, write_log

POLICY = load_policy()
DRIFT = POLICY.jobs.drift
HEALTHY_DAYS = (55, 58, 61, 64, 67)  # five one-day windows, weekdays and weekends
SHIFTED_DAY = 70


def with_scores(frame: pd.DataFrame, mw: MonitorWorld) -> pd.DataFrame:
    rows = frame[mw.champion.features].to_numpy("float64")
    return frame.assign(score=[mw.champion.score(row) for row in rows])


@pytest.fixture(scope="module")
def steady_reference(world: World, monitor_world: MonitorWorld) -> pd.DataFrame:
    mw = monitor_world
    frame = served_features(world, mw.day(41), mw.day(55)).sample(n=5_000, random_state=0)
    return with_scores(frame, mw)[[*mw.champion.features, "score"]].reset_index(drop=True)


def tripled(frame: pd.DataFrame) -> pd.DataFrame:
    """Every amount three times larger, and the request-time features that follow."""
    return with_request_features(frame.assign(amount=frame["amount"] * 3))


def day_of_traffic(world, mw, log_path, day, corrupt=lambda frame: frame) -> pd.DataFrame:
    write_log(log_path, corrupt(served_features(world, mw.day(day), mw.day(day + 1))), mw.champion)
    return read_predictions(log_path, mw.day(day), mw.day(day + 1))


def test_healthy_traffic_rarely_alerts(world, monitor_world, steady_reference, tmp_path):
    mw = monitor_world
    statuses = []
    for day in HEALTHY_DAYS:
        window = day_of_traffic(world, mw, tmp_path / f"log_{day}.sqlite", day)
        finding = run_drift(
            window, steady_reference, mw.champion.features, tmp_path / str(day), DRIFT
        )
        POLICY.judge([finding])
        statuses.append(finding.status)
        assert finding.details["seconds"] > 0  # timed; how fast is benchmarks/monitor.py's job
    assert statuses.count("alert") <= 1, statuses


def test_tripled_amounts_alert_with_the_drifted_columns_named(
    world, monitor_world, steady_reference, log_path, tmp_path
):
    mw = monitor_world

    window = day_of_traffic(world, mw, log_path, SHIFTED_DAY, tripled)
    finding = run_drift(
        window, steady_reference, mw.champion.features, tmp_path, DRIFT, max_rows=1_000
    )
    assert "score-drift" in {rule.name for rule, _ in POLICY.judge([finding])}
    assert finding.status == "alert"
    assert {"amount", "log_amount"} <= set(finding.details["drifted_features"])
    assert "customer_tx_count_7d" not in finding.details["drifted_features"]
    assert finding.metrics["score_drift"] == 1.0
    assert finding.metrics["drifted_features"] == len(finding.details["drifted_features"])
    columns = {row["column"]: row for row in finding.details["columns"]}
    assert set(columns) == {*mw.champion.features, "score"}
    amount = columns["amount"]
    assert amount["drifted"] and amount["statistic"] >= amount["threshold"]
    assert amount["method"].startswith("Wasserstein") and amount["statistic_kind"] == "distance"
    assert finding.details["compared_rows"] == 1_000 < finding.details["current_rows"]
    assert "seed" in finding.details["subsample"]
    assert (tmp_path / "drift.html").stat().st_size > 10_000
    saved = json.loads((tmp_path / "drift.json").read_text())
    assert saved["metrics"] == finding.metrics


def test_too_few_requests_is_insufficient_data(monitor_world, steady_reference, tmp_path):
    few = steady_reference.head(50)
    finding = run_drift(few, steady_reference, monitor_world.champion.features, tmp_path, DRIFT)
    assert finding.status == "insufficient_data"
    assert (tmp_path / "drift.json").exists()


def test_champion_reference_from_mlflow(world, monitor_world, log_path, tmp_path):
    mw = monitor_world
    sample = load_reference(mw.settings)
    assert sample.version == mw.champion.version
    assert sample.tags.feature_service == mw.champion.feature_service
    assert list(sample.frame.columns) == [*mw.champion.features, "score"]
    assert len(sample.frame) == mw.settings.training.reference_sample_rows
    window = day_of_traffic(world, mw, log_path, SHIFTED_DAY)
    finding = run_drift(window, sample.frame, mw.champion.features, tmp_path, DRIFT)
    columns = {row["column"]: row for row in finding.details["columns"]}
    assert columns["amount"]["statistic_kind"] == "p_value"  # 500 rows: Evidently picks K-S
    # Healthy traffic against the champion's own held-out sample: no feature alarm, and
    # the weekly cycle is matched rather than reported as drift.
    assert finding.metrics["drift_share"] < 0.3, finding.summary
    assert "is_weekend" not in finding.details["drifted_features"]
    assert finding.details["seasonality"].startswith("reference resampled")


def test_missing_reference_is_a_clear_error(monitor_world):
    with pytest.raises(MissingInput, match="alias 'retired'"):
        load_reference(monitor_world.settings, alias="retired")


@pytest.mark.parametrize("reference_rows", [500, 5_000])  # Evidently's p-value and distance tests
def test_the_findings_tests_are_evidently_reports_tests(
    world, monitor_world, steady_reference, log_path, tmp_path, reference_rows
):
    """The finding runs Evidently's per-column drift calculation without building the
    report's plots; on the same rows its tests, statistics and verdicts are exactly those
    of Evidently's report (the HTML), column by column, the score's PSI included."""
    mw = monitor_world

    window = day_of_traffic(world, mw, log_path, SHIFTED_DAY, tripled)
    current = logged_values(window, [*mw.champion.features, "score"])
    reference = steady_reference.head(reference_rows)
    table, testable = _compare(current, reference, DRIFT)
    report = evidently_report(current, reference, testable, DRIFT).dict()
    failed = {
        t["metric_config"]["params"]["column"] for t in report["tests"] if t["status"] == "FAIL"
    }
    by_column = {row["column"]: row for row in table}
    drifts = [m for m in report["metrics"] if m["config"]["type"].endswith(":ValueDrift")]
    assert len(drifts) == len(testable) > 10
    assert len(report["tests"]) == len(testable)  # the summaries (for the workspace) test nothing
    for metric in drifts:
        ours = by_column[metric["config"]["column"]]
        assert ours["method"] == metric["config"]["method"]
        assert ours["threshold"] == pytest.approx(metric["config"]["threshold"])
        assert ours["statistic"] == pytest.approx(metric["value"])
        assert ours["drifted"] == (metric["config"]["column"] in failed)
    assert by_column["amount"]["drifted"] and by_column["score"]["method"] == "psi"


def test_each_run_is_a_snapshot_the_evidently_ui_plots_over_time(
    world, monitor_world, steady_reference, tmp_path
):
    """Two daily runs, the second on tripled amounts, go into one workspace; `evidently
    ui` (the real CLI, on loopback) serves the model's project, and every panel of its
    dashboard has one point per run, in the runs' order, the score's PSI exactly the
    findings' statistic."""
    mw = monitor_world
    workspace = tmp_path / "evidently"

    def keep(snapshot: object) -> None:
        add_drift_snapshot(workspace, "fraud-detector", snapshot)

    psi = []
    for day, change in ((HEALTHY_DAYS[0], lambda f: f), (SHIFTED_DAY, tripled)):
        window = day_of_traffic(world, mw, tmp_path / f"log_{day}.sqlite", day, change)
        at = mw.day(day + 1).to_pydatetime()
        finding = run_drift(
            window,
            steady_reference,
            mw.champion.features,
            tmp_path / str(day),
            DRIFT,
            max_rows=1_000,
            at=at,
            keep_snapshot=keep,
        )
        columns = {row["column"]: row for row in finding.details["columns"]}
        psi.append(columns["score"]["statistic"])
    with evidently_ui(workspace) as url:
        (project,) = httpx.get(f"{url}/api/projects").json()
        assert project["name"] == "fraud-detector"
        dashboard = httpx.get(f"{url}/api/v2/dashboards/{project['id']}").json()
        assert [t["title"] for t in dashboard["tabs"]] == ["Drift", "Scores"]
        filters = [
            {"tags": [], "metadata": {}, "metric": v["metric"], "metric_labels": v["metric_labels"]}
            for panel in dashboard["panels"]
            for v in panel["values"]
        ]
        answer = httpx.post(
            f"{url}/api/v2/snapshots/{project['id']}/data_series_batch",
            json={"series_filter": filters},
        ).json()
    days = [pd.Timestamp(s["timestamp"]) for s in answer["sources"]]
    assert days == [mw.day(HEALTHY_DAYS[0] + 1), mw.day(SHIFTED_DAY + 1)]
    series = {s["metric_type"].rsplit(":", 1)[1]: s["values"] for s in answer["series"]}
    assert set(series) == {"DriftedColumnsCount", "ValueDrift", "MeanValue", "QuantileValue"}
    assert series["ValueDrift"] == pytest.approx(psi)
    assert psi[1] > DRIFT.score_psi_above > psi[0]  # the tripled day's scores moved
    assert series["MeanValue"][1] > series["MeanValue"][0]


@contextmanager
def evidently_ui(workspace: Path) -> Iterator[str]:
    """`evidently ui` on the workspace, on a free loopback port, until the block ends."""
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(workspace)]
    command += ["--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    with running_ui(command, f"{url}/api/projects"):
        yield url
