"""`fraudlab train` and `fraudlab features ...` on bad input: one clear line, a non-zero
exit, no traceback, and nothing half-written in the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from fraudlab.cli import app
from fraudlab.console import console
from fraudlab.settings import get_settings
from pipelines.ablation import (
    calibration_gap,
    feature_groups,
    run_ablation,
    run_weighting_ablation,
)
from pipelines.registry import connect
from tests.conftest import World

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, world: World, tmp_path: Path) -> Iterator[Path]:
    """The CLI on the shared world's data, with an empty MLflow store of its own."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("FRAUDLAB_HOME", str(world.settings.home))
    monkeypatch.setenv("FRAUDLAB_MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("FRAUDLAB_TRAINING__CUTOFF_DAY", "75")
    monkeypatch.setenv("FRAUDLAB_TRAINING__WARMUP_DAYS", "10")
    monkeypatch.delenv("FRAUDLAB_CONFIG", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _runs(settings_home: Path) -> int:
    settings = get_settings()
    connect(settings)
    experiment = MlflowClient().get_experiment_by_name("fraudlab-training")
    return len(MlflowClient().search_runs([experiment.experiment_id])) if experiment else 0


def _assert_clean_failure(result, message: str) -> None:
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_feature_service_is_refused_and_nothing_is_registered(cli_env: Path) -> None:
    result = runner.invoke(app, ["train", "--feature-service", "fraud_v9", "--model", "logreg"])
    _assert_clean_failure(result, "unknown feature service 'fraud_v9'")
    assert "fraud_v1, fraud_v2" in result.output
    assert _runs(cli_env) == 0


def test_unknown_model_kind_is_refused(cli_env: Path) -> None:
    result = runner.invoke(app, ["train", "--model", "xgboost"])
    _assert_clean_failure(result, "xgboost")


def test_cutoff_outside_the_data_is_refused(cli_env: Path) -> None:
    result = runner.invoke(app, ["train", "--cutoff-day", "500", "--model", "logreg"])
    _assert_clean_failure(result, "cutoff day 500 is outside the data")
    assert _runs(cli_env) == 0


def test_bad_config_value_names_the_field(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDLAB_TRAINING__REVIEW_COST", "-3")
    get_settings.cache_clear()
    result = runner.invoke(app, ["train", "--model", "logreg"])
    _assert_clean_failure(result, "training.review_cost")


def test_bad_config_file_is_refused(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = cli_env / "fraudlab.yaml"
    config.write_text("simulation:\n  customers: 100\n  colour: blue\n")
    monkeypatch.setenv("FRAUDLAB_CONFIG", str(config))
    get_settings.cache_clear()
    result = runner.invoke(app, ["train"])
    _assert_clean_failure(result, "simulation.colour")


def test_train_before_generate_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FRAUDLAB_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["train"])
        _assert_clean_failure(result, "run `fraudlab data generate` first")
        built = runner.invoke(app, ["features", "build"])
        _assert_clean_failure(built, "run `fraudlab data generate` first")
        assert not (tmp_path / "feature_data").exists()
    finally:
        get_settings.cache_clear()


def test_materialize_refuses_a_bad_time(cli_env: Path) -> None:
    result = runner.invoke(app, ["features", "materialize", "--end", "yesterday"])
    _assert_clean_failure(result, "--end 'yesterday' is not an ISO date")


def test_ablation_scores_every_group_left_out_on_one_split_and_registers_nothing(
    cli_env: Path,
) -> None:
    settings = get_settings()
    rows = run_ablation(settings, "fraud_v3", ("logreg",), ("fraud_v2",))
    by_variant = {row.variant: row for row in rows}
    groups = feature_groups("fraud_v3")
    assert len(groups) == 6  # five views and the request-time features
    assert set(by_variant) == {"all", "fraud_v2"} | {f"without {g}" for g in groups}
    everything = by_variant["all"].features
    assert everything == sum(len(names) for names in groups.values())
    for group, names in groups.items():
        assert by_variant[f"without {group}"].features == everything - len(names)
    for row in rows:
        assert 0.0 < row.average_precision <= 1.0
        if row.variant == "all":
            assert row.versus_all is None
            continue
        versus = row.versus_all
        assert versus is not None and versus.ci_low <= versus.delta_ap <= versus.ci_high
        # The difference is the full model's AP minus this one's, on the same rows.
        gap = by_variant["all"].average_precision - row.average_precision
        assert abs(versus.delta_ap - gap) < 1e-12
    assert _runs(cli_env) == 0  # an ablation registers nothing


def test_ablation_command_prints_the_table_and_refuses_what_it_cannot_compare(
    cli_env: Path,
) -> None:
    # fraud_v2 (three groups) keeps this quick; the run above takes every view apart.
    result = runner.invoke(
        app,
        [
            "ablation",
            "--model",
            "logreg",
            "--feature-service",
            "fraud_v2",
            "--compare-with",
            "fraud_v1",
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "without terminal_risk" in text and "fraud_v1" in text
    unknown = runner.invoke(app, ["ablation", "--feature-service", "fraud_v9"])
    _assert_clean_failure(unknown, "unknown feature service 'fraud_v9'")
    wider = runner.invoke(
        app, ["ablation", "--feature-service", "fraud_v1", "--compare-with", "fraud_v2"]
    )
    _assert_clean_failure(wider, "fraud_v2's features are not all in fraud_v1")


def test_weighting_ablation_shows_what_balanced_weights_do_to_probabilities(
    cli_env: Path,
) -> None:
    rows = {r.weighting: r for r in run_weighting_ablation(get_settings(), "fraud_v2")}
    assert set(rows) == {"balanced", "none"}
    balanced, plain = rows["balanced"], rows["none"]
    rate = balanced.fraud_rate
    assert balanced.base_rate_brier == pytest.approx(rate * (1 - rate))
    # Weighting each fraud like all the payments it stands for inflates every score.
    assert balanced.mean_score > 5 * rate and balanced.calibration_gap > plain.calibration_gap
    versus = plain.versus_balanced
    assert versus is not None and versus.ci_low <= versus.delta_ap <= versus.ci_high
    assert versus.delta_ap == pytest.approx(plain.average_precision - balanced.average_precision)
    result = runner.invoke(app, ["ablation", "--weighting"])
    assert result.exit_code == 0, result.output
    assert "balanced" in result.output and "calibration gap" in " ".join(result.output.split())


def test_calibration_gap_is_zero_for_honest_scores_and_the_error_otherwise() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    assert calibration_gap(labels, np.full(100, 0.1), bins=1) == pytest.approx(0.0)
    assert calibration_gap(labels, np.full(100, 0.4), bins=1) == pytest.approx(0.3)
    # Ten bins of ten: scores sorted, each bin's mean score against its fraud share.
    ranked = np.linspace(0.0, 1.0, 100)
    gap = calibration_gap(np.sort(labels), ranked)
    expected = np.mean([abs(ranked[i : i + 10].mean() - (i == 90)) for i in range(0, 100, 10)])
    assert gap == pytest.approx(expected)


def test_train_prints_the_evaluation_a_design_round_asks_for(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "_width", 200)  # whole table cells, one line each
    result = runner.invoke(app, ["train", "--model", "both", "--folds", "2"])
    assert result.exit_code == 0, result.output
    for shown in (
        "rules (baseline)",  # the first column of the comparison
        "card precision at capacity",
        "resampling days x cards",  # the gate's interval, with the row bootstrap beside it
        "resampling payments",
        "frauds needed for 80% power",
        "canary: days of traffic",
        "calibration: fitted on validation",
        "(chosen)",
        "slices of the test period",
        "prequential validation",
        "mean ± sd",
    ):
        assert shown in result.output, shown
    settings = get_settings()
    client = connect(settings)
    latest = max(int(v.version) for v in client.search_model_versions())
    tags = client.get_model_version(settings.training.model_name, str(latest)).tags
    isotonic = bool(tags["calibration_points"])
    assert isotonic != (float(tags["calibration_slope"]) != 1.0)  # one method, registered


def test_staleness_refuses_what_it_cannot_measure(cli_env: Path) -> None:
    result = runner.invoke(app, ["staleness", "--kind", "xgboost"])
    _assert_clean_failure(result, "--kind must be lightgbm, logreg or rules")
    result = runner.invoke(app, ["staleness", "--drift-day", "500"])
    _assert_clean_failure(result, "--drift-day 500 is past the simulation's 120 days")
